"""``speechlm demo --recipe units``: speech tokens and the way back to sound, end to end on the CPU.

1. data: one Debian voice for the vocoder (flite slt), which the tokenizer is fitted on too (``demo.units_fit:
   voice``; ``mixed``: many voices plus the shared real training speakers), held-out synthetic sentences in other
   voices, and the held-out real RAVDESS and spoken-digit speakers;
2. fit the recipe's tokenizer (``units`` section) and train its unit vocoder (``vocoder`` section), each timed;
3. the resynthesis ladder (:mod:`speechlm.evaluation.resynthesis`) on the held-out subsets, with WAVs and
   spectrograms, and the issue's targets checked against the measured figures.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from speechlm.utils import real_data_root, write_json, write_text

#: Real subsets of ../shared/data/real that have English reference text for the ladder.
LADDER_CORPORA = ("ravdess", "fsdd")


def _sample(cuts: list, k: int, seed: int) -> list:
    if k <= 0 or len(cuts) <= k:
        return cuts
    return sorted(random.Random(seed).sample(cuts, k), key=lambda c: c.id)


def demo_speech_tokens(recipe: str, out: str, synthetic: int, real_per_source: int, eval_per_subset: int,
                       seed: int = 0) -> dict:
    """Build data, fit the tokenizer, train the vocoder and print the resynthesis ladder (see module doc)."""
    from speechlm.config import load_recipe
    from speechlm.corpora.real import prepare_real_splits
    from speechlm.corpora.speech_tokens import build_voice_corpus, prepare_units, prepare_vocoder
    from speechlm.corpora.synth import build_synthetic_corpus
    from speechlm.data.manifest import read_manifest, write_manifest
    from speechlm.evaluation.resynthesis import ladder_markdown, run_ladder
    from speechlm.inference.speech_tokens import load_speech_tokens

    cfg = load_recipe(recipe)
    if cfg.demo.units_fit not in ("mixed", "voice"):  # refused before any data is built
        raise ValueError(f"recipe {recipe}: demo.units_fit must be mixed or voice, not {cfg.demo.units_fit!r}")
    run = Path(out)
    data = run / "data"
    t0 = time.time()
    timing: dict[str, float] = {}
    print(f"[speechlm demo] 1/4 data -> {data}", flush=True)
    voice = build_voice_corpus(data / "voice", n=synthetic, seed=seed + 7)  # its own seed: ids differ from "voices"
    many = read_manifest(build_synthetic_corpus(data / "voices", n_utterances=synthetic, seed=seed, text_source="mixed"))
    # held-out sentences (no random word strings: the judge, Whisper tiny.en, should understand the original)
    held = read_manifest(build_synthetic_corpus(data / "heldout", n_utterances=max(eval_per_subset, 10), seed=seed + 1000,
                                                text_source="mixed", random_word_share=0.0))
    fit_cuts = list(many) + read_manifest(voice)
    # held-out sentences in the vocoder's own voice: SpeechGPT's case, where the LM generates units in that voice
    own = read_manifest(build_voice_corpus(data / "voice_heldout", n=max(eval_per_subset, 10), seed=seed + 2000))
    subsets = {"held-out sentences, the vocoder's voice": _sample(own, eval_per_subset, seed),
               "synthetic (held-out voices and text)": _sample(held, eval_per_subset, seed)}
    root = real_data_root()
    if root is not None:
        splits = prepare_real_splits(root, data / "real", seed=seed, max_train_per_source=real_per_source)
        fit_cuts += [c for c in read_manifest(splits["train"]) if c.labels.get("language", "en") == "en"]
        test = read_manifest(splits["test"])
        for corpus in LADDER_CORPORA:
            cuts = [c for c in test if c.labels.get("corpus", c.id.split("/")[0]) == corpus and c.text.strip()]
            if cuts:
                subsets[f"held-out {corpus}"] = _sample(cuts, eval_per_subset, seed)
    else:
        print("[speechlm demo] ../shared/data/real not found: scoring synthetic speech only", flush=True)
    if cfg.demo.units_fit == "voice":  # the vocoder's voice alone (README: FSDD units 165% -> 75% WER, one arm)
        fit_cuts = read_manifest(voice)
    write_manifest(data / "fit.jsonl", fit_cuts)
    timing["data_min"] = (time.time() - t0) / 60

    tok_dir = run / "tokenizer"
    done = _finished(tok_dir, cfg)
    if "units" in done:
        print(f"[speechlm demo] 2/4 reusing the tokenizer in {tok_dir} (same recipe section; fitted in "
              f"{done['units']['fit_seconds'] / 60:.1f} min)", flush=True)
    else:
        print(f"[speechlm demo] 2/4 fitting the `{cfg.units.kind}` tokenizer (K={cfg.units.k}, layer {cfg.units.layer}) "
              f"on {len(fit_cuts)} clips -> {tok_dir}", flush=True)
        prepare_units(data / "fit.jsonl", tok_dir, cfg.units)
        done = _finished(tok_dir, cfg)
    if "vocoder" in done:
        print(f"[speechlm demo] 3/4 reusing the unit vocoder in {tok_dir / 'vocoder'}", flush=True)
    else:
        print(f"[speechlm demo] 3/4 training the unit vocoder ({cfg.vocoder.backend}, at most {cfg.vocoder.minutes:g} min)", flush=True)
        prepare_vocoder(voice, tok_dir, cfg.vocoder)
        done = _finished(tok_dir, cfg)
    # fit / train times as prepare.json recorded them, so a re-run that reuses them reports the same budget
    timing["tokenizer_min"] = done["units"]["fit_seconds"] / 60
    timing["tokenize_min"] = done["units"]["tokenize_seconds"] / 60
    timing["vocoder_min"] = (done["vocoder"]["tokenize_seconds"] + done["vocoder"]["train_seconds"]) / 60

    print("[speechlm demo] 4/4 resynthesis ladder on held-out clips", flush=True)
    t1 = time.time()
    tokenizer, vocoder = load_speech_tokens(tok_dir)
    result = run_ladder(tokenizer, vocoder, subsets, run / "ladder", backend=cfg.vocoder.backend)
    timing["ladder_min"] = (time.time() - t1) / 60
    timing["minutes_total"] = (time.time() - t0) / 60
    result["targets"] = check_targets(result)
    result["demo"] = {**{k: round(v, 2) for k, v in timing.items()}, "fit_clips": len(fit_cuts),
                      "eval_clips": {k: len(v) for k, v in subsets.items()}, "recipe": cfg.name}
    write_json(run / "summary.json", result)
    report = ladder_markdown(result) + "\n" + targets_markdown(result["targets"], timing)
    write_text(run / "report.md", report)
    print(report, flush=True)
    print(f"[speechlm demo] done in {timing['minutes_total']:.1f} min. Run folder: {run} (report.md, summary.json, "
          "ladder/samples/*.wav|png, tokenizer/)", flush=True)
    return result


def _finished(tok_dir: Path, cfg) -> dict:
    """The parts of ``tok_dir/prepare.json`` that were made with this recipe's settings (and whose files exist)."""
    import dataclasses
    import json

    path = tok_dir / "prepare.json"
    log = json.loads(path.read_text()) if path.exists() else {}
    done = {}
    if log.get("units", {}).get("config") == dataclasses.asdict(cfg.units) and (tok_dir / "tokenizer.json").exists():
        done["units"] = log["units"]
        if log.get("vocoder", {}).get("config") == dataclasses.asdict(cfg.vocoder) and (tok_dir / "vocoder").exists():
            done["vocoder"] = log["vocoder"]
    return done


