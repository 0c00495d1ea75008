"""Evaluation of a discrete speech LM checkpoint (issue 11, section 6): what it hears, says and answers.

Owns :func:`evaluate_discrete` and its report. For each subset of held-out lines:

* **discrete ASR** - the checkpoint's ``asr`` task (units in, text out) against the transcript: WER;
* **TTS** - the checkpoint speaks the transcript (units out, its own vocoder), Whisper tiny.en transcribes what
  it said: WER (ESPnet-SpeechLM's ``speech_edit_distance`` judge, arXiv 2502.15218 section 5); where the line's
  own clip is in the vocoder's voice (``voice``, default flite slt) it is the reference for MCD (dB, Kubichek
  1993) and speaker similarity (Resemblyzer d-vector cosine), both from :mod:`speechlm.evaluation.speech_metrics`;
* **chain of modality** (lines that carry an ``answer``, for a model trained on ``chain-of-modality``,
  SpeechGPT's stage 3, arXiv 2305.11000): the spoken question -> transcript, text answer, spoken answer.
  Scored: the transcript against the question (WER); the spoken answer as Whisper tiny.en hears it against the
  model's own text answer (WER and SQuAD token F1: does it say what it wrote?); the model's text answer against
  the line's ``answer``, the LLM's reply to the same question given as text
  (:mod:`speechlm.corpora.chat_targets`): the modality gap, WER and token F1.

Every text goes through the repo's Whisper English normaliser (:mod:`speechlm.evaluation.wer`). The run folder
gets ``report.md``, ``summary.json``, ``results.jsonl`` (one row per line and kind) and ``samples/`` (WAVs and
spectrogram PNGs of the first few lines of each subset).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from speechlm.evaluation.taskmetrics import token_f1
from speechlm.evaluation.wer import NORMALIZER_NAME, wer_details
from speechlm.utils import write_json, write_jsonl, write_text

SAMPLE_RATE = 16000
WHISPER_MIN_SAMPLES = SAMPLE_RATE // 10  # Whisper gets at least 0.1 s: an empty generation is scored as silence
DEFAULT_VOICE = "flite:slt"  # speechlm.corpora.speech_tokens.DEFAULT_VOICE: the voice the unit vocoder learns
COM_TASK = "chain-of-modality"


def _subsets(manifest: Any, n: int) -> dict[str, list]:
    """``manifest``: a path, a list of paths, or {name: path or list of Cut}; each subset's first ``n`` lines
    (0: all) that have a transcript."""
    from speechlm.data.manifest import read_manifest

    if isinstance(manifest, (str, Path)):
        manifest = {Path(manifest).stem: manifest}
    elif not isinstance(manifest, Mapping):
        manifest = {Path(m).stem: m for m in manifest}
    out = {}
    for name, src in manifest.items():
        cuts = [c for c in (read_manifest(src) if isinstance(src, (str, Path)) else src) if (c.text or "").strip()]
        out[name] = cuts[:n] if n else cuts
    return out


def _audible(waves: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [w if len(w) >= WHISPER_MIN_SAMPLES else np.zeros(WHISPER_MIN_SAMPLES, np.float32) for w in waves]


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def _pair_quality(ref: np.ndarray, syn: np.ndarray, speaker: bool) -> dict[str, Any]:
    """MCD and speaker similarity of one (reference, generated) pair; None with the reason when not computable
    (a generation shorter than speech_metrics.MIN_SECONDS, no speech left after Resemblyzer's trim)."""
    from speechlm.evaluation.speech_metrics import mel_cepstral_distortion, speaker_similarity

    out: dict[str, Any] = {"mcd_db": None, "speaker_sim": None}
    try:
        out["mcd_db"] = float(mel_cepstral_distortion(ref, syn))
        if speaker:
            out["speaker_sim"] = float(speaker_similarity(ref, syn))
    except ValueError as e:
        out["quality_error"] = str(e)
    return out


def _sample(folder: Path, name: str, waves: dict[str, np.ndarray], title: str) -> list[str]:
    """WAVs of every named wave and one stacked spectrogram PNG; returns the written paths."""
    from speechlm.data.audio import write_audio
    from speechlm.evaluation.speech_metrics import spectrogram_png

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, w in waves.items():
        if len(w):
            write_audio(folder / f"{name}.{kind}.wav", w, SAMPLE_RATE)
            paths.append(str(folder / f"{name}.{kind}.wav"))
    drawable = {k: w for k, w in waves.items() if len(w) >= WHISPER_MIN_SAMPLES}
    if drawable:
        paths.append(str(spectrogram_png(drawable, folder / f"{name}.png", title=title[:90])))
    return paths


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80]


