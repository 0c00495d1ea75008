"""Inference: a checkpoint folder alone is enough to transcribe (or run any task on) audio files.

``Transcriber.from_checkpoint(dir)`` rebuilds the model from the checkpoint's resolved config and trained
weights; ``transcriber(waves)`` runs batched greedy or beam search with the LLM's KV cache. Clips longer than
the model's ``max_audio_seconds`` are split at pauses and stitched (speechlm.inference.long_audio); with
``skip_silence`` a clip without speech gets "" instead of a hallucination. :func:`stream_generate` is the
token-by-token path (greedy or sampled, KV cache, one row per request) that the server streams and batches.
``WhisperBaseline`` wraps Whisper's own decoder behind the same call, so evaluation scores both alike.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from speechlm.data.audio import AudioError, load_audio
from speechlm.inference.long_audio import Segment, answer_long
from speechlm.model.speechlm import Batch, PromptIds, SpeechLM
from speechlm.tasks import Task, get_task

SAMPLE_RATE = 16000
WHISPER_SECONDS = 30.0
"""What a Whisper encoder's positional table covers (1500 frames at 20 ms)."""


class Transcriber:
    """Answer a task's instruction about each clip with a SpeechLM."""

    def __init__(self, model: SpeechLM, task: Task, num_beams: int = 1, max_new_tokens: int = 0,
                 batch_size: int = 8, instruction: str | None = None, held_out_instructions: bool = False,
                 constrained: bool = False, max_audio_seconds: float = WHISPER_SECONDS, vad: str = "auto",
                 skip_silence: bool = False):
        self.model = model.eval()
        self.max_audio_seconds = max_audio_seconds  # longer clips are split at pauses (long_audio)
        self.vad = vad
        self.skip_silence = skip_silence  # no speech found -> "" without running the model
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
        kw.setdefault("max_audio_seconds", cfg.model.max_audio_seconds)
        return cls(model, get_task(task or cfg.data.task), **kw)

    @property
    def name(self) -> str:
        return "speechlm"

    def set_ctc_decode_weight(self, weight: float) -> None:
        """Decode transcripts jointly with the CTC head at ``weight`` (0: off; below 0: keep the checkpoint's)."""
        if weight < 0:
            return
        if weight > 0 and self.model.ctc is None:
            raise ValueError("--ctc-decode-weight above 0 needs a checkpoint trained with a CTC head (model.ctc_head=true)")
        if weight > 1:
            raise ValueError(f"--ctc-decode-weight must lie in [0, 1], got {weight}")
        self.model.ctc_decode_weight = weight

    def __call__(self, waves: Sequence[np.ndarray]) -> list[str]:
        return [text for text, _ in self.with_segments(waves)]

    def with_segments(self, waves: Sequence[np.ndarray]) -> list[tuple[str, list[Segment]]]:
        """Each clip's answer and its segments (one per piece a long clip was split into)."""
        check_waves(waves)
        return answer_long(waves, self.answer_pieces, self.max_audio_seconds, vad=self.vad, skip_silence=self.skip_silence,
                           trim=self.model.trim_silence)

    def answer_pieces(self, waves: Sequence[np.ndarray]) -> list[str]:
        """Answers for clips that already fit the encoder."""
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
                texts = self.model.generate(batch, [prompt] * len(idx), max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                            transcript=self.task.target == "text")
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
        check_waves(waves)
        return [t for t, _ in answer_long(waves, self._pieces, WHISPER_SECONDS, trim=self.model.trim_silence)]

    def _pieces(self, waves: Sequence[np.ndarray]) -> list[str]:
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
        check_waves(waves)
        return [t for t, _ in answer_long(waves, self._pieces, WHISPER_SECONDS)]

    def _pieces(self, waves: Sequence[np.ndarray]) -> list[str]:
        from speechlm.backbones.whisper import whisper_transcribe

        return whisper_transcribe(self.bundle, list(waves), batch_size=self.batch_size, num_beams=self.num_beams)


def check_waves(waves: Sequence[np.ndarray], names: Sequence[str] | None = None) -> None:
    """Refuse empty clips with a message naming them, before any of them reaches the encoder."""
    for i, w in enumerate(waves):
        if len(w) == 0:
            raise AudioError(f"{names[i] if names else f'clip {i}'}: the audio holds no samples (empty file?)")