def check_targets(result: dict) -> dict:
    """Issue 10's targets per subset: copy-synthesis WER within 2 points of the original, unit-resynthesis WER
    at most 2x copy-synthesis WER (both with predicted and with true durations)."""
    checks = {}
    for subset, rungs in result["subsets"].items():
        orig, copy = rungs["original"]["wer"], rungs.get("copy-world", {}).get("wer")
        c = {"original_wer": orig, "copy_wer": copy}
        if orig > 0.5:  # the judge fails on the original itself: a bound of 2x copy is then no bound at all
            c["not_scored"] = f"Whisper tiny.en's WER on the original audio is {100 * orig:.0f}%"
            checks[subset] = c
            continue
        if copy is not None:
            c["copy_within_2_points"] = copy - orig <= 0.02
        for name in ("units", "units+dur"):
            if name in rungs and copy is not None:
                c[f"{name}_wer"] = rungs[name]["wer"]
                c[f"{name}_at_most_2x_copy"] = rungs[name]["wer"] <= 2 * max(copy, 0.0)
        checks[subset] = c
    return checks


def targets_markdown(checks: dict, timing: dict) -> str:
    lines = ["## Targets (issue 10)", ""]
    for subset, c in checks.items():
        if "not_scored" in c:
            lines.append(f"- {subset}: not scored ({c['not_scored']}: the judge cannot tell)")
            continue
        parts = [f"original {100 * c['original_wer']:.1f}%"]
        if c.get("copy_wer") is not None:
            parts.append(f"copy-synthesis {100 * c['copy_wer']:.1f}% ({'met' if c['copy_within_2_points'] else 'missed'}: within 2 points)")
        for name in ("units", "units+dur"):
            if f"{name}_wer" in c:
                parts.append(f"{name} {100 * c[f'{name}_wer']:.1f}% ({'met' if c[f'{name}_at_most_2x_copy'] else 'missed'}: <= 2x copy)")
        lines.append(f"- {subset}: " + "; ".join(parts))
    fit_train = timing.get("tokenizer_min", 0) + timing.get("vocoder_min", 0)
    lines.append(f"- tokenizer fit + vocoder training: {fit_train:.1f} CPU minutes "
                 f"({'met' if fit_train <= 20 else 'missed'}: at most 20)")
    return "\n".join(lines) + "\n"
