"""The tokenizer registry (``speechlm ls tokenizers``) and the tokenizer folder: fit, save, load, layout checks.

A tokenizer folder holds two files, written together atomically (the folder appears complete or not at all):

* ``tokenizer.json``: format version, kind, the :class:`~speechlm.config.UnitsConfig` it was fitted with,
  its layout (kind, K, streams and their sizes, frame rate, hash), the encoder name, and what it was fitted
  on (manifest, clips, frames, timings).
* ``tokenizer.safetensors``: the codebooks / bottleneck weights (no pickle anywhere).

``load_tokenizer(folder)`` needs nothing else; the hash recomputed from the loaded tensors must match the
saved one. ``check_layout`` is what a model or checkpoint calls before it accepts tokens from a tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from speechlm.config import UnitsConfig
from speechlm.tokenizers.acoustic import CodecSSLTokenizer, HFCodecTokenizer, MelRVQTokenizer
from speechlm.tokenizers.units import UnitTokenizer, VQTokenizer
from speechlm.utils import atomic_dir

__all__ = ["FORMAT_VERSION", "LayoutMismatch", "TOKENIZERS", "check_layout", "fit_tokenizer", "load_tokenizer",
           "read_layout", "save_tokenizer"]

FORMAT_VERSION = 1
META_FILE = "tokenizer.json"
TENSOR_FILE = "tokenizer.safetensors"


TOKENIZERS: dict[str, str] = {
    "kmeans": "k-means units of one encoder layer (Whisper / HuBERT / wav2vec2 / WavLM), deduplicated with durations",
    "vq": "EMA-VQ bottleneck after a Whisper encoder layer, trained through the frozen decoder's CE on transcripts",
    "mel-rvq": "residual k-means on 50-Hz stacked log-mel (acoustic_streams x acoustic_k codes); decodes to log-mel",
    "hf-codec": "a Hugging Face neural codec (EnCodec, DAC, Mimi) by folder or hub id (units.codec); decodes to a wave",
}
"""Tokenizer kinds (``units.kind``). kmeans / vq with ``acoustic_streams`` or ``codec`` set give the codec_ssl layout."""

_CLASSES: dict[str, type] = {"kmeans": UnitTokenizer, "vq": VQTokenizer, "mel-rvq": MelRVQTokenizer,
                             "hf-codec": HFCodecTokenizer, "codec_ssl": CodecSSLTokenizer}


class LayoutMismatch(ValueError):
    """Tokens of one layout offered to a model / checkpoint built for another."""


def _tokenizer_class(cfg: UnitsConfig) -> type:
    if cfg.kind not in TOKENIZERS:
        raise ValueError(f"units.kind={cfg.kind!r}: unknown tokenizer; choose from {', '.join(TOKENIZERS)}")
    if cfg.kind in ("kmeans", "vq") and (cfg.acoustic_streams > 0 or cfg.codec):
        return CodecSSLTokenizer
    return _CLASSES[cfg.kind]


def fit_tokenizer(cfg: UnitsConfig, manifest: str | Path, out: str | Path, progress: bool = True):
    """Fit the tokenizer ``cfg`` describes on ``manifest`` and save it to the folder ``out`` (atomically)."""
    tok = _tokenizer_class(cfg).fit(cfg, Path(manifest), progress=progress)
    save_tokenizer(tok, out)
    return tok


def save_tokenizer(tok, out: str | Path) -> Path:
    """Write ``tokenizer.json`` + ``tokenizer.safetensors`` into ``out``, replacing it whole."""
    from safetensors.torch import save_file

    meta = {
        "format_version": FORMAT_VERSION,
        "kind": tok.kind,
        "config": dataclasses.asdict(tok.cfg),
        "layout": tok.layout,
        "hash": tok.hash,
        "encoder": tok.cfg.encoder if tok.kind in ("kmeans", "vq", "codec_ssl") else None,
        "codec": tok.cfg.codec or None,
        "fit": tok.fit_info,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in tok.tensors().items()}
    with atomic_dir(out) as tmp:
        save_file(tensors, str(tmp / TENSOR_FILE), metadata={"format": "pt", "kind": tok.kind, "hash": tok.hash})
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", "utf-8")
    return Path(out)


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META_FILE
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such tokenizer folder")
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; a tokenizer folder holds {META_FILE} and {TENSOR_FILE} "
                                f"(written by `speechlm prepare units`)")
    try:
        meta = json.loads(path.read_text("utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    for key in ("format_version", "kind", "config", "layout", "hash"):
        if key not in meta:
            raise ValueError(f"{path}: field {key!r} is missing")
    if meta["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{path}: field 'format_version' is {meta['format_version']}; this speechlm reads {FORMAT_VERSION}")
    return meta


def read_layout(folder: str | Path) -> dict[str, Any]:
    """The layout saved in a tokenizer folder (no tensors loaded)."""
    return _read_meta(Path(folder))["layout"]


def load_tokenizer(folder: str | Path):
    """A tokenizer from its folder; errors name the missing / bad file and field."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = _read_meta(folder)
    path = folder / META_FILE
    known = {f.name for f in dataclasses.fields(UnitsConfig)}
    unknown = sorted(set(meta["config"]) - known)
    if unknown:
        raise ValueError(f"{path}: field 'config' has unknown key(s) {', '.join(unknown)}")
    cfg = UnitsConfig(**meta["config"])
    cls = _CLASSES.get(meta["kind"])
    if cls is None:
        raise ValueError(f"{path}: field 'kind' is {meta['kind']!r}; known: {', '.join(_CLASSES)}")
    tpath = folder / TENSOR_FILE
    if not tpath.exists():
        raise FileNotFoundError(f"{tpath}: missing; the folder has {META_FILE} but not the codebooks")
    tensors = load_file(str(tpath))
    try:
        tok = cls.from_tensors(cfg, tensors, meta)
    except KeyError as e:
        raise ValueError(f"{tpath}: tensor {e} is missing for a {meta['kind']} tokenizer") from None
    if tok.hash != meta["hash"]:
        raise ValueError(f"{tpath}: the codebooks hash to {tok.hash} but {META_FILE} field 'hash' says {meta['hash']} "
                         f"(files from two different tokenizers?)")
    return tok


def check_layout(expected_layout: dict[str, Any], folder: str | Path) -> None:
    """Raise :class:`LayoutMismatch` unless the tokenizer in ``folder`` has ``expected_layout`` (from a model or
    checkpoint). The message names both layouts and the folder."""
    got = read_layout(folder)
    keys = ("kind", "k", "streams", "stream_sizes", "dedup", "hash")
    diff = [k for k in keys if k in expected_layout and expected_layout.get(k) != got.get(k)]
    if diff:
        short = lambda lay: {k: lay.get(k) for k in keys if k in lay}  # noqa: E731
        raise LayoutMismatch(f"{Path(folder) / META_FILE}: tokenizer layout {short(got)} differs from the expected "
                             f"layout {short(expected_layout)} in field(s) {', '.join(diff)}")
