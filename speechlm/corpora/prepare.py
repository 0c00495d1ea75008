"""``speechlm prepare CORPUS SRC OUT``: write the toolkit's JSONL manifests for a corpus, then optionally
shard them and cache frozen-encoder features; ``speechlm prepare --check MANIFEST`` audits a manifest.

Corpus recipes are plain functions in the ``CORPORA`` registry (``speechlm ls corpora``); each writes
manifests into ``OUT`` in numbered stages that are safe to re-run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from speechlm.utils import real_data_root


def _synthetic(src: Path | None, out: Path, workers: int = 2, progress: bool = True, n: int = 200, seed: int = 0) -> dict[str, Path]:
    from speechlm.corpora.synth import build_synthetic_corpus

    return {"train": build_synthetic_corpus(out, n_utterances=n, seed=seed, workers=workers, progress=progress)}


def _synthetic_broad(src: Path | None, out: Path, workers: int = 2, progress: bool = True, n: int = 200, seed: int = 0) -> dict[str, Path]:
    from speechlm.corpora.synth import build_synthetic_corpus

    return {"train": build_synthetic_corpus(out, n_utterances=n, seed=seed, workers=workers, progress=progress,
                                            text_source="mixed", augment=True)}


def _pseudo(src: Path | None, out: Path, workers: int = 2, progress: bool = True, n: int = 0, seed: int = 0) -> dict[str, Path]:
    from speechlm.corpora.pseudo_label import pseudo_label_manifest

    root = src or real_data_root()
    if root is None:
        raise FileNotFoundError("real data folder not found: pass SRC (a manifest, or the folder with manifest.jsonl) "
                                "or set SPEECHLM_REAL_DATA")
    manifest = root / "manifest.jsonl" if root.is_dir() else root
    return {"pseudo": pseudo_label_manifest(manifest, out / "pseudo.jsonl", limit=n or None, progress=progress)}


def _multitask(src: Path | None, out: Path, workers: int = 2, progress: bool = True, n: int = 400, seed: int = 0) -> dict[str, Path]:
    from speechlm.corpora.synth_tasks import build_multitask_corpus

    return {"train": build_multitask_corpus(out, n_utterances=n, seed=seed, workers=workers, progress=progress)}


def _real(src: Path | None, out: Path, workers: int = 2, progress: bool = True, n: int = 0, seed: int = 0) -> dict[str, Path]:
    from speechlm.corpora.real import prepare_real_splits

    root = src or real_data_root()
    if root is None:
        raise FileNotFoundError("real data folder not found: pass SRC (the folder with manifest.jsonl) or set SPEECHLM_REAL_DATA")
    return prepare_real_splits(root, out, seed=seed, max_train_per_source=n or None)


def _real_multitask(src: Path | None, out: Path, workers: int = 2, progress: bool = True, n: int = 0, seed: int = 0) -> dict[str, Path]:
    from speechlm.corpora.real_tasks import prepare_real_multitask

    root = src or real_data_root()
    if root is None:
        raise FileNotFoundError("real data folder not found: pass SRC (the folder with manifest.jsonl) or set SPEECHLM_REAL_DATA")
    paths = prepare_real_multitask(root, out, seed=seed, max_per_source=n or None)
    return {"train": paths["train"], "test": paths["test"]}


def _voice(src: Path | None, out: Path, workers: int = 2, progress: bool = True, n: int = 400, seed: int = 0) -> dict[str, Path]:
    from speechlm.corpora.speech_tokens import build_voice_corpus

    return {"voice": build_voice_corpus(out, n=n, seed=seed, workers=workers, progress=progress)}


def _spoken_chat(src: Path | None, out: Path, workers: int = 2, progress: bool = True, n: int = 0, seed: int = 0) -> dict[str, Path]:
    from speechlm.corpora.spoken_chat import build_spoken_chat

    return build_spoken_chat(out, n=n, seed=seed, workers=workers, progress=progress)


def _manifest(src: Path | None, out: Path, workers: int = 2, progress: bool = True, n: int = 0, seed: int = 0) -> dict[str, Path]:
    """An existing manifest: validated and rewritten with absolute paths (then sharded or featurized)."""
    from speechlm.data.manifest import validate, write_manifest

    if src is None or not src.is_file():
        raise FileNotFoundError(f"manifest corpus needs SRC = an existing JSONL manifest, got {src}")
    good = validate(src).good
    path = out / src.name
    write_manifest(path, good)
    return {src.stem: path}


# Synthetic and shared-real corpora need extra arguments (n, seed); the corpus recipes of
# speechlm.corpora take (src, out, workers, progress).
GENERATED: dict[str, Callable[..., dict[str, Path]]] = {"synthetic": _synthetic, "synthetic-broad": _synthetic_broad,
                                                         "multitask": _multitask, "real": _real,
                                                         "real-multitask": _real_multitask, "pseudo": _pseudo,
                                                         "manifest": _manifest, "voice": _voice,
                                                         "spoken-chat": _spoken_chat}


GENERATED_DOCS: dict[str, str] = {
    "synthetic": "Debian TTS voices (espeak-ng, flite), labelled gender/rate/pitch",
    "synthetic-broad": "as synthetic, with unguessable broad-vocabulary text (random words, faker) and speed/room/noise augmentation",
    "pseudo": "Whisper tiny.en transcripts for the English clips without text (default: the shared real folder)",
    "multitask": "TTS corpus for ASR+X: style classes, exact word timestamps, questions, intents, keywords",
    "real-multitask": "the shared real speech with every task label, split by speaker (device, folder or clip where no speaker)",
    "real": "the shared real-speech folder, split by speaker",
    "manifest": "an existing JSONL manifest (validated; then --shards / --features)",
    "voice": "one Debian voice (flite slt) reading broad-vocabulary sentences: what the unit vocoder learns to speak",
    "spoken-chat": "spoken questions in Debian voices, SmolLM2's own text answers, spoken in the vocoder's voice (chain-of-modality data)",
    "units": "not a corpus: fit the speech tokenizer of --recipe on the manifest SRC into OUT and tokenize SRC",
    "vocoder": "not a corpus: train the unit vocoder on the one-voice manifest SRC, into the tokenizer folder OUT",
}
"""One line per generated corpus (``speechlm ls corpora``)."""


def corpora() -> dict[str, Callable[..., dict[str, Path]]]:
    """All corpus recipes by name: generated ones plus the corpus layouts of speechlm.corpora."""
    from speechlm.corpora import CORPORA

    return {**GENERATED, **CORPORA}


def prepare(corpus: str = "", src: str = "", out: str = "", check: str = "", shards: int = 0, features: bool = False,
            encoder: str = "whisper-tiny.en", below_top: int = 0, answer_questions: bool = False, llm: str = "smollm2-135m-instruct",
            n: int = 200, seed: int = 0, workers: int = 2, recipe: str = "units", set: list[str] = ()) -> int:
    """Prepare a corpus into JSONL manifests (`speechlm ls corpora`), or check a manifest with --check;
    `prepare units MANIFEST OUT` fits a speech tokenizer, `prepare vocoder MANIFEST TOKENIZER_DIR` trains its vocoder.

    corpus: corpus recipe name (librispeech, commonvoice, vctk, ..., synthetic, real, manifest).
    src: the corpus as downloaded (its root folder or file); `synthetic` needs none, `real` defaults to ../shared/data/real.
    out: output folder for the manifests (and shards, features, synthesized audio).
    check: audit this manifest instead (counts, hours, duration histogram, labels, unreadable/silent files, duplicate ids); exits 1 on errors.
    shards: also write tar shards of at most this many cuts for streaming (0: no shards).
    features: also cache the frozen encoder's outputs, so training reads them instead of audio.
    encoder: encoder whose features are cached (registry name, folder or hub id).
    below_top: cache the hidden states below the encoder's top N layers instead of its output, for a recipe that
      trains them (model.train_encoder_layers=N): those layers then run on the cached frames at every step.
    answer_questions: fill `answer` of spoken-question lines with the LLM's own reply to the question as text (the sttc reference).
    llm: the LLM that answers (registry name, folder or hub id).
    n: synthetic, synthetic-broad, multitask: utterances to synthesize; real, real-multitask: cap on training clips per source; pseudo: cap on clips to label (0: no cap).
    seed: seed for synthesis plans and speaker splits.
    workers: parallel processes.
    recipe: units, vocoder: the recipe whose `units` / `vocoder` section configures them (`speechlm ls recipes`).
    set: units, vocoder: overrides as section.field=value, e.g. units.k=100 units.layer=2 vocoder.minutes=5.
    """
    if corpus in ("units", "vocoder"):
        return _speech_tokens(corpus, src, out, recipe, list(set))
    if check:
        from speechlm.data.check import run_check

        return run_check(check, out=out or corpus, workers=workers)  # `prepare --check M [REPORT_DIR]`
    if corpus and src and not out and corpus in ("voice", "spoken-chat", "synthetic", "synthetic-broad", "multitask", "real", "real-multitask", "pseudo"):
        src, out = "", src  # `speechlm prepare synthetic OUT`: no source needed (real: the shared folder by default)
    if not corpus or not out:
        raise ValueError("usage: speechlm prepare CORPUS SRC OUT  (or: speechlm prepare --check MANIFEST)")
    recipes = corpora()
    if corpus not in recipes:
        raise ValueError(f"unknown corpus {corpus!r}; choose from {', '.join(sorted(recipes))}")
    out_dir = Path(out)
    src_path = Path(src) if src else None
    if corpus in GENERATED:
        paths = recipes[corpus](src_path, out_dir, workers=workers, n=n, seed=seed)
    else:
        if src_path is None or not src_path.exists():
            raise FileNotFoundError(f"{corpus}: source {src or '(none)'} not found: give SRC, the corpus root as downloaded")
        paths = recipes[corpus](src_path, out_dir, workers=workers)
    if answer_questions:
        from speechlm.corpora.chat_targets import answer_questions as answer

        paths = {split: answer(path, path, llm=llm) for split, path in paths.items()}
    for split, path in paths.items():
        print(f"{split}\t{path}", flush=True)
    if shards:
        from speechlm.data.shards import write_shards

        for split, path in paths.items():
            index = write_shards(path, out_dir / "shards" / split, max_cuts_per_shard=shards, workers=workers)
            print(f"{split}\tshards: {index}", flush=True)
    if features:
        from speechlm.model.features import cache_features

        for split, path in paths.items():
            manifest = cache_features(path, encoder, out_dir / "features" / split, below_top=below_top)
            print(f"{split}\tfeatures: {manifest}", flush=True)
    return 0


prepare.cli_positional = ("corpus", "src", "out")


def _speech_tokens(what: str, src: str, out: str, recipe: str, overrides: list[str]) -> int:
    """`prepare units MANIFEST OUT` and `prepare vocoder MANIFEST TOKENIZER_DIR`."""
    from speechlm.config import load_recipe
    from speechlm.corpora.speech_tokens import prepare_units, prepare_vocoder

    if not src or not out:
        raise ValueError(f"usage: speechlm prepare {what} MANIFEST " + ("OUT" if what == "units" else "TOKENIZER_DIR"))
    manifest = Path(src)
    if not manifest.is_file():
        raise FileNotFoundError(f"{what}: manifest {src} not found")
    cfg = load_recipe(recipe, overrides)
    if what == "units":
        paths = prepare_units(manifest, Path(out), cfg.units)
    else:
        if not (Path(out) / "tokenizer.json").exists():
            raise FileNotFoundError(f"vocoder: {Path(out) / 'tokenizer.json'} not found: OUT must be a tokenizer folder "
                                    "(speechlm prepare units MANIFEST OUT)")
        paths = prepare_vocoder(manifest, Path(out), cfg.vocoder)
    for name, path in paths.items():
        print(f"{name}\t{path}", flush=True)
    return 0
