"""Speech tokenizers: dedup, k-means, layer features, unit / vq / acoustic / codec tokenizers, the folder format.

All CPU with tiny random models (Whisper, HuBERT, DAC, EnCodec) built here and saved under tmp_path; the audio
is espeak-ng speech (a tone manifest where espeak-ng is missing).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from speechlm.config import UnitsConfig
from speechlm.data.audio import load_audio
from speechlm.data.manifest import read_manifest
from speechlm.tokenizers import kmeans
from speechlm.tokenizers.acoustic import CodecSSLTokenizer, HFCodecTokenizer, MelRVQTokenizer, stacked_mel
from speechlm.tokenizers.dedup import dedup, expand
from speechlm.tokenizers.layer_features import LayerFeatures
from speechlm.tokenizers.registry import LayoutMismatch, check_layout, fit_tokenizer, load_tokenizer, read_layout
from speechlm.tokenizers.units import UnitTokenizer, VQTokenizer

SENTENCES = ["one two three four", "turn the lights off please", "the cat sat on the mat", "hello world",
             "five six seven", "yes no stop go left right"]


@pytest.fixture(scope="module")
def speech_manifest(tmp_path_factory) -> Path:
    """Six espeak-ng sentences (1-2 s each) with transcripts."""
    root = tmp_path_factory.mktemp("speech")
    lines = []
    for i, text in enumerate(SENTENCES):
        wav = root / f"s{i}.wav"
        if shutil.which("espeak-ng"):
            subprocess.run(["espeak-ng", "-v", "en-us" if i % 2 else "en", "-s", "190", "-w", str(wav), text],
                           check=True, capture_output=True, timeout=30)
        else:  # a tone whose pitch depends on the sentence, so the clips still differ
            import soundfile as sf

            t = np.arange(16000 + 4000 * i) / 16000
            sf.write(wav, (0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t)).astype("float32"), 16000)
        lines.append(json.dumps({"id": f"s{i}", "audio": wav.name, "text": text}))
    path = root / "speech.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def waves(speech_manifest) -> list[np.ndarray]:
    return [load_audio(c.audio) for c in read_manifest(speech_manifest)]


def _cfg(**kw) -> UnitsConfig:
    base = dict(encoder="tiny-whisper", layer=1, k=8, kmeans_iters=10, batch_size=4)
    return UnitsConfig(**{**base, **kw})


# --------------------------------------------------------------------------------------------------
# dedup, k-means
# --------------------------------------------------------------------------------------------------


def test_dedup_expand_round_trip():
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 200):
        frames = np.repeat(rng.integers(0, 5, n), rng.integers(1, 4, n))  # runs of 1-3 frames
        units, durations = dedup(frames)
        assert units.dtype == np.int64 and durations.dtype == np.int64
        assert (durations >= 1).all() and durations.sum() == frames.size
        assert (units[1:] != units[:-1]).all()  # no two neighbouring runs share a unit
        np.testing.assert_array_equal(expand(units, durations), frames)
    np.testing.assert_array_equal(dedup(np.array([3, 3, 3, 1, 3]))[0], [3, 1, 3])
    with pytest.raises(ValueError, match="durations"):
        expand(np.array([1, 2]), np.array([1]))


def _blobs(n=3000, d=8, centers=12, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centers, d, generator=g) * 4
    return c[torch.randint(centers, (n,), generator=g)] + torch.randn(n, d, generator=g)


def test_kmeans_deterministic_and_better_than_random():
    x = _blobs()
    a, b = kmeans.fit(x, 12, seed=0, iters=20), kmeans.fit(x, 12, seed=0, iters=20)
    assert torch.equal(a, b)
    assert not torch.equal(a, kmeans.fit(x, 12, seed=1, iters=20))
    rand = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(5))[:12]]
    assert kmeans.distortion(x, a) < 0.7 * kmeans.distortion(x, rand)
    # chunking does not change the assignment
    assert torch.equal(kmeans.assign(x, a, chunk=97), kmeans.assign(x, a))
    with pytest.raises(ValueError, match=r"K=50 is larger than the number of frames \(40\)"):
        kmeans.fit(x[:40], 50)


def test_kmeans_empty_clusters_are_refilled():
    x = torch.cat([torch.zeros(200, 4), torch.ones(5, 4) * 10, torch.randn(20, 4)])  # many duplicates
    c = kmeans.fit(x, 16, seed=0, iters=10)
    assert torch.isfinite(c).all() and c.shape == (16, 4)
    assert torch.unique(kmeans.assign(x, c)).numel() >= 8


# --------------------------------------------------------------------------------------------------
# layer features
# --------------------------------------------------------------------------------------------------


def test_whisper_layer_features_real_length_and_batching(waves):
    for layer in (0, 2):
        lf = LayerFeatures("tiny-whisper", layer, batch_size=8)
        together = lf(waves[:3])
        alone = [lf([w])[0] for w in waves[:3]]
        for w, a, b in zip(waves, together, alone):
            assert a.shape == (int(np.ceil((w.size // 160) / 2)), 64) == (lf.num_frames(w.size), 64)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert abs(lf.num_frames(16000 * 3) / 3 - lf.frame_rate) < 1e-9
    with pytest.raises(ValueError, match="units.layer=3.*layers 0..2"):
        LayerFeatures("tiny-whisper", 3)


def test_hubert_layer_features(tmp_path, waves):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    HubertModel(cfg).save_pretrained(tmp_path / "hubert")
    lf = LayerFeatures(str(tmp_path / "hubert"), 2)
    assert not lf.whisper and lf.dim == 32
    frames = lf(waves[:2])
    for w, f in zip(waves, frames):
        assert f.shape == (lf.num_frames(w.size), 32)
        assert abs(f.shape[0] - w.size / 320) <= 1.5  # 50 frames/s
    tok = UnitTokenizer(UnitsConfig(encoder=str(tmp_path / "hubert"), layer=2, k=4), kmeans.fit(torch.cat(frames), 4))
    seq = tok.encode(waves[0])
    assert tok.frames(seq).shape[0] == frames[0].shape[0]


# --------------------------------------------------------------------------------------------------
# unit tokenizer, folder format
# --------------------------------------------------------------------------------------------------


def test_unit_tokenizer_fit_save_load_encode(tmp_path, speech_manifest, waves):
    cfg = _cfg()
    tok = fit_tokenizer(cfg, speech_manifest, tmp_path / "tok", progress=False)
    assert isinstance(tok, UnitTokenizer) and tok.kind == "kmeans" and tok.frame_rate == 50.0
    assert (tmp_path / "tok" / "tokenizer.json").exists() and (tmp_path / "tok" / "tokenizer.safetensors").exists()
    meta = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert meta["fit"]["frames"] == sum(int(np.ceil((w.size // 160) / 2)) for w in waves)
    assert meta["encoder"] == "tiny-whisper" and meta["hash"] == tok.hash and meta["layout"]["stream_sizes"] == [8]

    again = load_tokenizer(tmp_path / "tok")
    assert again.hash == tok.hash and again.layout == tok.layout
    batch = again.encode_batch(waves)
    for w, seq in zip(waves, batch):
        ref = tok.encode(w)
        np.testing.assert_array_equal(seq.units, ref.units)
        np.testing.assert_array_equal(seq.durations, ref.durations)
        assert tok.frames(seq).shape[0] == int(np.ceil((w.size // 160) / 2))
        assert seq.units.max() < 8
    assert len(np.unique(np.concatenate([s.units for s in batch]))) > 2  # the units are used

    nodedup = UnitTokenizer(_cfg(dedup=False), tok.centroids).encode(waves[0])
    assert (nodedup.durations == 1).all()
    np.testing.assert_array_equal(nodedup.units, tok.frames(tok.encode(waves[0])))


def test_max_fit_frames_samples_with_the_seed(speech_manifest):
    a = UnitTokenizer.fit(_cfg(max_fit_frames=100), speech_manifest, progress=False)
    b = UnitTokenizer.fit(_cfg(max_fit_frames=100), speech_manifest, progress=False)
    assert a.fit_info["fit_frames"] <= 100 < a.fit_info["frames"]
    assert torch.equal(a.centroids, b.centroids)


# --------------------------------------------------------------------------------------------------
# acoustic tokens
# --------------------------------------------------------------------------------------------------


def test_mel_rvq_error_falls_with_each_stream(tmp_path, speech_manifest, waves):
    cfg = _cfg(kind="mel-rvq", acoustic_streams=4, acoustic_k=16)
    tok = fit_tokenizer(cfg, speech_manifest, tmp_path / "mel", progress=False)
    assert isinstance(tok, MelRVQTokenizer)
    mse = tok.fit_info["mse_per_stream"]
    assert all(b < a for a, b in zip(mse, mse[1:])), mse
    for w in waves[:2]:
        codes = tok.encode(w)  # [F, 4]
        f = int(np.ceil((w.size // 160) / 2))
        assert codes.shape == (f, 4) and codes.dtype == np.int64
        target = stacked_mel(w).reshape(2 * f, 80)
        errs = [float(((tok.decode(codes[:, :q]) - target) ** 2).mean()) for q in range(1, 5)]
        assert all(b < a for a, b in zip(errs, errs[1:])), errs
        assert tok.decode(codes).shape == (2 * f, 80)
    again = load_tokenizer(tmp_path / "mel")
    np.testing.assert_array_equal(again.encode(waves[0]), tok.encode(waves[0]))


def test_codec_ssl_layout(tmp_path, speech_manifest, waves):
    cfg = _cfg(acoustic_streams=2, acoustic_k=8)
    tok = fit_tokenizer(cfg, speech_manifest, tmp_path / "ssl", progress=False)
    assert isinstance(tok, CodecSSLTokenizer)
    assert tok.layout["streams"] == 3 and tok.layout["stream_sizes"] == [8, 8, 8] and tok.layout["kind"] == "codec_ssl"
    seq = tok.encode(waves[1])
    f = int(np.ceil((waves[1].size // 160) / 2))
    assert seq.streams.shape == (f, 3) and (seq.durations == 1).all()
    np.testing.assert_array_equal(tok.frames(seq), seq.units)
    np.testing.assert_array_equal(seq.units, tok.semantic.frame_units([waves[1]])[0])
    assert tok.decode(seq).shape == (2 * f, 80)
    again = load_tokenizer(tmp_path / "ssl")
    np.testing.assert_array_equal(again.encode(waves[1]).streams, seq.streams)


def _tiny_dac(folder: Path) -> Path:
    from transformers import DacConfig, DacModel

    torch.manual_seed(0)
    cfg = DacConfig(encoder_hidden_size=8, downsampling_ratios=[2, 4, 5, 8], decoder_hidden_size=32, n_codebooks=3,
                    codebook_size=16, codebook_dim=4, hidden_size=32, sampling_rate=16000)  # hop 320: 50 Hz
    DacModel(cfg).save_pretrained(folder)
    return folder


def _tiny_encodec(folder: Path) -> Path:
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    cfg = EncodecConfig(hidden_size=16, num_filters=4, num_residual_layers=1, codebook_size=1024, codebook_dim=16,
                        upsampling_ratios=[8, 5, 4, 2], target_bandwidths=[1.5, 3.0], sampling_rate=24000)
    EncodecModel(cfg).save_pretrained(folder)
    return folder


def test_hf_codecs_tiny_random(tmp_path, speech_manifest, waves):
    w = waves[3][:8000]  # half a second keeps the sample-rate convolutions quick
    dac = HFCodecTokenizer(UnitsConfig(kind="hf-codec", codec=str(_tiny_dac(tmp_path / "dac"))))
    assert dac.frame_rate == 50.0
    codes = dac.encode(w)
    assert codes.shape[1] == 3 and abs(codes.shape[0] - w.size / 320) <= 1 and codes.max() < 16
    out = dac.decode(codes)
    assert out.dtype == np.float32 and abs(out.size - w.size) <= 320
    assert dac.decode(codes[:, :2]).shape == out.shape  # a prefix of the residual streams decodes too

    enc = HFCodecTokenizer(UnitsConfig(kind="hf-codec", codec=str(_tiny_encodec(tmp_path / "encodec"))))
    assert enc.frame_rate == 75.0
    codes = enc.encode(w)  # 3 kbps at 75 Hz of 10-bit codes: 4 codebooks
    assert codes.shape[1] == 4 and abs(codes.shape[0] - w.size / 16000 * 75) <= 1
    assert abs(enc.decode(codes).size - w.size) <= 16000 / 75 + 1

    cfg = _cfg(codec=str(tmp_path / "dac"), acoustic_streams=2)
    ssl = fit_tokenizer(cfg, speech_manifest, tmp_path / "ssl-dac", progress=False)
    seq = ssl.encode(w)
    assert seq.streams.shape == (int(np.ceil((w.size // 160) / 2)), 3) and ssl.layout["stream_sizes"] == [8, 16, 16]
    np.testing.assert_array_equal(load_tokenizer(tmp_path / "ssl-dac").encode(w).streams, seq.streams)
    with pytest.raises(ValueError, match="75 Hz.*50 Hz"):
        CodecSSLTokenizer(ssl.semantic, enc)


# --------------------------------------------------------------------------------------------------
# vq through the frozen Whisper decoder
# --------------------------------------------------------------------------------------------------


def _tiny_full_whisper(folder: Path) -> Path:
    """A random 2+1-layer Whisper with a byte-level tokenizer carrying Whisper's control tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizerFast

    folder.mkdir(parents=True)
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    eot = "<|endoftext|>"
    tk.add_special_tokens([eot, "<|startoftranscript|>", "<|notimestamps|>"])
    tk.save(str(folder / "tokenizer.json"))
    tok = WhisperTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), unk_token=eot, bos_token=eot,
                               eos_token=eot, pad_token=eot)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=len(tok), d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128, num_mel_bins=80,
                        max_source_positions=1500, max_target_positions=64, pad_token_id=256, bos_token_id=256,
                        eos_token_id=256, decoder_start_token_id=257)
    WhisperForConditionalGeneration(cfg).save_pretrained(folder)
    return folder


