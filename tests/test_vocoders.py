"""Tests for speechlm.vocoders: WORLD and Griffin-Lim copy synthesis (scored by Whisper tiny.en), the unit
vocoder's shapes and frame-rate contract, a short training that must lower its loss, save/load, and the errors
for units of another tokenizer.

One tiny vocoder is trained once per module (200 steps on four espeak-ng clips with stand-in units) and shared.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import numpy as np
import pytest
import soxr
import torch

from speechlm.config import VocoderConfig
from speechlm.data.mel import log_mel
from speechlm.vocoders import griffinlim, world
from speechlm.vocoders.registry import VOCODERS
from speechlm.vocoders.train import (
    VocoderMismatchError,
    expected_unit_frames,
    load_vocoder,
    save_vocoder,
    train_vocoder,
)
from speechlm.vocoders.unit_vocoder import BACKENDS, UnitRangeError, UnitVocoder, durations_from_log

needs_espeak = pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng not installed (apt-get install espeak-ng)")
DIGITS = ("en-us+m1", "four, two, eight, six.", "4 2 8 6")  # voice, text, Whisper-normalised transcript


def _espeak(voice: str, text: str, tmp_path) -> np.ndarray:
    wav = tmp_path / "clip.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), "--", text], check=True, capture_output=True)
    import soundfile as sf

    x, sr = sf.read(str(wav), dtype="float32")
    return soxr.resample(x, sr, 16000).astype(np.float32)


@pytest.fixture(scope="module")
def digit_clip(tmp_path_factory) -> np.ndarray:
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    return _espeak(DIGITS[0], DIGITS[1], tmp_path_factory.mktemp("digits"))


# ------------------------------------------------------------------------------------------------ WORLD


def test_world_features_round_trip_shapes():
    t = np.arange(16000 + 77) / 16000
    wave = (0.5 * np.sin(2 * np.pi * 140 * t) * (t < 0.6)).astype(np.float32)  # 0.6 s voiced, then silence
    feats = world.world_features(wave)
    lay = world.layout()
    assert feats.shape == (world.num_frames(wave.size), world.feature_dims()) == (len(log_mel(wave)), 63)
    vuv, lf0 = feats[:, lay["vuv"]].ravel(), feats[:, lay["lf0"]].ravel()
    assert set(np.unique(vuv)) <= {0.0, 1.0} and vuv[10:50].all() and not vuv[80:].any()
    assert np.allclose(np.exp(np.median(lf0[10:50])), 140, rtol=0.03)
    assert np.isfinite(lf0).all() and np.allclose(lf0[80:], lf0[80])  # interpolated (held) through unvoiced frames
    y = world.synthesize(feats, num_samples=wave.size)
    assert y.dtype == np.float32 and y.shape == wave.shape
    assert world.copy_synthesis(wave).shape == wave.shape
    sp = world.decode_spectral_envelope(feats[:, lay["envelope"]])
    ap = world.decode_aperiodicity(feats[:, lay["aperiodicity"]])
    assert sp.shape == ap.shape == (len(feats), world.FFT_SIZE // 2 + 1)


def test_interpolate_lf0_and_silence():
    lf0, vuv = world.interpolate_lf0(np.array([0, 100.0, 0, 0, 400.0, 0]))
    assert vuv.tolist() == [0, 1, 0, 0, 1, 0]
    assert np.allclose(np.exp(lf0), [100, 100, 100 * 4 ** (1 / 3), 100 * 4 ** (2 / 3), 400, 400])
    lf0, vuv = world.interpolate_lf0(np.zeros(4))
    assert not vuv.any() and np.allclose(lf0, world.UNVOICED_LF0)
    feats = world.world_features(np.zeros(3200, np.float32))  # digital silence: finite features, quiet output
    assert np.isfinite(feats).all() and np.abs(world.synthesize(feats)).max() < 1e-3
    with pytest.raises(ValueError, match="f0_method"):
        world.analyze(np.zeros(3200), "yin")


# ------------------------------------------------------------------------------------------- Griffin-Lim


@needs_espeak
def test_griffin_lim_converges_on_speech(digit_clip):
    y = griffinlim.copy_synthesis(digit_clip, iterations=16)
    assert y.shape == digit_clip.shape and y.dtype == np.float32
    sc = griffinlim.spectral_convergence(y, digit_clip)
    sc0 = griffinlim.spectral_convergence(griffinlim.griffin_lim(log_mel(digit_clip), iterations=0,
                                                                 num_samples=digit_clip.size), digit_clip)
    assert sc < 0.3 and sc < 0.7 * sc0, (sc, sc0)  # iterations reduce the inconsistency of the random start
    np.testing.assert_array_equal(y, griffinlim.copy_synthesis(digit_clip, iterations=16))  # seeded: deterministic


@needs_espeak
def test_copy_synthesis_is_transcribed_by_whisper(digit_clip):
    from speechlm.evaluation.wer import normalize_english
    from speechlm.inference.transcribe import WhisperBaseline

    try:
        asr = WhisperBaseline()
    except FileNotFoundError as e:
        pytest.skip(f"Whisper tiny.en not available: {e}")
    texts = asr([digit_clip, world.copy_synthesis(digit_clip), griffinlim.copy_synthesis(digit_clip)])
    assert [normalize_english(t) for t in texts] == [DIGITS[2]] * 3, texts


@needs_espeak
def test_perturb_speaker_moves_pitch_and_formants_in_the_same_time(tmp_path):
    clip = _espeak("en-us+f3", DIGITS[1], tmp_path)  # a female voice (~200 Hz): x0.6 stays above WORLD's 71-Hz floor
    f0, sp, _ = world.analyze(clip)
    for f0_factor, formant in ((0.6, 0.86), (1.5, 1.13)):
        y = world.perturb_speaker(clip, f0_factor, formant)
        assert y.shape == clip.shape and y.dtype == np.float32
        assert np.isclose(np.abs(y).max(), np.abs(clip).max(), rtol=1e-4)
        g, sq, _ = world.analyze(y)
        both = (f0 > 0) & (g > 0)
        assert both.mean() > 0.5 * (f0 > 0).mean()  # voicing kept where it was
        assert np.median(g[both] / f0[both]) == pytest.approx(f0_factor, rel=0.1)
        bins = np.arange(sp.shape[1])
        centroid = lambda e: float(((e * bins).sum(1) / e.sum(1))[f0 > 0].mean())  # noqa: E731
        assert (centroid(sq) > centroid(sp)) == (formant > 1)
    warped = world.warp_envelope(sp, 1.0)
    assert np.allclose(warped, sp)


# ------------------------------------------------------------------------------------------ unit vocoder


def _standin_units(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stand-in tokenizer: 50-Hz frames (log-mel pairs) -> 4 loudness x 4 brightness classes, deduplicated."""
    m = log_mel(wave)  # [T, 80]
    f = expected_unit_frames(wave.size)
    m = torch.cat([m, m[-1:].expand(max(0, 2 * f - len(m)), -1)])[: 2 * f].reshape(f, 2, 80).mean(1)  # [F, 80]
    loud = torch.bucketize(m.mean(1), torch.tensor([-9.0, -6.0, -3.0]))  # [F] in 0..3
    bright = torch.bucketize(m[:, 40:].mean(1) - m[:, :40].mean(1), torch.tensor([-4.0, -2.0, 0.0]))  # [F] in 0..3
    units, counts = torch.unique_consecutive(loud * 4 + bright, return_counts=True)
    return units.numpy().astype(np.int64), counts.numpy().astype(np.int64)


