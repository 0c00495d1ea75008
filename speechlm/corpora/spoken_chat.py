"""Spoken chat data for chain-of-modality training (SpeechGPT's stage 3) without a model hub.

Owns :func:`build_spoken_chat` (``speechlm prepare spoken-chat OUT``). SpeechGPT (arXiv 2305.11000, section 3.3)
builds SpeechInstruct's chain-of-modality half from text instructions answered by a text LLM and voiced by a TTS
system. Here, with only Debian packages and the LLM itself:

* the questions are the short factual ones of :mod:`speechlm.corpora.synth_questions`, each spoken by one of the
  Debian voices (espeak-ng, flite; :func:`speechlm.corpora.synth.available_voices`) other than the answer voice;
* the text answers are the LLM's own greedy replies to the questions given as text
  (:func:`speechlm.corpora.chat_targets.answer_questions`, cached in ``chat_answers.json``): the model learns to
  answer a spoken question the way its LLM answers the written one, and the same reply is the modality-gap
  reference at evaluation (speechlm.evaluation.discrete);
* the spoken answers are those replies read by the unit vocoder's voice (flite slt,
  :data:`speechlm.corpora.speech_tokens.DEFAULT_VOICE`), so the units the model learns to emit are the units the
  vocoder learnt to speak.

Manifest lines (``OUT/train.jsonl``, and ``OUT/test.jsonl`` with ``held_out`` questions never trained on), the
fields :mod:`speechlm.training.discrete` reads for ``chain-of-modality`` (``text``, ``answer``, ``answer_audio``)::

    {"id": "chat-0007", "audio": "audio/chat-0007.q.flac", "text": "How many legs does a spider have?",
     "speaker": "espeak-ng:en-gb+m3", "question": true, "answer": "A spider has eight legs.",
     "answer_factual": "Eight.", "answer_llm": "smollm2-135m-instruct", "answer_audio": "audio/chat-0007.a.flac",
     "answer_speaker": "flite:slt", "duration": 2.1}
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from speechlm.utils import write_json, write_jsonl

log = logging.getLogger(__name__)

ANSWER_VOICE = "flite:slt"  # = speechlm.corpora.speech_tokens.DEFAULT_VOICE (the vocoder's voice)
SYSTEM_PROMPT = "Answer in one short sentence."
"""System turn of the LLM's replies: SmolLM2-135M's unprompted replies run past 48 tokens; one sentence keeps a
spoken answer under ~6 s (~150 deduplicated units at ~25 a second), so a chain-of-modality example fits
speechgpt-tiny's ``discrete.max_frames`` of 400."""
MAX_NEW_TOKENS = 32  # reply cap (chat_targets trims a cut-off reply to its last full sentence)


def _voices(answer_voice: str):
    from speechlm.corpora.synth import available_voices

    voices = available_voices()
    answer = [v for v in voices if v.speaker == answer_voice]
    if not answer:
        raise RuntimeError(f"the answer voice {answer_voice} is not installed (apt-get install flite)")
    others = [v for v in voices if v.speaker != answer_voice] or answer
    return answer[0], others


def _render(jobs: list[tuple[Any, str, float, Path]], workers: int, progress: bool, desc: str) -> list[float]:
    """Synthesise (voice, text, rate, path) jobs (existing files are kept); returns each duration in seconds."""
    from tqdm.auto import tqdm

    from speechlm.corpora.synth import _synthesize

    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(_synthesize, {"voice": v, "text": t, "rate": r, "pitch": None}, p, Path(tmp))
                   for v, t, r, p in jobs]
        return [f.result() for f in tqdm(futures, desc=desc, unit="clip", disable=not progress)]