def evaluate_discrete(checkpoint: Any, manifest: Any, out: str | Path = "", n: int = 20, *,
                      whisper: Callable[[list[np.ndarray]], list[str]] | None = None, voice: str = DEFAULT_VOICE,
                      speaker: bool = True, samples: int = 3, asr_task: str = "", tts_task: str = "",
                      max_units: int = 500, asr_max_frames: int = 200, chat_max_frames: int = 800,
                      progress: bool = True) -> dict[str, Any]:
    """Score a discrete checkpoint on held-out lines (module doc); writes the report into ``out`` when given.

    checkpoint: a discrete checkpoint or run folder, or a loaded :class:`~speechlm.inference.speak.DiscreteRunner`.
    manifest: a manifest path, a list of them, or {subset name: path or list of Cut}.
    n: lines per subset (0: all).
    whisper: ``whisper(waves) -> texts`` judge of the generated speech (default WhisperBaseline("tiny.en-ct2")).
    voice: the ``speaker`` label of lines whose own clip is in the vocoder's voice (MCD, speaker similarity).
    speaker: also compute speaker similarity (Resemblyzer, ~1 s a pair on one thread).
    samples: lines per subset kept as WAV + PNG under ``out/samples``.
    """
    from speechlm.data.audio import load_audio
    from speechlm.inference.speak import DiscreteRunner

    t0 = time.time()
    runner = checkpoint if isinstance(checkpoint, DiscreteRunner) else DiscreteRunner.from_checkpoint(checkpoint)
    frame_level = runner.rendering == "streams" and runner.model.nq > 1
    tasks = set(runner.tasks)
    asr_task = asr_task or ("codec_ssl_asr" if frame_level and "codec_ssl_asr" in tasks else "asr")
    tts_task = tts_task or ("codec_ssl_tts" if frame_level and "codec_ssl_tts" in tasks else "tts")
    can_speak = runner.b.vocoder is not None
    can_chat = COM_TASK in tasks and can_speak
    if whisper is None and can_speak:
        from speechlm.inference.transcribe import WhisperBaseline

        whisper = WhisperBaseline("tiny.en-ct2")
    run = Path(out) if out else None
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"checkpoint": str(runner.b.folder), "rendering": runner.rendering,
                               "pattern": runner.model.pattern, "nq": runner.model.nq, "tasks": sorted(tasks),
                               "normalizer": NORMALIZER_NAME, "judge": getattr(whisper, "name", "whisper tiny.en")
                               if whisper is not None else None, "voice": voice, "subsets": {}}
    for name, cuts in _subsets(manifest, n).items():
        com_cuts = [c for c in cuts if c.labels.get("answer")] if can_chat else []
        chat_ids = {c.id for c in com_cuts}
        plain = [c for c in cuts if c.id not in chat_ids]
        res: dict[str, Any] = {"n": len(cuts)}
        if plain:
            res.update(_asr_tts(runner, name, plain, whisper, asr_task, tts_task, can_speak, voice, speaker, samples,
                                max_units, asr_max_frames, run, rows, load_audio, progress))
        if com_cuts:
            res["chain_of_modality"] = _chain(runner, name, com_cuts, whisper, samples, chat_max_frames, run, rows,
                                              load_audio, progress)
        summary["subsets"][name] = res
    summary["seconds"] = round(time.time() - t0, 1)
    if run is not None:
        run.mkdir(parents=True, exist_ok=True)
        write_jsonl(run / "results.jsonl", rows)
        write_json(run / "summary.json", summary)
        write_text(run / "report.md", report_markdown(summary))
    return summary


