"""speechlm.evaluation.speech_metrics: DTW, the mel-cepstrum, and the resynthesis-ladder scores on espeak-ng speech."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from speechlm.evaluation import speech_metrics as sm

SR = 16000


# ------------------------------------------------------------------------------------------ pure numpy parts


def _dtw_brute(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook O(T1*T2) DTW with python loops: the reference for the vectorised one."""
    x = x[:, None] if x.ndim == 1 else x
    y = y[:, None] if y.ndim == 1 else y
    acc = np.full((len(x) + 1, len(y) + 1), np.inf)
    acc[0, 0] = 0.0
    for i, j in itertools.product(range(1, len(x) + 1), range(1, len(y) + 1)):
        acc[i, j] = np.linalg.norm(x[i - 1] - y[j - 1]) + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    return float(acc[-1, -1])


def test_dtw_known_examples():
    cost, path = sm.dtw(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 1.0, 2.0]))
    assert cost == 0.0
    assert path.tolist() == [[0, 0], [1, 1], [1, 2], [2, 3]]
    # one frame against two: both must be visited, |0 - 1| + |2 - 1|
    cost, path = sm.dtw(np.array([[0.0], [2.0]]), np.array([[1.0]]))
    assert cost == pytest.approx(2.0)
    assert path.tolist() == [[0, 0], [1, 0]]
    # 2-D Euclidean: (3, 4) is 5 away from the origin; the other frames match exactly
    cost, path = sm.dtw(np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]]), np.array([[0.0, 0.0], [1.0, 1.0]]))
    assert cost == pytest.approx(np.hypot(2.0, 3.0))  # (3,4) is closer to (1,1) than to (0,0)
    assert path[0].tolist() == [0, 0] and path[-1].tolist() == [2, 1]


def test_dtw_matches_brute_force_and_its_path_sums_to_its_cost():
    rng = np.random.default_rng(0)
    for t1, t2, d in [(1, 1, 3), (1, 7, 2), (9, 4, 3), (13, 17, 5), (20, 20, 1)]:
        x, y = rng.standard_normal((t1, d)), rng.standard_normal((t2, d))
        cost, path = sm.dtw(x, y)
        assert cost == pytest.approx(_dtw_brute(x, y), rel=1e-9)
        steps = np.diff(path, axis=0)
        assert path[0].tolist() == [0, 0] and path[-1].tolist() == [t1 - 1, t2 - 1]
        assert all(s in ([0, 1], [1, 0], [1, 1]) for s in steps.tolist())
        assert np.linalg.norm(x[path[:, 0]] - y[path[:, 1]], axis=1).sum() == pytest.approx(cost, rel=1e-9)


def test_mel_cepstrum_is_the_warped_log_amplitude():
    w = np.linspace(0, np.pi, 513)
    log_amp = 0.2 + np.cos(w) + 0.5 * np.cos(3 * w) - 0.3 * np.cos(7 * w)
    power = np.exp(2 * log_amp)
    # alpha = 0: the plain cepstrum in SPTK's convention, ln|H| = c0 + sum c_m cos(m w)
    c = sm.mel_cepstrum(power, order=8, alpha=0.0)[0]
    np.testing.assert_allclose(c, [0.2, 1.0, 0, 0.5, 0, 0, 0, -0.3, 0], atol=1e-9)
    # alpha = 0.42: the same log amplitude as a cosine series in the all-pass warped frequency beta(w)
    mc = sm.mel_cepstrum(power, order=60, alpha=0.42)[0]
    beta = w + 2 * np.arctan(0.42 * np.sin(w) / (1 - 0.42 * np.cos(w)))
    rebuilt = mc[0] + np.cos(np.outer(beta, np.arange(1, 61))) @ mc[1:]
    np.testing.assert_allclose(rebuilt, log_amp, atol=1e-8)


def test_short_or_empty_waves_name_the_argument(tmp_path):
    ok = np.zeros(SR, dtype=np.float32)
    with pytest.raises(ValueError, match="ref: empty"):
        sm.mel_cepstral_distortion(np.zeros(0), ok)
    with pytest.raises(ValueError, match="syn: .*shorter than 0.1 s"):
        sm.f0_metrics(ok, np.zeros(800, dtype=np.float32))
    with pytest.raises(ValueError, match="syn"):
        sm.stoi(ok, np.zeros(100))
    with pytest.raises(ValueError, match="ref: .*NaN"):
        sm.speech_quality(np.full(SR, np.nan), ok)
    with pytest.raises(ValueError, match="mono"):
        sm.stoi(np.zeros((2, SR)), ok)
    with pytest.raises(ValueError, match=r"waves\['b'\]"):
        sm.spectrogram_png({"a": ok, "b": ok[:10]}, tmp_path / "x.png")