@torch.no_grad()
def stream_generate(model: SpeechLM, waves: Sequence[torch.Tensor], prompts: Sequence[PromptIds],
                    max_new_tokens: Sequence[int], temperatures: Sequence[float] | None = None,
                    on_token: Callable[[int, int], None] | None = None, alive: Callable[[int], bool] | None = None,
                    seed: int | None = None, transcript: Sequence[bool] | None = None) -> list[list[int]]:
    """Decode one answer per row token by token with the LLM's KV cache; rows are independent requests.

    ``on_token(row, token)`` is called as soon as a row's token is chosen (the server streams from it);
    temperature 0 is greedy, above 0 samples from softmax(logits / T). A row stops at end-of-turn, at its
    own ``max_new_tokens``, or when ``alive(row)`` turns false (its client left or timed out); the loop ends
    when every row has stopped. Returns each row's tokens, end-of-turn excluded.

    Positions follow the attention mask (left padding), as ``transformers``' generate computes them.
    ``transcript[row]``: the row's answer is the transcript, so the model's ``ctc_length_budget`` caps it (the row
    then ends its turn at the cap) and its ``ctc_decode_weight`` decodes it jointly with the CTC head.
    """
    n = len(waves)
    lm, embed = model.causal_lm, model.causal_lm.get_input_embeddings()
    is_transcript = list(transcript) if transcript is not None else [False] * n
    audio, audio_lengths, caps, joint = model.encode_for_decoding(list(waves), is_transcript)
    limits = [m if c is None else min(m, c) for m, c in zip(max_new_tokens, caps)]
    batch = Batch(ids=[str(i) for i in range(n)], waves=list(waves), prompts=list(prompts))
    emb, mask, _ = model.splice(batch, audio, audio_lengths, left_pad=True)  # [B, L, H], [B, L]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, L]
    temps = torch.tensor(list(temperatures) if temperatures is not None else [0.0] * n, device=emb.device)  # [B]
    gen = torch.Generator(device=emb.device).manual_seed(seed) if seed is not None else None
    out = lm(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    tokens: list[list[int]] = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool, device=emb.device)  # [B]
    for step in range(max(max_new_tokens, default=0)):
        logits = out.logits[:, -1].float()  # [B, V]
        if joint is not None:  # joint CTC/LLM decoding of the transcript rows still going (model.ctc_decode_weight)
            logits = joint.score([tuple(tokens[r]) if is_transcript[r] and not done[r] else None for r in range(n)], logits)
        nxt = _choose(logits, temps, gen)  # [B]
        for r in range(n):
            if done[r]:
                continue
            t = int(nxt[r])
            if t == model.eos_id or (alive is not None and not alive(r)):
                done[r] = True
                continue
            tokens[r].append(t)
            if on_token is not None:
                on_token(r, t)
            if len(tokens[r]) >= limits[r]:
                done[r] = True
        if bool(done.all()):
            break
        mask = torch.cat([mask, (~done).long()[:, None]], dim=1)  # [B, L+step+1]; a finished row attends nothing new
        pos = pos[:, -1:] + 1  # [B, 1]
        out = lm(inputs_embeds=embed(nxt[:, None]), attention_mask=mask, position_ids=pos, use_cache=True, **_cache_kw(out))
    return tokens


def _cache_kw(out) -> dict:
    """The KV cache of a forward's output as the next call's keyword (transformers 5 names it ``cache``, 4.x
    ``past_key_values``)."""
    return {"cache": out["cache"]} if "cache" in out else {"past_key_values": out.past_key_values}


def _choose(logits: torch.Tensor, temps: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """logits [B, V] -> next token [B]: argmax where the temperature is 0, a sample elsewhere."""
    greedy = logits.argmax(dim=-1)  # [B]
    if not bool((temps > 0).any()):
        return greedy
    probs = torch.softmax(logits / temps.clamp(min=1e-4)[:, None], dim=-1)  # [B, V]
    sampled = torch.multinomial(probs, 1, generator=gen)[:, 0]  # [B]
    return torch.where(temps > 0, sampled, greedy)


def transcribe(audio: list[str], checkpoint: str = "", num_beams: int = 1, max_new_tokens: int = 0,
               batch_size: int = 8, task: str = "", instruction: str = "", device: str = "cpu",
               vad: str = "auto", skip_silence: bool = True, ctc_decode_weight: float = -1.0) -> list[dict]:
    """Transcribe audio files with a trained checkpoint; prints one line per file.

    Files longer than the model's max_audio_seconds are split at pauses and the answers joined. A discrete
    checkpoint (speechlm.checkpoint.discrete) runs its discrete ASR task instead: units in, text out (task
    default asr; max_new_tokens caps the generated tokens, 0: 200).

    checkpoint: checkpoint folder, or run folder (its latest checkpoint).
    audio: audio files (any format soundfile reads; resampled to 16 kHz mono).
    num_beams: 1 for greedy decoding, more for beam search.
    max_new_tokens: cap on generated tokens per clip (0: the task's max_answer_tokens).
    batch_size: clips decoded together.
    task: task record to run (default: the one the checkpoint was trained on).
    instruction: instruction text to use instead of the task's first paraphrase.
    device: cpu or cuda.
    vad: voice activity detector for splitting long files and finding silence: auto, silero or energy.
    skip_silence: a file with no speech gets an empty transcript (tasks answered from speech: asr, srwt, sttc, ...).
    ctc_decode_weight: joint CTC/LLM decoding of transcripts at this weight (0: off; -1: as the checkpoint says).
    """
    if not checkpoint:
        raise ValueError("give --checkpoint (a checkpoint folder or a run folder)")
    if not audio:
        raise ValueError("give at least one audio file")
    from speechlm.checkpoint.discrete import is_discrete_checkpoint

    if is_discrete_checkpoint(checkpoint):  # a discrete speech LM (units in, text out): speechlm.inference.speak
        from speechlm.inference.speak import transcribe_discrete

        return transcribe_discrete(audio, checkpoint=checkpoint, task=task or "asr", max_frames=max_new_tokens or 200)
    tr = Transcriber.from_checkpoint(checkpoint, task=task or None, device=device, num_beams=num_beams,
                                     max_new_tokens=max_new_tokens, batch_size=batch_size, instruction=instruction or None,
                                     vad=vad)
    tr.set_ctc_decode_weight(ctc_decode_weight)
    tr.skip_silence = skip_silence and tr.task.labels is None  # a closed-set task (events, emotion) may hear non-speech
    waves = [load_audio(p) for p in audio]
    check_waves(waves, names=audio)
    texts = tr(waves)
    results = [{"audio": p, "text": t} for p, t in zip(audio, texts)]
    for r in results:
        print(f"{r['audio']}\t{r['text']}", flush=True)
    return results


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