def _asr_tts(runner, name, cuts, whisper, asr_task, tts_task, can_speak, voice, speaker, samples, max_units,
             asr_max_frames, run, rows, load_audio, progress) -> dict[str, Any]:
    refs = [c.text for c in cuts]
    waves = [load_audio(c.audio, start=c.start, duration=c.duration) for c in cuts]  # [S] each
    asr = [runner.asr(w, task=asr_task, max_frames=asr_max_frames) for w in waves]
    res: dict[str, Any] = {"asr": {**wer_details(refs, asr), "task": asr_task}}
    for c, h in zip(cuts, asr):
        rows.append({"subset": name, "id": c.id, "kind": "asr", "ref": c.text, "hyp": h})
    if progress:
        print(f"[speechlm eval] {name}: discrete ASR WER {100 * res['asr']['wer']:.1f}% on {len(cuts)}", flush=True)
    if not can_speak:
        return res
    gen = [runner.tts(c.text, task=tts_task, max_units=max_units) for c in cuts]  # (wave [S'], units [U])
    heard = whisper(_audible([g[0] for g in gen]))
    tts = {**wer_details(refs, heard), "task": tts_task, "seconds": _mean([len(g[0]) / SAMPLE_RATE for g in gen]),
           "units": _mean([len(g[1]) for g in gen])}
    quality = []
    for i, (c, (w, units), h) in enumerate(zip(cuts, gen, heard)):
        row = {"subset": name, "id": c.id, "kind": "tts", "ref": c.text, "heard": h, "units": len(units),
               "seconds": round(len(w) / SAMPLE_RATE, 2)}
        if c.labels.get("speaker") == voice:  # the line's own clip is the vocoder voice reading the same text
            q = _pair_quality(waves[i], w, speaker) if len(w) else {"mcd_db": None, "speaker_sim": None,
                                                                     "quality_error": "nothing generated"}
            row.update(q)
            quality.append(q)
        if run is not None and i < samples:
            row["files"] = _sample(run / "samples" / _safe(name), _safe(c.id), {"original": waves[i], "tts": w},
                                   f"{c.text}  |  heard: {h}")
        rows.append(row)
    tts["mcd_db"] = _mean([q["mcd_db"] for q in quality])
    tts["speaker_sim"] = _mean([q["speaker_sim"] for q in quality])
    tts["reference_pairs"] = len(quality)
    res["tts"] = tts
    if progress:
        print(f"[speechlm eval] {name}: TTS WER {100 * tts['wer']:.1f}% (Whisper tiny.en), "
              f"MCD {tts['mcd_db'] if tts['mcd_db'] is None else round(tts['mcd_db'], 2)} dB over "
              f"{len(quality)} reference pairs", flush=True)
    return res