def test_the_ladder_scores_a_too_short_resynthesis_without_signal_metrics(voices):
    """A vocoder may predict a few frames for a short digit (0.08 s): the ladder marks that pair too_short and
    leaves it out of MCD/F0/STOI instead of stopping (a 7-minute vocoder run was lost to it once)."""
    from speechlm.evaluation.resynthesis import QUALITY, _quality

    short = _quality(voices["m3"], voices["m3"][:1280])
    assert short["too_short"] and all(short[q] is None for q in QUALITY)
    full = _quality(voices["m3"], voices["m3"])
    assert "too_short" not in full and full["mcd_db"] == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------------------- on real speech


def _espeak(voice: str, text: str, folder: Path, name: str) -> np.ndarray:
    import soundfile as sf
    import soxr

    path = folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True, timeout=60)
    x, sr = sf.read(path, dtype="float32")
    return soxr.resample(x, sr, SR).astype(np.float32)


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> dict[str, np.ndarray]:
    """Two Debian voices (male m3, female f3) saying the same sentence, and m3 saying another one."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    folder = tmp_path_factory.mktemp("speech_metrics")
    a, b = "The quick brown fox jumps over the lazy dog.", "She sells sea shells by the shore every morning."
    return {"m3": _espeak("en+m3", a, folder, "m3"), "m3_other": _espeak("en+m3", b, folder, "m3_other"),
            "f3": _espeak("en+f3", a, folder, "f3")}


def _noisy(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(x))
    return (x + noise * np.sqrt(np.mean(x ** 2) / 10 ** (snr_db / 10))).astype(np.float32)


def test_identical_waves_score_perfectly(voices):
    x = voices["m3"]
    q = sm.speech_quality(x, x.copy())
    assert set(q) == {"mcd_db", "f0_rmse_hz", "vuv_error", "stoi", "speaker_sim"}
    assert q["mcd_db"] == pytest.approx(0.0, abs=1e-6)
    assert q["f0_rmse_hz"] == pytest.approx(0.0, abs=1e-6)
    assert q["vuv_error"] == 0.0
    assert q["stoi"] == pytest.approx(1.0, abs=1e-4)
    assert q["speaker_sim"] == pytest.approx(1.0, abs=1e-4)


def test_scores_get_worse_with_noise_and_low_pass(voices):
    from scipy.signal import butter, sosfilt

    x = voices["m3"]
    mild, harsh = sm.speech_quality(x, _noisy(x, 20.0)), sm.speech_quality(x, _noisy(x, 0.0))
    assert 0.0 < mild["mcd_db"] < harsh["mcd_db"]
    assert 1.0 > mild["stoi"] > harsh["stoi"]
    assert 1.0 > mild["speaker_sim"] > harsh["speaker_sim"]
    assert mild["f0_rmse_hz"] is not None and 0.0 <= mild["vuv_error"] <= 1.0
    low_passed = sosfilt(butter(8, 1500, fs=SR, output="sos"), x).astype(np.float32)
    assert sm.mel_cepstral_distortion(x, low_passed) > 5.0
    assert sm.stoi(x, low_passed) < 1.0


def test_dtw_keeps_mcd_small_for_a_time_stretched_copy(voices):
    x = voices["m3"]
    hop = SR // 100
    chunks = x[: len(x) // hop * hop].reshape(-1, hop)
    slower = chunks[np.repeat(np.arange(len(chunks)), [2 if k % 10 == 9 else 1 for k in range(len(chunks))])]
    slower = slower.ravel()  # every tenth 10-ms chunk said twice: 10 % slower, same voice and spectra
    aligned = sm.mel_cepstral_distortion(x, slower)
    unaligned = sm.mel_cepstral_distortion(x, slower, use_dtw=False)
    other_text = sm.mel_cepstral_distortion(x, voices["m3_other"])
    assert aligned < 3.0
    assert unaligned > 3 * aligned and other_text > 3 * aligned
    assert sm.stoi(x, slower) is None  # 10 % longer: not comparable sample by sample


def test_another_voice_is_less_similar_than_the_same_voice_saying_something_else(voices):
    same = sm.speaker_similarity(voices["m3"], voices["m3_other"])
    other = sm.speaker_similarity(voices["m3"], voices["f3"])
    assert other < same < 1.0
    f0 = sm.f0_metrics(voices["m3"], voices["f3"])
    assert f0["f0_rmse_hz"] > 30.0  # a female variant sits well above the male one


def test_spectrogram_png_is_written_atomically(voices, tmp_path):
    out = tmp_path / "plots" / "ladder.png"
    got = sm.spectrogram_png({"original": voices["m3"], "noisy": _noisy(voices["m3"], 10.0),
                              "other voice": voices["f3"]}, out, title="resynthesis ladder")
    assert got == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["ladder.png"]  # no temporary file left behind
