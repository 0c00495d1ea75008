"""Inference: a checkpoint folder alone is enough to transcribe (or run any task on) audio files.

``Transcriber.from_checkpoint(dir)`` rebuilds the model from the checkpoint's resolved config and trained
weights; ``transcriber(waves)`` runs batched greedy or beam search with the LLM's KV cache.
``WhisperBaseline`` wraps Whisper's own decoder behind the same call, so evaluation scores both alike.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from speechlm.data.audio import load_audio
from speechlm.model.speechlm import SpeechLM
from speechlm.tasks import Task, get_task


class Transcriber:
    """Answer a task's instruction about each clip with a SpeechLM."""

    def __init__(self, model: SpeechLM, task: Task, num_beams: int = 1, max_new_tokens: int = 0,
                 batch_size: int = 8, instruction: str | None = None, held_out_instructions: bool = False,
                 constrained: bool = False):
        self.model = model.eval()
        self.task = task
        self.num_beams = num_beams
        self.max_new_tokens = max_new_tokens or task.max_answer_tokens  # 0: the task record's cap
        self.batch_size = batch_size
        # closed-set tasks can be decoded by scoring each allowed label instead of free generation
        self.constrained = constrained and task.labels is not None and not task.asr_prefix
        # Evaluation uses the first paraphrase by default: fixed, so runs compare; held_out picks from the
        # disjoint pool to test instruction following the model never saw.
        pool = task.eval_instructions if held_out_instructions else task.instructions
        self.instruction = instruction or pool[0]

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, task: str | None = None, device: str = "cpu", **kw) -> "Transcriber":
        from speechlm.checkpoint import load_checkpoint

        model, cfg, _ = load_checkpoint(checkpoint, device=device)
        return cls(model, get_task(task or cfg.data.task), **kw)

    @property
    def name(self) -> str:
        return "speechlm"

    def __call__(self, waves: Sequence[np.ndarray]) -> list[str]:
        prompt = self.model.prompt_ids(self.task.user_message(self.instruction, self.model.audio_token))
        device = next(self.model.adapter.parameters()).device
        # Longest first: batches of similar length waste less padding; results go back in input order.
        order = sorted(range(len(waves)), key=lambda i: -len(waves[i]))
        out: list[str] = [""] * len(waves)
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            batch = [torch.as_tensor(np.asarray(waves[i], dtype=np.float32), device=device) for i in idx]
            if self.constrained:
                texts = self.model.classify(batch, [prompt] * len(idx), list(self.task.labels))
            else:
                texts = self.model.generate(batch, [prompt] * len(idx), max_new_tokens=self.max_new_tokens, num_beams=self.num_beams)
            for i, t in zip(idx, texts):
                out[i] = t
        return out


class CTCTranscriber:
    """The greedy CTC transcript of the adapter's frames (speechlm.model.ctc): what the audio path alone hears,
    with no LLM forward. Needs a model trained with ``model.ctc_head``."""

    def __init__(self, model: SpeechLM, batch_size: int = 8):
        if model.ctc is None:
            raise ValueError("CTCTranscriber needs a model with a CTC head (model.ctc_head=true)")
        self.model = model.eval()
        self.batch_size = batch_size

    def __call__(self, waves: Sequence[np.ndarray]) -> list[str]:
        device = next(self.model.adapter.parameters()).device
        out: list[str] = []
        for s in range(0, len(waves), self.batch_size):
            batch = [torch.as_tensor(np.asarray(w, dtype=np.float32), device=device) for w in waves[s:s + self.batch_size]]
            out += self.model.ctc_transcribe(batch)
        return out


class WhisperBaseline:
    """Whisper's own encoder-decoder (30-s padded input, greedy or beam), behind the Transcriber call."""

    def __init__(self, name: str = "tiny.en-ct2", num_beams: int = 1, batch_size: int = 8):
        from speechlm.backbones.whisper import load_whisper

        self.bundle = load_whisper(name)
        self.num_beams = num_beams
        self.batch_size = batch_size

    def __call__(self, waves: Sequence[np.ndarray]) -> list[str]:
        from speechlm.backbones.whisper import whisper_transcribe

        return whisper_transcribe(self.bundle, list(waves), batch_size=self.batch_size, num_beams=self.num_beams)


def transcribe(audio: list[str], checkpoint: str = "", num_beams: int = 1, max_new_tokens: int = 0,
               batch_size: int = 8, task: str = "", instruction: str = "", device: str = "cpu") -> list[dict]:
    """Transcribe audio files with a trained checkpoint; prints one line per file.

    checkpoint: checkpoint folder, or run folder (its latest checkpoint).
    audio: audio files (any format soundfile reads; resampled to 16 kHz mono).
    num_beams: 1 for greedy decoding, more for beam search.
    max_new_tokens: cap on generated tokens per clip (0: the task's max_answer_tokens).
    batch_size: clips decoded together.
    task: task record to run (default: the one the checkpoint was trained on).
    instruction: instruction text to use instead of the task's first paraphrase.
    device: cpu or cuda.
    """
    if not checkpoint:
        raise ValueError("give --checkpoint (a checkpoint folder or a run folder)")
    if not audio:
        raise ValueError("give at least one audio file")
    tr = Transcriber.from_checkpoint(checkpoint, task=task or None, device=device, num_beams=num_beams,
                                     max_new_tokens=max_new_tokens, batch_size=batch_size, instruction=instruction or None)
    waves = [load_audio(p) for p in audio]
    texts = tr(waves)
    results = [{"audio": p, "text": t} for p, t in zip(audio, texts)]
    for r in results:
        print(f"{r['audio']}\t{r['text']}", flush=True)
    return results


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
