"""``speechlm demo``: the main job on embedded defaults, CPU only.

1. builds a training corpus: synthetic speech from many male and female Debian voices (espeak-ng, flite;
   varied rate and pitch; with the `demo` recipe, broad-vocabulary text and room/noise/speed augmentation) plus
   the training speakers of the shared real speech, when present (and, with ``demo.pseudo_label``, its
   untranscribed English clips with Whisper tiny.en's transcripts); caches the frozen encoder's outputs when the
   recipe says so (``demo.features``), timed apart;
2. joins the real Whisper tiny.en encoder and SmolLM2-135M-Instruct with a fresh adapter and LoRA, and
   trains them for at most ``minutes`` with the recipe's stage table (`demo`: CTC on the LLM's embeddings
   alone, then LM + CTC);
3. scores, on held-out real clips (speakers never seen in training): the trained model, its greedy CTC
   transcript (a model with a CTC head), the same model untrained, and Whisper tiny.en's own decoder; prints
   the table and writes everything to one run folder, with data, feature, training and eval minutes.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from speechlm.utils import real_data_root, write_json


def _llm_alone(model, task):
    """The trained model's transcript without joint CTC/LLM decoding, to show what the CTC prefix score adds."""
    from speechlm.inference.transcribe import Transcriber

    tr = Transcriber(model, task, max_new_tokens=64)

    def decode(waves):
        weight, model.ctc_decode_weight = model.ctc_decode_weight, 0.0
        try:
            return tr(waves)
        finally:
            model.ctc_decode_weight = weight

    return decode


def _sample(cuts: list, k: int, seed: int) -> list:
    if k <= 0 or len(cuts) <= k:
        return cuts
    return sorted(random.Random(seed).sample(cuts, k), key=lambda c: c.id)


