"""The resynthesis ladder (``speechlm resynth``): how much of the speech survives each step of the discrete path.

Each clip goes up the rungs, and every rung's audio is transcribed by Whisper tiny.en and scored against the
reference text (ESPnet's ``speech_edit_distance``, fairseq's ASR-BLEU idea) and against the original audio
(mel-cepstral distortion with DTW, F0 RMSE, V/UV error, STOI, speaker similarity):

1. ``original``           the clip itself (what the ASR judge makes of real speech: the floor of every rung);
2. ``copy-world``         WORLD analysis -> synthesis of the clip (the vocoder back end's topline, no learning);
   ``copy-griffinlim``    Griffin-Lim from the clip's own log-mel (the other back end's topline);
3. ``units``              units -> unit vocoder with the clip's true durations (the deduplicated run lengths);
   ``units+dur``          units -> unit vocoder with predicted durations (SpeechGPT's setting: units alone);
4. ``acoustic``           acoustic tokens -> decoded log-mel -> Griffin-Lim (when the tokenizer has streams).

The unit vocoder speaks in its one training voice, so speaker similarity of rung 3 measures the voice change,
not a fault; WER is what the ladder is for.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from speechlm.utils import markdown_table, write_json, write_jsonl, write_text

RUNGS = ("original", "copy-world", "copy-griffinlim", "units", "units+dur", "acoustic")
QUALITY = ("mcd_db", "f0_rmse_hz", "vuv_error", "stoi", "speaker_sim")


def rung_audio(tokenizer: Any, vocoder: Any, wave: np.ndarray, backend: str = "world",
               rungs: tuple[str, ...] = RUNGS) -> dict[str, np.ndarray]:
    """The audio of each of ``rungs`` for one 16-kHz clip (rungs the tokenizer/vocoder cannot make are left out)."""
    from speechlm.tokenizers.dedup import unit_runs
    from speechlm.vocoders import griffinlim, world

    out = {"original": wave}
    if "copy-world" in rungs:
        out["copy-world"] = world.copy_synthesis(wave)
    if "copy-griffinlim" in rungs:
        out["copy-griffinlim"] = griffinlim.copy_synthesis(wave)
    if not {"units", "units+dur", "acoustic"} & set(rungs):
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
    seq = tokenizer.encode(wave)
    if vocoder is not None and {"units", "units+dur"} & set(rungs):
        units, durations = unit_runs(tokenizer, seq)
        if "units" in rungs:
            out["units"] = vocoder.synthesize(units, durations, backend=backend)
        if "units+dur" in rungs:
            out["units+dur"] = vocoder.synthesize(units, None, backend=backend)
    if getattr(seq, "streams", None) is not None and "acoustic" in rungs:
        decoded = tokenizer.decode(seq)  # log-mel [2F, 80] (residual k-means) or a wave (neural codec)
        out["acoustic"] = griffinlim.griffin_lim(decoded) if np.asarray(decoded).ndim == 2 else decoded
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def run_ladder(tokenizer: Any, vocoder: Any, subsets: dict[str, list], out: Path, backend: str = "world",
               samples: int = 2, asr: Callable[[list[np.ndarray]], list[str]] | None = None,
               progress: bool = True, rungs: tuple[str, ...] = RUNGS) -> dict[str, Any]:
    """Score each of ``rungs`` (default all; ``original`` always) on every subset; write ``ladder.json``,
    ``ladder.md``, ``results.jsonl`` and, for the first ``samples`` clips of each subset, each rung's WAV and a
    spectrogram PNG under ``out/samples``."""
    from tqdm.auto import tqdm

    from speechlm.data.audio import load_audio, write_audio
    from speechlm.evaluation.speech_metrics import spectrogram_png
    from speechlm.evaluation.wer import utterance_wer, wer_details

    if asr is None:
        from speechlm.inference.transcribe import WhisperBaseline

        asr = WhisperBaseline()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    timing = {"synthesis_s": 0.0, "asr_s": 0.0, "metrics_s": 0.0}
    for subset, cuts in subsets.items():
        audio: dict[str, list[np.ndarray]] = {}
        for i, cut in enumerate(tqdm(cuts, desc=f"resynthesis {subset}", unit="clip", disable=not progress)):
            t = time.time()
            wave = load_audio(cut.audio, start=cut.start, duration=cut.duration)
            made = rung_audio(tokenizer, vocoder, wave, backend, rungs)
            timing["synthesis_s"] += time.time() - t
            for name, w in made.items():
                audio.setdefault(name, [None] * len(cuts))[i] = w
            if i < samples:
                folder = out / "samples" / subset.replace(" ", "_").replace("/", "_")
                for name, w in made.items():
                    write_audio(folder / f"{i:02d}-{name}.wav", w, 16000)
                spectrogram_png(made, folder / f"{i:02d}.png", title=f"{subset}: {cut.text[:60]}")
        refs = [c.text for c in cuts]
        summary[subset] = {}
        for name in RUNGS:
            if name not in audio:
                continue
            t = time.time()
            hyps = asr(audio[name])
            timing["asr_s"] += time.time() - t
            t = time.time()
            # dio F0 (not Harvest): ~10x cheaper per pair, and the ladder compares rungs measured the same way
            quality = [_quality(audio["original"][i], audio[name][i]) if name != "original" else {}
                       for i in range(len(cuts))]
            timing["metrics_s"] += time.time() - t
            for i, cut in enumerate(cuts):
                rows.append({"subset": subset, "rung": name, "id": cut.id, "ref": cut.text, "hyp": hyps[i],
                             "wer": utterance_wer(cut.text, hyps[i]), **quality[i]})
            entry: dict[str, Any] = {"wer": wer_details(refs, hyps)["wer"], "n": len(cuts)}
            too_short = sum(1 for r in quality if r.get("too_short"))
            if too_short:  # scored for WER (Whisper hears next to nothing), left out of the signal metrics
                entry["too_short"] = too_short
            for q in QUALITY:
                vals = [r[q] for r in quality if r.get(q) is not None and np.isfinite(r[q])]
                entry[q] = float(np.mean(vals)) if vals else None
            summary[subset][name] = entry
    result = {"backend": backend, "tokenizer": getattr(tokenizer, "layout", {}), "tokenizer_hash": tokenizer.hash,
              "subsets": summary, "seconds": {k: round(v, 1) for k, v in timing.items()}}
    write_jsonl(out / "results.jsonl", rows)
    write_json(out / "ladder.json", result)
    write_text(out / "ladder.md", ladder_markdown(result))
    return result


def _quality(ref: np.ndarray, syn: np.ndarray) -> dict[str, Any]:
    """speech_quality of one pair; a resynthesis shorter than the metrics' minimum (a vocoder that predicted a few
    frames for a short digit) has no signal metrics, marked ``too_short``, instead of stopping the whole ladder."""
    from speechlm.evaluation.speech_metrics import MIN_SECONDS, SAMPLE_RATE, speech_quality

    if min(len(ref), len(syn)) < MIN_SECONDS * SAMPLE_RATE:
        return {q: None for q in QUALITY} | {"too_short": True}
    return speech_quality(ref, syn, f0_method="dio")


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}" if pct else f"{v:.2f}"


def ladder_markdown(result: dict[str, Any]) -> str:
    """The ladder as a Markdown table: one row per subset and rung."""
    rows = []
    for subset, rungs in result["subsets"].items():
        for name, e in rungs.items():
            rows.append([subset, name, e["n"], _fmt(e["wer"], pct=True), _fmt(e.get("mcd_db")), _fmt(e.get("f0_rmse_hz")),
                         _fmt(e.get("vuv_error"), pct=True), _fmt(e.get("stoi")), _fmt(e.get("speaker_sim"))])
    head = ["subset", "rung", "clips", "WER %", "MCD dB", "F0 RMSE Hz", "V/UV err %", "STOI", "speaker sim"]
    return (f"# Resynthesis ladder (back end `{result['backend']}`, tokenizer {result['tokenizer_hash']})\n\n"
            + markdown_table(head, rows, align=["l", "l"] + ["r"] * 7) + "\n")


def resynth(tokenizer: str, manifest: list[str] = (), out: str = "", n: int = 30, backend: str = "world",
            samples: int = 2, seed: int = 0, rungs: str = "") -> dict:
    """Score the resynthesis ladder of a tokenizer folder (its units, its vocoder) on held-out manifests.

    tokenizer: tokenizer folder from `speechlm prepare units` (with its vocoder from `speechlm prepare vocoder`).
    manifest: manifests with reference text, one subset each (named by file stem).
    out: output folder (default TOKENIZER/ladder).
    n: clips per manifest, sampled with the seed (0: all).
    backend: vocoder back end: world or griffinlim.
    samples: clips per subset whose WAVs and spectrogram PNGs are kept.
    seed: seed of the clip sample.
    rungs: the rungs to score, comma-separated (default all): original, copy-world, copy-griffinlim, units,
    units+dur, acoustic.
    """
    import random

    from speechlm.inference.speech_tokens import load_speech_tokens
    from speechlm.data.manifest import read_manifest

    if not manifest:
        raise ValueError("usage: speechlm resynth TOKENIZER_DIR --manifest test.jsonl [more.jsonl ...]")
    chosen = tuple(r.strip() for r in rungs.split(",") if r.strip()) or RUNGS
    unknown = [r for r in chosen if r not in RUNGS]
    if unknown:
        raise ValueError(f"--rungs: unknown {unknown}; choose from {', '.join(RUNGS)}")
    tok, voc = load_speech_tokens(tokenizer)
    subsets = {}
    for m in manifest:
        cuts = [c for c in read_manifest(m) if c.text.strip()]
        if not cuts:
            raise ValueError(f"{m}: no line has a non-empty 'text' field to score against")
        if n and len(cuts) > n:
            cuts = random.Random(seed).sample(cuts, n)
        subsets[Path(m).stem] = cuts
    result = run_ladder(tok, voc, subsets, Path(out or Path(tokenizer) / "ladder"), backend=backend, samples=samples,
                        rungs=chosen)
    print(ladder_markdown(result))
    return result


resynth.cli_positional = ("tokenizer",)