def build_spoken_chat(out: str | Path, n: int = 0, seed: int = 0, llm: Any = "smollm2-135m-instruct", *,
                      tokenizer: Any = None, llm_name: str | None = None, held_out: int = 0,
                      max_new_tokens: int = MAX_NEW_TOKENS, system_prompt: str = SYSTEM_PROMPT,
                      answer_voice: str = ANSWER_VOICE, workers: int = 2, progress: bool = True) -> dict[str, Path]:
    """Write the spoken chat corpus into ``out`` (module doc); returns {"train": path[, "test": path]}.

    n: questions to use (0: all of synth_questions.QUESTIONS, about 150), shuffled by ``seed``.
    llm: the answering LLM: a registry name (loaded only if a reply is not cached), a model (with ``tokenizer``
        and ``llm_name``) or a (model, tokenizer) pair (speechlm.corpora.chat_targets.answer_questions).
    held_out: the last this many shuffled questions go to test.jsonl instead of train.jsonl.
    max_new_tokens, system_prompt: how the LLM replies (part of the reply cache key).
    answer_voice: the voice of the spoken answers (the unit vocoder's voice).
    """
    from speechlm.corpora.chat_targets import answer_questions
    from speechlm.corpora.synth_questions import QUESTIONS

    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    pairs = list(QUESTIONS)
    rng.shuffle(pairs)
    pairs = pairs[:n] if n else pairs
    if held_out >= len(pairs):
        raise ValueError(f"held_out={held_out} leaves no training question of {len(pairs)}")
    answer_v, voices = _voices(answer_voice)

    # 1. the spoken questions, each in a Debian voice (rate jitter +-10 %, as the engines' default rate varies)
    lines = []
    jobs = []
    for i, (q, a) in enumerate(pairs):
        v = voices[rng.randrange(len(voices))]
        rate = round(rng.uniform(0.9, 1.1), 3)
        lines.append({"id": f"chat-{i:04d}", "audio": f"audio/chat-{i:04d}.q.flac", "text": q, "speaker": v.speaker,
                      "gender": v.gender, "language": "en", "question": True, "answer": a})
        jobs.append((v, q, rate, out / lines[-1]["audio"]))
    for line, d in zip(lines, _render(jobs, workers, progress, "spoken questions")):
        line["duration"] = round(d, 3)
    questions = out / "questions.jsonl"
    write_jsonl(questions, lines)

    # 2. the LLM's own text replies (cached beside the manifest: a re-run generates nothing)
    answered = answer_questions(questions, out / "answered.jsonl", llm=llm, tokenizer=tokenizer, llm_name=llm_name,
                                max_new_tokens=max_new_tokens, system_prompt=system_prompt)
    lines = [json.loads(s) for s in answered.read_text().splitlines() if s.strip()]
    keep = [ln for ln in lines if (ln.get("answer") or "").strip() and ln.get("answer_llm")]
    if len(keep) < len(lines):
        log.warning("spoken chat: %d questions got an empty reply and are left out", len(lines) - len(keep))

    # 3. the replies spoken in the vocoder's voice, at its default rate
    jobs = []
    for ln in keep:
        ln["answer_audio"] = ln["audio"].replace(".q.flac", ".a.flac")
        ln["answer_speaker"] = answer_v.speaker
        jobs.append((answer_v, ln["answer"], 1.0, out / ln["answer_audio"]))
    for ln, d in zip(keep, _render(jobs, workers, progress, "spoken answers")):
        ln["answer_seconds"] = round(d, 3)

    test_ids = {f"chat-{i:04d}" for i in range(len(pairs) - held_out, len(pairs))}
    paths = {"train": out / "train.jsonl"}
    write_jsonl(paths["train"], [ln for ln in keep if ln["id"] not in test_ids])
    if held_out:
        paths["test"] = out / "test.jsonl"
        write_jsonl(paths["test"], [ln for ln in keep if ln["id"] in test_ids])
    write_json(out / "corpus.json", {"questions": len(pairs), "answered": len(keep), "held_out": held_out,
                                     "llm": keep[0]["answer_llm"] if keep else None, "system_prompt": system_prompt,
                                     "max_new_tokens": max_new_tokens, "answer_voice": answer_v.speaker,
                                     "question_voices": sorted({ln["speaker"] for ln in lines}), "seed": seed})
    return paths