def test_vq_training_lowers_ce_and_uses_codes(tmp_path, speech_manifest, waves):
    whisper = _tiny_full_whisper(tmp_path / "whisper")
    cfg = UnitsConfig(kind="vq", encoder=str(whisper), layer=1, k=16, vq_dim=16, vq_steps=30, vq_lr=1e-2,
                      vq_batch=6, batch_size=6)
    tok = fit_tokenizer(cfg, speech_manifest, tmp_path / "vq", progress=False)
    assert isinstance(tok, VQTokenizer)
    losses = tok.fit_info["losses"]
    assert len(losses) == 30 and np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05, losses
    assert tok.fit_info["codes_used"] >= 4
    again = load_tokenizer(tmp_path / "vq")
    for w in waves[:2]:
        a, b = tok.encode(w), again.encode(w)
        np.testing.assert_array_equal(a.units, b.units)
        assert a.durations.sum() == int(np.ceil((w.size // 160) / 2))


def test_vq_on_an_encoder_without_decoder_is_refused(speech_manifest):
    with pytest.raises(ValueError, match="decoder"):
        VQTokenizer.fit(_cfg(kind="vq"), speech_manifest, progress=False)


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------


def test_short_audio_names_the_manifest_line_and_clip(tmp_path, speech_manifest, waves):
    import soundfile as sf

    sf.write(tmp_path / "tiny.wav", np.zeros(100, np.float32), 16000)
    lines = speech_manifest.read_text().splitlines()[:2]
    lines = [json.loads(x) for x in lines]
    for rec in lines:
        rec["audio"] = str(speech_manifest.parent / rec["audio"])
    lines.append({"id": "blip", "audio": str(tmp_path / "tiny.wav"), "text": "x"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(ValueError, match=r"bad\.jsonl:3 \(clip 'blip'\): field 'audio': 100 samples"):
        UnitTokenizer.fit(_cfg(k=2), bad, progress=False)
    tok = UnitTokenizer(_cfg(k=2), torch.zeros(2, 64))
    with pytest.raises(ValueError, match="utt7: field 'audio': 100 samples"):
        tok.encode(np.zeros(100, np.float32), name="utt7")


def test_k_larger_than_frames_names_the_manifest(tmp_path, speech_manifest):
    with pytest.raises(ValueError, match=r"speech\.jsonl: field 'k' \(units\.k\): .*K=100000 is larger than the number of frames \(\d+\)"):
        UnitTokenizer.fit(_cfg(k=100000), speech_manifest, progress=False)
    with pytest.raises(ValueError, match=r"speech\.jsonl: field 'acoustic_k'"):
        MelRVQTokenizer.fit(_cfg(kind="mel-rvq", acoustic_streams=1, acoustic_k=100000), speech_manifest, progress=False)


def test_layout_check_and_missing_files(tmp_path, speech_manifest):
    fit_tokenizer(_cfg(k=4), speech_manifest, tmp_path / "tok", progress=False)
    layout = read_layout(tmp_path / "tok")
    check_layout(layout, tmp_path / "tok")
    with pytest.raises(LayoutMismatch, match=r"tok/tokenizer\.json.*'k': 4.*'k': 500.*field\(s\) k"):
        check_layout({**layout, "k": 500}, tmp_path / "tok")
    with pytest.raises(ValueError, match="units.kind='nope'"):
        fit_tokenizer(_cfg(kind="nope"), speech_manifest, tmp_path / "x", progress=False)

    (tmp_path / "tok" / "tokenizer.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.safetensors: missing"):
        load_tokenizer(tmp_path / "tok")
    (tmp_path / "tok" / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"tok/tokenizer\.json: missing"):
        load_tokenizer(tmp_path / "tok")
