"""The model side of the server: a request's audio and instruction become batched jobs, and tokens become text.

* The instruction (the chat's text part, or the transcription route's prompt) selects the task whose
  instruction pool holds it (case and spacing ignored); any other text is sent verbatim as the instruction
  of the checkpoint's own task. Either way the model reads exactly the text the client wrote.
* A task answered from speech (no closed label set: asr, srwt, sttc, ...) answers "" for audio in which the
  VAD finds no speech, without running the model.
* Audio past the model's ``max_audio_seconds`` is split at pauses; every piece is a job in the same batcher,
  and answers are stitched in order (speechlm.inference.long_audio).
* Closed-set tasks can ask for constrained decoding (each allowed label scored, SpeechVerse).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import numpy as np
import torch

from speechlm.inference.long_audio import SAMPLE_RATE, Piece, Segment, speech_regions, split_long, stitch
from speechlm.inference.transcribe import stream_generate
from speechlm.model.speechlm import PromptIds, SpeechLM
from speechlm.serving.batching import END, DynamicBatcher, Job
from speechlm.serving.uploads import UploadError
from speechlm.tasks import TASKS, Task, get_task

MAX_NEW_TOKENS = 512
"""Ceiling on max_tokens a client may ask for (the largest shipped task cap, srwt's, is below it)."""


@dataclass(frozen=True)
class Row:
    """A job's payload: one piece of audio and its prompt."""

    wave: torch.Tensor
    prompt: PromptIds
    max_new_tokens: int
    temperature: float
    labels: tuple[str, ...] | None  # constrained decoding over these labels, or None for free text
    transcript: bool = False  # the answer is the transcript: model.ctc_length_budget may cap it


@dataclass
class Answer:
    """A finished answer: text, segments (pieces with speech) and the numbers usage and finish_reason need."""

    text: str
    segments: list[Segment]
    completion_tokens: int
    finish_reason: str
    duration: float


class TextStream:
    """Token ids -> text deltas: the decoded whole minus what was already sent (a token can end mid-character)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = ""
        self.labels = ""  # constrained decoding delivers text, not tokens

    def push(self, item: int | str) -> str:
        if isinstance(item, str):
            self.labels += item
        else:
            self.ids.append(item)
        text = self.text
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta

    @property
    def text(self) -> str:
        return (self.labels or self.tokenizer.decode(self.ids, skip_special_tokens=True)).lstrip()


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().casefold())


class Engine:
    """One loaded model behind a dynamic batcher."""

    def __init__(self, model: SpeechLM, task: Task, model_id: str = "speechlm", max_audio_seconds: float = 30.0,
                 vad: str = "auto", max_batch: int = 8, max_wait_s: float = 0.01, max_queue: int = 64):
        self.model = model.eval()
        self.task = task
        self.model_id = model_id
        self.max_audio_seconds = max_audio_seconds
        self.vad = vad
        self.batcher = DynamicBatcher(self.run_batch, max_batch=max_batch, max_wait_s=max_wait_s, max_queue=max_queue)
        self._by_instruction = {_norm(i): t for t in TASKS.values() for i in (*t.instructions, *t.eval_instructions)}

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str = "cpu", **kw: Any) -> "Engine":
        from speechlm.checkpoint import load_checkpoint

        model, cfg, ckpt = load_checkpoint(checkpoint, device=device)
        kw.setdefault("model_id", f"speechlm-{Path(checkpoint).resolve().name}")
        kw.setdefault("max_audio_seconds", cfg.model.max_audio_seconds)
        return cls(model, get_task(cfg.data.task), **kw)

    # ---- requests -------------------------------------------------------------------------------------
    def task_for(self, instruction: str) -> tuple[Task, str]:
        """The task an instruction belongs to (else the checkpoint's task) and the instruction to send."""
        if not instruction.strip():
            return self.task, self.task.instructions[0]
        return self._by_instruction.get(_norm(instruction), self.task), instruction.strip()

    def tasks(self) -> dict[str, dict]:
        """What the page offers: each task's first instruction and its closed label set."""
        return {k: {"instruction": t.instructions[0], "labels": list(t.labels) if t.labels else None,
                    "description": t.description} for k, t in TASKS.items()}

    def plan(self, wave: np.ndarray, task: Task) -> list[Piece]:
        """Pieces to answer: none for a speech task on audio without speech, several for long audio."""
        regions = None  # the VAD runs at most once, and only when something needs it
        if task.labels is None or self.model.trim_silence or len(wave) > self.max_audio_seconds * SAMPLE_RATE:
            regions = speech_regions(wave, self.vad) if len(wave) else []
        if task.labels is None and not regions:
            return []
        return split_long(wave, self.max_audio_seconds, self.vad, trim=self.model.trim_silence, regions=regions)

    def submit(self, wave: np.ndarray, pieces: list[Piece], task: Task, instruction: str, max_tokens: int | None,
               temperature: float, constrained: bool = False) -> list[Job]:
        """Queue one job per piece (all or none: raises QueueFull)."""
        prompt = self.model.prompt_ids(task.user_message(instruction, self.model.audio_token))
        limit = min(max_tokens or task.max_answer_tokens, MAX_NEW_TOKENS)
        labels = task.labels if constrained and task.labels and not task.asr_prefix else None
        # a transcript only when the instruction is one of a transcript task's own (a free instruction is not)
        transcript = task.target == "text" and self._by_instruction.get(_norm(instruction)) is task
        rows = [Row(torch.from_numpy(np.ascontiguousarray(wave[p.start:p.end])), prompt, limit, temperature, labels,
                    transcript) for p in pieces]
        return self.batcher.submit_many(rows)

    async def answer(self, wave: np.ndarray, pieces: list[Piece], jobs: list[Job], timeout_s: float) -> Answer:
        """Wait for every piece and stitch the texts."""
        texts = self.text_streams(jobs)
        async for _ in self.deltas(jobs, timeout_s, texts):
            pass
        text, segments = stitch(pieces, [t.text.strip() for t in texts])
        n_tok = sum(len(t.ids) for t in texts)
        length = any(len(t.ids) >= j.payload.max_new_tokens for t, j in zip(texts, jobs))
        return Answer(text, segments, n_tok, "length" if length else "stop", len(wave) / 16000)

    def text_streams(self, jobs: list[Job]) -> list[TextStream]:
        return [TextStream(self.model.tokenizer) for _ in jobs]

    async def deltas(self, jobs: list[Job], timeout_s: float, texts: list[TextStream]) -> AsyncIterator[tuple[int, str]]:
        """(piece index, text delta) as tokens arrive, pieces in order; every job is cancelled on timeout or exit
        (a client that leaves stops its rows at the next token)."""
        try:
            async with asyncio.timeout(timeout_s):
                for i, job in enumerate(jobs):
                    while (item := await job.stream.get()) is not END:
                        if isinstance(item, Exception):
                            raise item
                        if delta := texts[i].push(item):
                            yield i, delta
        except TimeoutError:
            raise UploadError(504, f"the request took longer than {timeout_s:g} s and was stopped", "timeout") from None
        finally:
            for job in jobs:
                job.cancelled = True

    # ---- the worker thread ----------------------------------------------------------------------------
    def run_batch(self, jobs: list[Job], emit: Callable[[Job, Any], None]) -> None:
        """Decode every free-text row in one stream_generate call; score constrained rows per label set."""
        free = [j for j in jobs if j.payload.labels is None]
        try:
            if free:
                rows: list[Row] = [j.payload for j in free]
                stream_generate(self.model, [r.wave for r in rows], [r.prompt for r in rows],
                                [r.max_new_tokens for r in rows], [r.temperature for r in rows],
                                on_token=lambda r, t: emit(free[r], t), alive=lambda r: not free[r].cancelled,
                                transcript=[r.transcript for r in rows])
            groups: dict[tuple[str, ...], list[Job]] = {}
            for j in jobs:
                if j.payload.labels is not None:
                    groups.setdefault(j.payload.labels, []).append(j)
            with torch.no_grad():
                for labels, group in groups.items():
                    picks = self.model.classify([j.payload.wave for j in group], [j.payload.prompt for j in group], list(labels))
                    for j, label in zip(group, picks):
                        emit(j, label)
        except Exception as e:
            for j in jobs:
                emit(j, e)
            return
        for j in jobs:
            emit(j, END)
