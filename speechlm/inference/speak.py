"""Speech in and out with a discrete speech LM checkpoint: the ``speak`` and ``chat`` verbs and discrete ASR.

Owns :class:`DiscreteRunner` (prompt rendering for a task, constrained decoding, parsing what was generated back
into text and speech, the vocoder), the verbs :func:`speak` (TTS: text -> units -> vocoder -> WAV), :func:`chat`
(a spoken question -> the text answer, and the spoken answer as a WAV for a chain-of-modality model) and
:func:`transcribe_discrete` (ASR: units in, text out). Scoring them is speechlm.evaluation.discrete.

A checkpoint folder alone is enough (speechlm.checkpoint.discrete): the LLM from the registry named in its
config, the speech tokenizer, vocoder and vocabulary layout from inside it.
Legend: T0 prompt frames, T new frames, nq streams, U deduplicated units.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechlm.checkpoint.discrete import DiscreteBundle, load_discrete_checkpoint
from speechlm.model.discrete import Sampling
from speechlm.tasks import Task, get_task
from speechlm.tasks.render import (EOSP, EOT, SOS_EOS, SOSP, SOT, SPEECH, TA, UA, parse_units, render_streams,
                                   render_units)

SAMPLE_RATE = 16000
ASR_TOKENS_PER_SECOND = 8.0
"""A transcript's token budget per second of audio (+ 8): Whisper's own, 224 tokens per 30-s window is 7.5 a
second, about twice read English (~3 words, ~4 tokens a second). An untrained model then stops looping early, so
scoring it takes seconds a clip instead of running to the cap."""
TTS_UNITS_PER_CHAR = {"units": 4.0, "streams": 8.0}
"""Speech tokens a TTS answer may spend per input character (+ 20), by rendering: deduplicated units (the
speechgpt-tiny demo's slt corpus, K=100 k-means of Whisper layer 3: 1.59 a character on average, 3.67 at most) or
50-Hz stream frames, not deduplicated (twice that). An untrained model stops near there instead of at max_units."""


class DiscreteRunner:
    """Run tasks of a discrete checkpoint on text and waves."""

    def __init__(self, bundle: DiscreteBundle, sampling: Sampling | None = None, seed: int = 0, merge: bool = True):
        self.b = bundle
        self.model, self.tok, self.layout = bundle.model.eval(), bundle.text_tokenizer, bundle.model.layout
        if merge and hasattr(self.model.llm, "merge_and_unload"):
            # peft re-merges the trainable token rows into the whole 49k x H embedding on every forward
            # (TrainableTokensLayer.get_merged_weights): merged once here, decoding is 2x faster (31 -> 16 s for
            # 60 units on the speechgpt-tiny demo's checkpoint, same units)
            self.model.llm = self.model.llm.merge_and_unload()
        self.rendering = bundle.cfg.discrete.rendering
        # speech spans hold [F][nq] frames (ESPnet codec_ssl) or deduplicated units, where no unit repeats itself
        self.frame_level = self.rendering == "streams" and self.model.nq > 1
        self.sampling = sampling or Sampling()
        self.gen = torch.Generator().manual_seed(seed)
        self.eos = self.tok.convert_tokens_to_ids(self.tok.eos_token)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, **kw) -> DiscreteRunner:
        if not checkpoint:
            raise ValueError("give --checkpoint (a discrete checkpoint folder or its run folder)")
        return cls(load_discrete_checkpoint(checkpoint), **kw)

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.layout.tasks

    # ---- speech <-> tokens ---------------------------------------------------------------------------
    def speech_of(self, wave: np.ndarray) -> list:
        """A wave as the rendering's speech tokens: deduplicated units, or [F][nq] codec_ssl frames."""
        from speechlm.tokenizers.dedup import unit_runs

        seq = self.b.speech_tokenizer.encode(np.asarray(wave, dtype=np.float32))
        if self.frame_level:
            return np.asarray(seq.streams).tolist()
        return unit_runs(self.b.speech_tokenizer, seq)[0].tolist()

    def wave_of(self, units: list[int], frame_level: bool) -> np.ndarray:
        """Units -> 16-kHz wave through the checkpoint's vocoder (frame-level units carry their own durations)."""
        from speechlm.tokenizers.dedup import dedup

        if self.b.vocoder is None:
            raise ValueError(f"{self.b.folder}: the checkpoint's tokenizer folder has no vocoder (speechlm prepare vocoder)")
        if not units:
            return np.zeros(0, np.float32)
        if frame_level:
            runs, durations = dedup(np.asarray(units))
            return self.b.vocoder.synthesize(runs, durations)
        return self.b.vocoder.synthesize(np.asarray(units, dtype=np.int64))

    # ---- prompts -------------------------------------------------------------------------------------
    def _example(self, task: Task, text: str = "") -> dict[str, Any]:
        """A manifest-like line: the input text, and placeholders for the answer fields (cut from the prompt)."""
        ex = {"id": "prompt", "text": text or "x", "labels": {}}
        for field, modality in task.outputs:
            if modality != SPEECH and field not in ("text", "target"):
                ex[field] = "x"
        if task.target != "text":
            ex["labels"][task.target] = "x"
        return ex

    def prompt(self, task: Task, text: str = "", speech: dict[str, list] | None = None) -> tuple[torch.Tensor, tuple[int, ...]]:
        """(prompt [T0] or [T0, nq], stop ids). A single output's opening marker is part of the prompt (the task
        says which modality comes), so decoding starts inside the answer."""
        speech = dict(speech or {})
        for field, modality in task.outputs:
            if modality == SPEECH:
                speech.setdefault(field, [])
        example = self._example(task, text)
        single = len(task.outputs) == 1
        out_speech = task.outputs[0][1] == SPEECH
        if self.rendering == "units":
            r = render_units(task, example, speech, self.tok, task.instructions[0], self.b.cfg.discrete.system_prompt)
            n = len(self._ids(r.system)) + len(self._ids(r.prompt))
            ids = r.input_ids[:n]
            if single and out_speech:
                return torch.tensor(ids + [self.layout.marker_id(SOSP)]), (self.layout.marker_id(EOSP),)
            return torch.tensor(ids), (self.eos,)
        r = render_streams(task, example, speech, self.layout, self.tok)
        start = r.segments[len(task.inputs)][2]  # first frame of the first output segment (its opening marker)
        frames = torch.tensor(r.frames)  # [T, nq]
        if single:
            end = EOSP if out_speech else EOT
            return frames[:start + 1], (self.layout.marker_id(end),)
        return frames[:start], (self.layout.marker_id(SOS_EOS),)

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids if text else []

    # ---- decoding ------------------------------------------------------------------------------------
    def run(self, task: Task, text: str = "", speech: dict[str, list] | None = None, max_frames: int = 400) -> dict[str, Any]:
        """Generate ``task``'s answer; returns {"text": [text outputs in order], "units": [units of each speech
        output], "frame_level": bool, "raw": what was generated}."""
        prompt, stops = self.prompt(task, text, speech)
        gen = dict(sampling=self.sampling, generator=self.gen, no_repeat_units=not self.frame_level)
        spoken_after_text = self.rendering == "units" and len(task.outputs) > 1 and task.outputs[-1][1] == SPEECH
        if spoken_after_text:
            # chain of modality: text first, then its speech, held to the TTS budget of the text it says (an
            # undertrained model would otherwise babble units up to max_frames, minutes a clip)
            sosp = self.layout.marker_id(SOSP)
            out = self.model.generate(prompt, max_frames=max_frames, stop_ids=(*stops, sosp), **gen)
            if int(out[-1]) == sosp and len(out) < max_frames:
                said = self._parse_units_answer(out.tolist(), False)["text"]
                more = self.model.generate(torch.cat([prompt, out]),
                                           max_frames=min(self.tts_budget(said[-1] if said else ""), max_frames - len(out)),
                                           stop_ids=stops, **gen)
                out = torch.cat([out, more])
        else:
            out = self.model.generate(prompt, max_frames=max_frames, stop_ids=stops, **gen)
        s0 = (out if out.dim() == 1 else out[:, 0]).tolist()  # stream 0 of the new frames [T]
        if self.rendering == "streams" and len(task.outputs) == 1:
            # the opening marker was in the prompt: prepend it so both cases parse alike
            opener = self.layout.marker_id(SOSP if task.outputs[0][1] == SPEECH else SOT)
            s0 = [opener] + s0
        frame_level = self.frame_level
        if self.rendering == "units":
            if len(task.outputs) == 1 and task.outputs[0][1] == SPEECH:
                s0 = [self.layout.marker_id(SOSP)] + s0
            return self._parse_units_answer(s0, frame_level)
        return self._parse_stream_answer(s0, frame_level)

    def _parse_units_answer(self, ids: list[int], frame_level: bool) -> dict[str, Any]:
        ids = [i for i in ids if i != self.eos]
        raw = self.tok.decode(ids, skip_special_tokens=False)
        units = [u for u in parse_units(raw)]
        text = re.sub(re.escape(SOSP) + r".*?(" + re.escape(EOSP) + r"|$)", "", raw, flags=re.S)
        parts = [p.strip() for p in re.split(re.escape(TA) + "|" + re.escape(UA), text) if p.strip()]
        return {"text": parts, "units": units, "frame_level": frame_level, "raw": raw}

    def _parse_stream_answer(self, s0: list[int], frame_level: bool) -> dict[str, Any]:
        lay = self.layout
        texts, units, cur, mode = [], [], [], None
        for tok in s0:
            if tok == lay.marker_id(SOT):
                mode, cur = "text", []
            elif tok == lay.marker_id(SOSP):
                mode, cur = "speech", []
            elif tok in (lay.marker_id(EOT), lay.marker_id(EOSP), lay.marker_id(SOS_EOS)):
                if mode == "text":
                    texts.append(self.tok.decode(cur, skip_special_tokens=True).strip())
                elif mode == "speech":
                    units.append(cur)
                mode, cur = None, []
            elif mode == "speech" and lay.unit_of(tok) is not None:
                cur.append(lay.unit_of(tok))
            elif mode == "text" and tok < lay.text_vocab:
                cur.append(tok)
        if mode == "text":
            texts.append(self.tok.decode(cur, skip_special_tokens=True).strip())
        elif mode == "speech":
            units.append(cur)
        return {"text": texts, "units": units, "frame_level": frame_level, "raw": s0}

    # ---- tasks ---------------------------------------------------------------------------------------
    def tts_budget(self, text: str) -> int:
        """Speech tokens an answer saying ``text`` may spend: TTS_UNITS_PER_CHAR per character + 20."""
        return int(np.ceil(TTS_UNITS_PER_CHAR.get(self.rendering, 8.0) * len(text))) + 20

    def tts(self, text: str, task: str = "tts", max_units: int = 500) -> tuple[np.ndarray, list[int]]:
        """The text spoken: at most ``max_units`` speech tokens, and at most TTS_UNITS_PER_CHAR per character + 20."""
        res = self.run(get_task(task), text=text, max_frames=min(max_units, self.tts_budget(text)))
        units = res["units"][0] if res["units"] else []
        return self.wave_of(units, res["frame_level"]), units

    def asr(self, wave: np.ndarray, task: str = "asr", max_frames: int = 200) -> str:
        """The transcript, at most ``max_frames`` tokens and at most ASR_TOKENS_PER_SECOND per second of audio + 8."""
        budget = int(np.ceil(ASR_TOKENS_PER_SECOND * len(wave) / SAMPLE_RATE)) + 8
        res = self.run(get_task(task), speech={"audio": self.speech_of(wave)}, max_frames=min(max_frames, budget))
        return res["text"][0] if res["text"] else ""

    def default_chat_task(self) -> str:
        for name in ("chain-of-modality", "sttc", "asr"):
            if name in self.tasks or (self.rendering == "units" and name == "asr"):
                return name
        return self.tasks[0]


def _runner(checkpoint: str, sampling: str, temperature: float, top_k: int, top_p: float, seed: int) -> DiscreteRunner:
    return DiscreteRunner.from_checkpoint(checkpoint, sampling=Sampling(sampling, temperature, top_k, top_p), seed=seed)


def speak(text: str, checkpoint: str = "", out: str = "speech.wav", task: str = "tts", max_units: int = 500,
          sampling: str = "greedy", temperature: float = 1.0, top_k: int = 50, top_p: float = 0.8, seed: int = 0) -> dict:
    """Speak text with a discrete checkpoint (TTS): text -> units by constrained decoding -> unit vocoder -> WAV.

    text: what to say.
    checkpoint: discrete checkpoint folder, or its run folder (the latest checkpoint).
    out: WAV file to write (16 kHz).
    task: task record to run (tts, or codec_ssl_tts for a codec_ssl model).
    max_units: cap on generated units (about 25 per second of speech).
    sampling: greedy, topk, topp or sample (SpeechGPT samples with temperature 0.7, top_p 0.8, top_k 50).
    temperature: sampling temperature.
    top_k: candidates kept by topk.
    top_p: probability mass kept by topp.
    seed: seed of the sampler.
    """
    from speechlm.data.audio import write_audio

    runner = _runner(checkpoint, sampling, temperature, top_k, top_p, seed)
    wave, units = runner.tts(text, task=task, max_units=max_units)
    write_audio(out, wave, SAMPLE_RATE)
    print(f"{out}\t{len(wave) / SAMPLE_RATE:.2f} s\t{len(units)} units", flush=True)
    return {"out": out, "seconds": len(wave) / SAMPLE_RATE, "units": units}


def chat(audio: str, checkpoint: str = "", out: str = "answer.wav", task: str = "", max_frames: int = 800,
         sampling: str = "greedy", temperature: float = 1.0, top_k: int = 50, top_p: float = 0.8, seed: int = 0) -> dict:
    """Answer a spoken question with a discrete checkpoint: prints the text answer; a speaking model also writes it as a WAV.

    audio: the spoken question (any format soundfile reads; resampled to 16 kHz mono).
    checkpoint: discrete checkpoint folder, or its run folder (the latest checkpoint).
    out: WAV file for the spoken answer (written only when the model speaks one).
    task: task record (default: chain-of-modality when the model was trained on it, else sttc, else asr).
    max_frames: cap on generated tokens (text and units together).
    sampling: greedy, topk, topp or sample.
    temperature: sampling temperature.
    top_k: candidates kept by topk.
    top_p: probability mass kept by topp.
    seed: seed of the sampler.
    """
    from speechlm.data.audio import load_audio, write_audio

    runner = _runner(checkpoint, sampling, temperature, top_k, top_p, seed)
    t = get_task(task or runner.default_chat_task())
    res = runner.run(t, speech={"audio": runner.speech_of(load_audio(audio))}, max_frames=max_frames)
    texts = res["text"]
    result: dict[str, Any] = {"task": t.name, "transcript": texts[0] if len(texts) > 1 else "",
                              "answer": texts[-1] if texts else "", "out": None}
    if res["units"] and res["units"][-1] and runner.b.vocoder is not None:
        wave = runner.wave_of(res["units"][-1], res["frame_level"])
        write_audio(out, wave, SAMPLE_RATE)
        result["out"], result["seconds"] = out, len(wave) / SAMPLE_RATE
    print(result["answer"], flush=True)
    if result["out"]:
        print(f"[speechlm] spoken answer: {out} ({result['seconds']:.2f} s)", flush=True)
    return result


def transcribe_discrete(audio: list[str], checkpoint: str = "", task: str = "asr", max_frames: int = 200) -> list[dict]:
    """Transcribe audio files with a discrete checkpoint (units in, text out); prints one line per file.

    audio: audio files.
    checkpoint: discrete checkpoint folder, or its run folder.
    task: task record (asr, or codec_ssl_asr for a codec_ssl model).
    max_frames: cap on generated tokens per file.
    """
    from speechlm.data.audio import load_audio

    runner = DiscreteRunner.from_checkpoint(checkpoint)
    results = []
    for path in audio:
        results.append({"audio": path, "text": runner.asr(load_audio(path), task=task, max_frames=max_frames)})
        print(f"{path}\t{results[-1]['text']}", flush=True)
    return results