def demo(out: str = "", minutes: float = -1, steps: int = -1, synthetic: int = -1, real_per_source: int = -1,
         eval_per_subset: int = -1, recipe: str = "demo", seed: int = 0) -> dict:
    """Build a corpus, train a speech LM on real backbones (or speech tokens: --recipe units), and score it honestly.

    out: run folder (data, checkpoints, logs, loss.png, report.md, summary.json); default runs/RECIPE.
    minutes: training time limit (the loop stops and saves when it is reached); -1: the recipe's train.max_minutes.
    steps: optimizer steps planned for the learning-rate schedule; -1: the recipe's train.max_steps (a recipe with a
    stage table keeps its own; a discrete recipe scales its stage table to its demo.steps, else 400).
    synthetic: synthetic utterances to synthesize for training; -1: the recipe's demo.synthetic.
    real_per_source: cap on training clips per real source (0: no cap); -1: the recipe's demo.real_per_source.
    eval_per_subset: held-out clips scored per subset or task (0: all); -1: the recipe's demo.eval_per_subset.
    recipe: training recipe (`speechlm ls recipes`); a multi-task recipe (osum-tiny) runs the ASR+X demo and per-task report; `units` fits speech tokens and a vocoder and scores the resynthesis ladder; `speechgpt-tiny` / `espnet-tiny` train a discrete speech LM; `whisper-anchor` trains the Whisper-decoder anchor on the demo's data.
    seed: seed for data, splits and training.
    """
    from speechlm.config import load_recipe

    recipe_cfg = load_recipe(recipe)
    d = recipe_cfg.demo
    out = out or f"runs/{recipe_cfg.name}"
    minutes = recipe_cfg.train.max_minutes if minutes < 0 else minutes
    steps = recipe_cfg.train.max_steps if steps < 0 else steps
    synthetic = d.synthetic if synthetic < 0 else synthetic
    real_per_source = d.real_per_source if real_per_source < 0 else real_per_source
    eval_per_subset = d.eval_per_subset if eval_per_subset < 0 else eval_per_subset
    if d.kind == "speech-tokens":
        from speechlm.demos.speech_tokens import demo_speech_tokens

        return demo_speech_tokens(recipe, out, synthetic, real_per_source, eval_per_subset, seed)
    if d.kind == "discrete":  # speechgpt-tiny, espnet-tiny: speechlm.demos.discrete (its own training budget)
        from speechlm.demos.discrete import demo_discrete

        return demo_discrete(recipe, out, None if minutes == recipe_cfg.train.max_minutes else minutes,
                             -1 if steps == recipe_cfg.train.max_steps else steps, synthetic, real_per_source,
                             eval_per_subset, seed)
    if d.kind != "speechlm":
        raise ValueError(f"recipe {recipe}: demo.kind must be speechlm, speech-tokens or discrete, not {d.kind!r}")
    from speechlm.tasks.mixture import parse_stages

    stages = parse_stages(recipe_cfg.train.stages, recipe_cfg.train.max_steps)
    if recipe_cfg.data.tasks or {t.split(":")[0] for s in stages for t in s.tasks} - {"asr"}:  # a multi-task recipe: ASR+X data, curriculum, per-task report
        from speechlm.demos.multitask import demo_tasks

        return demo_tasks(recipe, out, minutes, synthetic, real_per_source, eval_per_subset, seed)
    from speechlm.data.manifest import read_manifest, write_manifest
    from speechlm.corpora.real import prepare_real_splits
    from speechlm.corpora.synth import build_synthetic_corpus
    from speechlm.evaluation.asr import score_systems
    from speechlm.inference.transcribe import CTCTranscriber, Transcriber, WhisperBaseline
    from speechlm.model.builders import build_speechlm
    from speechlm.tasks import get_task
    from speechlm.checkpoint import load_checkpoint
    from speechlm.training.loop import train

    t0 = time.time()
    run = Path(out)
    data = run / "data"
    print(f"[speechlm demo] 1/3 data -> {data}", flush=True)
    synth = read_manifest(build_synthetic_corpus(data / "synthetic", n_utterances=synthetic, seed=seed, text_source=d.text_source,
                                                 random_word_share=d.random_word_share, augment=d.augment,
                                                 neural_share=d.neural_share))
    rng = random.Random(seed)
    rng.shuffle(synth)
    n_val = min(40, len(synth) // 10)
    val, train_cuts = synth[:n_val], synth[n_val:]
    subsets: dict[str, list] = {}
    root = real_data_root()
    if root is not None:
        splits = prepare_real_splits(root, data / "real", seed=seed, max_train_per_source=real_per_source)
        from speechlm.inference.long_audio import trim_to_speech

        # with model.trim_silence the model hears clips cut to their speech, in training as in inference
        trim = trim_to_speech if recipe_cfg.model.trim_silence else list
        train_cuts += trim(read_manifest(splits["train"]))
        test = read_manifest(splits["test"])
        for corpus in sorted({c.labels.get("corpus", c.id.split("/")[0]) for c in test}):
            subsets[f"held-out {corpus}"] = _sample([c for c in test if c.labels.get("corpus", c.id.split("/")[0]) == corpus], eval_per_subset, seed)
        subsets["open-vocabulary (asr_en)"] = _sample(read_manifest(splits["test_open"]), eval_per_subset, seed)
        if d.pseudo_label:  # LibriSpeech clips without text, transcribed by Whisper tiny.en (cached in data/real)
            from speechlm.corpora.pseudo_label import pseudo_label_manifest

            pseudo = read_manifest(pseudo_label_manifest(root / "manifest.jsonl", data / "real" / "pseudo.jsonl",
                                                         id_prefix="librispeech/"))
            pseudo = trim(pseudo)  # before the copies, which then start and end at the speech too
            print(f"[speechlm demo] {len(pseudo)} real clips pseudo-labelled by Whisper tiny.en "
                  f"({sum(c.duration for c in pseudo) / 60:.1f} min)", flush=True)
            train_cuts += pseudo
            if d.real_copies > 0:  # speed-perturbed (+ room, noise) copies of the few real open-English clips
                from speechlm.corpora.copies import augmented_copies

                copies = augmented_copies(pseudo, data / "real" / "copies", copies=d.real_copies, seed=seed)
                print(f"[speechlm demo] {len(copies)} augmented copies of them ({sum(c.duration for c in copies) / 60:.1f} min)",
                      flush=True)
                train_cuts += copies
    else:
        print("[speechlm demo] ../shared/data/real not found: training on synthetic speech only", flush=True)
    subsets["synthetic (held-out)"] = val
    write_manifest(data / "train.jsonl", train_cuts)
    write_manifest(data / "val.jsonl", val)
    print(f"[speechlm demo] {len(train_cuts)} training clips ({sum(c.duration for c in train_cuts) / 60:.1f} min of audio); "
          f"eval subsets: {', '.join(f'{k} ({len(v)})' for k, v in subsets.items())}", flush=True)
    timing = {"data_min": (time.time() - t0) / 60}
    train_manifest = data / "train.jsonl"
    if d.features:
        from speechlm.model.features import cache_features

        t1 = time.time()
        top = recipe_cfg.model.train_encoder_layers  # trained top layers run at every step: cache below them
        print("[speechlm demo] caching the frozen encoder's outputs for the training clips"
              + (f" (below its top {top} layer(s), which train)" if top else ""), flush=True)
        train_manifest = cache_features(train_manifest, recipe_cfg.model.encoder, data / "features", below_top=top)
        timing["features_min"] = (time.time() - t1) / 60

    print(f"[speechlm demo] 2/3 training {steps} steps" + (f", at most {minutes:g} min" if minutes else ""), flush=True)
    cfg = load_recipe(recipe, [f"data.train_manifest={train_manifest}", f"data.val_manifest={data / 'val.jsonl'}",
                               f"train.out_dir={run}", f"train.max_minutes={minutes}", f"train.max_steps={steps}",
                               f"train.seed={seed}"])
    t1 = time.time()
    ckpt = train(cfg)
    timing["train_min"] = (time.time() - t1) / 60

    print("[speechlm demo] 3/3 evaluation on held-out clips", flush=True)
    model, cfg, _ = load_checkpoint(ckpt)
    task = get_task(cfg.data.task)
    systems = {
        "speechlm (trained)": Transcriber(model, task, max_new_tokens=64),
        **({"speechlm greedy CTC (no LLM)": CTCTranscriber(model)} if model.ctc is not None else {}),
        **({"speechlm (trained), LLM alone (ctc_decode_weight 0)": _llm_alone(model, task)} if model.ctc_decode_weight > 0 else {}),
        "speechlm (untrained)": Transcriber(build_speechlm(cfg.model, seed=seed), task, max_new_tokens=64),
        "whisper tiny.en decoder": WhisperBaseline(),
    }
    summary = score_systems(systems, subsets, task.name, task.metric, run, title="Demo: WER (%) on held-out clips, lower is better")
    timing["eval_min"] = (time.time() - t1) / 60 - timing["train_min"]
    summary["demo"] = {"minutes_total": (time.time() - t0) / 60, **timing, "train_clips": len(train_cuts), "checkpoint": str(ckpt),
                       "eval_clips": {k: len(v) for k, v in subsets.items()}}
    write_json(run / "demo.json", summary["demo"])
    print(f"[speechlm demo] done in {(time.time() - t0) / 60:.1f} min. Run folder: {run} "
          f"(report.md, summary.json, results.jsonl, loss.png, checkpoints/)", flush=True)
    return summary