def _chain(runner, name, cuts, whisper, samples, max_frames, run, rows, load_audio, progress) -> dict[str, Any]:
    from speechlm.tasks import get_task

    task = get_task(COM_TASK)
    transcripts, answers, spoken = [], [], []
    for c in cuts:
        wave = load_audio(c.audio, start=c.start, duration=c.duration)
        r = runner.run(task, speech={"audio": runner.speech_of(wave)}, max_frames=max_frames)
        texts = r["text"]
        transcripts.append(texts[0] if len(texts) > 1 else "")
        answers.append(texts[-1] if texts else "")
        units = r["units"][-1] if r["units"] else []
        spoken.append((wave, runner.wave_of(units, r["frame_level"]) if units else np.zeros(0, np.float32)))
    heard = whisper(_audible([s[1] for s in spoken]))
    llm = [c.labels["answer"] for c in cuts]
    out = {
        "n": len(cuts),
        "transcript_wer": wer_details([c.text for c in cuts], transcripts)["wer"],
        # the text answer is the reference the spoken answer should say
        "spoken_vs_text_wer": wer_details(answers, heard)["wer"],
        "spoken_vs_text_f1": token_f1(answers, heard)["token_f1"],
        # modality gap: the LLM's reply to the question as text is the reference of the text answer
        "gap_wer": wer_details(llm, answers)["wer"],
        "gap_f1": token_f1(llm, answers)["token_f1"],
        "spoken_seconds": _mean([len(s[1]) / SAMPLE_RATE for s in spoken]),
        "empty_spoken": sum(not len(s[1]) for s in spoken),
    }
    for i, c in enumerate(cuts):
        row = {"subset": name, "id": c.id, "kind": "chain-of-modality", "question": c.text,
               "transcript": transcripts[i], "answer": answers[i], "heard": heard[i], "llm_answer": llm[i]}
        if run is not None and i < samples:
            row["files"] = _sample(run / "samples" / _safe(name), _safe(c.id),
                                   {"question": spoken[i][0], "answer": spoken[i][1]}, f"{c.text} -> {answers[i]}")
        rows.append(row)
    if progress:
        print(f"[speechlm eval] {name}: chain of modality, spoken vs text answer WER "
              f"{100 * out['spoken_vs_text_wer']:.1f}%, modality gap token F1 {out['gap_f1']:.2f}", flush=True)
    return out


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _num(v: Any, d: int = 2) -> str:
    return "-" if v is None else f"{v:.{d}f}"


def report_markdown(summary: dict[str, Any]) -> str:
    """The two tables of a run: ASR/TTS per subset, chain of modality per subset."""
    lines = [f"# Discrete speech LM: {summary['checkpoint']}", "",
             f"{summary['rendering']} rendering, pattern {summary['pattern']}, nq {summary['nq']}; text normalised "
             f"with {summary['normalizer']}; generated speech judged by {summary['judge']}.", "",
             "| subset | n | discrete ASR WER % | TTS WER % | TTS s | MCD dB | speaker sim | pairs |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in summary["subsets"].items():
        a, t = r.get("asr", {}), r.get("tts", {})
        if a:
            lines.append(f"| {name} | {a.get('n', '-')} | {_pct(a.get('wer'))} | {_pct(t.get('wer'))} | "
                         f"{_num(t.get('seconds'))} | {_num(t.get('mcd_db'))} | {_num(t.get('speaker_sim'))} | "
                         f"{t.get('reference_pairs', '-')} |")
    com = {k: r["chain_of_modality"] for k, r in summary["subsets"].items() if "chain_of_modality" in r}
    if com:
        lines += ["", "Chain of modality: transcript vs question; spoken answer (as Whisper hears it) vs the model's "
                  "own text answer; modality gap: text answer vs the LLM's reply to the question as text.", "",
                  "| subset | n | transcript WER % | spoken vs text WER % | spoken vs text F1 | gap WER % | gap F1 | "
                  "spoken s | empty |", "|---|---|---|---|---|---|---|---|---|"]
        for name, c in com.items():
            lines.append(f"| {name} | {c['n']} | {_pct(c['transcript_wer'])} | {_pct(c['spoken_vs_text_wer'])} | "
                         f"{_num(c['spoken_vs_text_f1'])} | {_pct(c['gap_wer'])} | {_num(c['gap_f1'])} | "
                         f"{_num(c['spoken_seconds'])} | {c['empty_spoken']} |")
    return "\n".join(lines) + "\n"


def read_results(path: str | Path) -> list[dict]:
    """The rows of a run's results.jsonl."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