K = 16
TINY = VocoderConfig(hidden=48, layers=2, batch_seconds=3.0, max_steps=200, minutes=2.0, lr=3e-3,
                     warmup_steps=20, threads=1, griffinlim_iters=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(examples, run folder, vocoder): 200 steps on four espeak-ng clips."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    tmp = tmp_path_factory.mktemp("vocoder")
    texts = [("en-us+m1", "one two three"), ("en-us+m1", "the cat sat down"), ("en-us+m1", "seven, nine."),
             ("en-us+m1", "good morning")]
    examples = []
    for voice, text in texts:
        wave = _espeak(voice, text, tmp)
        examples.append((*_standin_units(wave), wave))
    model = train_vocoder(examples, K, "tok-abc", TINY, tmp / "run", progress=False)
    return examples, tmp / "run", model


def test_training_lowers_the_loss_and_logs(trained):
    _, run, model = trained
    log = [json.loads(x) for x in (run / "vocoder_log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 1 and log[-1]["step"] == 200
    first, last = log[0], log[-1]
    assert last["loss"] < 0.5 * first["loss"], (first, last)
    assert last["mel"] < 0.7 * first["mel"] and last["world"] < 0.7 * first["world"] and last["dur"] < first["dur"]
    info = json.loads((run / "vocoder" / "vocoder.json").read_text())
    assert info["k"] == K and info["tokenizer_hash"] == "tok-abc" and info["steps"] == 200
    assert info["config"] == dataclasses.asdict(TINY) and info["feature_dims"]["world"] == 63
    assert len(info["normalisation"]["mel_mean"]) == 80 and info["final_losses"]["loss"] == last["loss"]
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in (run / "vocoder").iterdir())


def test_save_load_gives_identical_output(trained, tmp_path):
    examples, run, model = trained
    units, durations, _ = examples[0]
    for folder in (run, run / "vocoder"):  # the run folder or the vocoder folder itself
        loaded = load_vocoder(folder, tokenizer_hash="tok-abc", k=K)
        for a, b in zip(model.predict_features(units, durations), loaded.predict_features(units, durations)):
            np.testing.assert_array_equal(a, b)
    for backend in BACKENDS:
        np.testing.assert_array_equal(model.synthesize(units, durations, backend), loaded.synthesize(units, durations, backend))
    save_vocoder(loaded, tmp_path / "again")
    np.testing.assert_array_equal(load_vocoder(tmp_path / "again").predict_features(units)[1], model.predict_features(units)[1])


def test_synthesize_lengths_and_backends(trained):
    examples, _, model = trained
    units, durations, wave = examples[1]
    for backend in BACKENDS:
        y = model.synthesize(units, durations, backend=backend)
        assert y.dtype == np.float32 and y.shape == (2 * durations.sum() * 160,)  # T = 2F + 1 frames -> 2F hops
        assert abs(y.size - wave.size) <= 320 and np.isfinite(y).all() and np.abs(y).max() > 1e-3
    feats, mel = model.predict_features(units)  # predicted durations: at least one 50-Hz frame per unit
    assert len(feats) == len(mel) >= 2 * len(units) + 1
    vuv = feats[:, world.layout()["vuv"]]
    assert ((vuv >= 0) & (vuv <= 1)).all()
    assert model.synthesize(np.zeros(0, np.int64)).shape == (0,)
    with pytest.raises(ValueError, match="backend"):
        model.synthesize(units, backend="hifigan")
    with pytest.raises(ValueError, match="durations"):
        model.synthesize(units, durations[:-1])


def test_duration_convention():
    # fairseq: clamp(round(exp(pred) - 1), min=1)
    pred = torch.log1p(torch.tensor([0.0, 1.0, 2.4, 2.6, 9.0]))
    assert durations_from_log(pred).tolist() == [1, 1, 2, 3, 9]


def test_mismatched_tokenizer_is_refused(trained):
    examples, run, model = trained
    with pytest.raises(VocoderMismatchError, match=r"vocoder\.json: tokenizer_hash is 'tok-abc'.*'tok-xyz'"):
        load_vocoder(run, tokenizer_hash="tok-xyz")
    with pytest.raises(VocoderMismatchError, match=rf"vocoder\.json: k is {K} but the tokenizer has k = 500"):
        load_vocoder(run, k=500)
    loaded = load_vocoder(run)
    with pytest.raises(UnitRangeError, match=rf"{run / 'vocoder'}: units must lie in 0\.\.{K - 1}.*got unit {K}"):
        loaded.synthesize(np.array([0, 3, K]))
    with pytest.raises(UnitRangeError, match="got unit -1"):
        model.synthesize(np.array([-1, 2]))
    with pytest.raises(FileNotFoundError, match="no unit vocoder"):
        load_vocoder(run / "nowhere")


def test_training_input_checks(tmp_path):
    wave = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    f = expected_unit_frames(wave.size)
    assert f == 25 and expected_unit_frames(8160) == 26  # ceil((N // 160) / 2)
    cfg = dataclasses.replace(TINY, max_steps=1)
    with pytest.raises(ValueError, match="example 0: units must lie in 0..15"):
        train_vocoder([(np.array([3, 16]), np.array([10, 15]), wave)], K, "h", cfg, tmp_path, progress=False)
    with pytest.raises(ValueError, match="example 0: durations sum to 50 .* another clip"):
        train_vocoder([(np.array([3, 4]), np.array([25, 25]), wave)], K, "h", cfg, tmp_path, progress=False)
    model = train_vocoder([(np.array([3, 4]), np.array([12, 13]), wave)], K, "h", cfg, tmp_path, progress=False)
    assert isinstance(model, UnitVocoder) and (tmp_path / "vocoder" / "vocoder.safetensors").exists()


def test_registry_names_the_backends():
    assert tuple(VOCODERS) == BACKENDS and all(isinstance(v, str) and v for v in VOCODERS.values())
