"""Objective speech-quality metrics for the resynthesis ladder: original ``ref`` vs resynthesised ``syn``.

Owns the signal-level scores of ``discrete-path.md`` section D ("Offline for us") that need no text and no
hub download. (WER of generated speech is :mod:`speechlm.evaluation.wer` plus Whisper.) Every function takes
16-kHz mono float waves as numpy arrays. ``ref`` and ``syn`` may differ in length: a vocoder rarely keeps
the exact duration.

* :func:`mel_cepstral_distortion` - MCD in dB between DTW-aligned mel-cepstra of WORLD spectral envelopes.
* :func:`f0_metrics` - F0 RMSE (Hz) and voiced/unvoiced disagreement, over the same DTW path.
* :func:`stoi` - short-time objective intelligibility (pystoi). Only for sample-aligned pairs.
* :func:`speaker_similarity` - cosine of Resemblyzer d-vectors.
* :func:`speech_quality` - all of the above in one dict. WORLD analysis and DTW run once per pair.
* :func:`spectrogram_png` - stacked log-mel spectrograms, one row per named wave, for a report.
* :func:`dtw` and :func:`mel_cepstrum` - the building blocks, public so they can be tested.

Constants and their sources:

* MCD = ``10 / ln 10 * sqrt(2 * sum_{m=1..M} (c_m - c'_m)^2)`` dB per frame, averaged over frames.
  Kubichek, "Mel-cepstral distance measure for objective speech quality assessment", IEEE PACRIM 1993.
  The constant assumes SPTK's cepstrum convention, ``ln|H(w)| = c_0 + sum_{m>=1} c_m cos(m w)``. In that
  convention, ``(20 / ln 10) * RMS_w(ln|H| - ln|H'|)`` with ``c_0`` left out is exactly the formula above.
* All-pass warping ``alpha = 0.42`` at 16 kHz approximates the mel scale (Tokuda et al., "Mel-generalized
  cepstral analysis", ICSLP 1994; SPTK's table gives 0.42 for 16 kHz). The warping is SPTK's ``freqt``
  recursion (Oppenheim & Johnson 1972, "Discrete representation of signals"). Order 24 (25 coefficients
  with c0) is the usual choice for 16-kHz speech (ESPnet, Merlin).
* WORLD analysis: Morise et al., "WORLD: a vocoder-based high-quality speech synthesis system", IEICE 2016.
  Harvest F0 (Morise, Interspeech 2017) with a 10-ms frame period, and the CheapTrick envelope.
* DTW: Sakoe & Chiba, IEEE TASSP 1978. Symmetric steps (1,0), (0,1), (1,1) with weight 1, Euclidean
  frame cost, no band.
* STOI: Taal et al., IEEE TASLP 2011 (pystoi). Speaker embedding: GE2E d-vector (Wan et al., ICASSP 2018),
  Resemblyzer's pretrained encoder.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = [
    "SAMPLE_RATE", "FRAME_PERIOD_MS", "MCEP_ORDER", "MCEP_ALPHA", "MIN_SECONDS", "MCD_CONST",
    "dtw", "mel_cepstrum", "mel_cepstral_distortion", "f0_metrics", "stoi", "speaker_similarity",
    "speech_quality", "spectrogram_png",
]

SAMPLE_RATE = 16000
FRAME_PERIOD_MS = 10.0  # WORLD frame period: 100 frames/s, the rate of speechlm.data.mel
MCEP_ORDER = 24  # c_1..c_24 enter the distance; c_0 (log gain) is dropped
MCEP_ALPHA = 0.42  # all-pass constant approximating the mel scale at 16 kHz (SPTK)
MIN_SECONDS = 0.1  # shorter waves are refused: too few frames for a meaningful score
MCD_CONST = 10.0 / math.log(10.0) * math.sqrt(2.0)  # Kubichek 1993; times the Euclidean distance of c_1..c_M
SILENCE_DB = 40.0  # MCD skips frames whose reference energy is this far below the reference's loudest frame
STOI_MAX_LENGTH_MISMATCH = 0.05  # stoi() returns None beyond this relative length difference


# --------------------------------------------------------------------------------------------------- inputs


def _wave(x: Any, name: str) -> np.ndarray:
    """``x`` as a 1-D float64 contiguous array (what pyworld wants), or ValueError naming the argument."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: not a numeric wave ({e})") from e
    a = np.squeeze(a) if a.ndim > 1 else a
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a mono 1-D wave, got shape {np.shape(x)}")
    if a.size == 0:
        raise ValueError(f"{name}: empty wave")
    if a.size < MIN_SECONDS * SAMPLE_RATE:
        raise ValueError(f"{name}: {a.size} samples ({a.size / SAMPLE_RATE:.3f} s) is shorter than "
                         f"{MIN_SECONDS} s at {SAMPLE_RATE} Hz")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: wave contains NaN or infinite samples")
    return np.ascontiguousarray(a)


# ------------------------------------------------------------------------------------------------------ DTW


def _pairwise_euclidean(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[T1, D], [T2, D] -> [T1, T2] Euclidean distances."""
    from scipy.spatial.distance import cdist

    return cdist(x, y, metric="euclidean")


def _accumulate(cost: np.ndarray) -> np.ndarray:
    """Accumulated DTW cost ``A[i, j] = cost[i, j] + min(A[i-1, j-1], A[i-1, j], A[i, j-1])``.

    One numpy pass per row. Within a row, ``A[j] = c[j] + min(m[j], A[j-1])`` with ``m`` taken from the row
    above. This unrolls to ``A[j] = S[j] + min_{k<=j}(m[k] - S[k-1])``, where ``S`` is the row's prefix sum:
    a cumulative minimum.
    """
    t1, t2 = cost.shape
    acc = np.empty_like(cost, dtype=np.float64)
    acc[0] = np.cumsum(cost[0])
    for i in range(1, t1):
        prev = acc[i - 1]
        m = prev.copy()  # m[j] = min(A[i-1, j-1], A[i-1, j]); m[0] = A[i-1, 0]
        np.minimum(prev[1:], prev[:-1], out=m[1:])
        s = np.cumsum(cost[i])
        s_before = np.concatenate(([0.0], s[:-1]))
        acc[i] = s + np.minimum.accumulate(m - s_before)
    return acc


def dtw(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Dynamic time warping of frame sequences ``x`` [T1, D] and ``y`` [T2, D] (or 1-D [T1], [T2]).

    The frame cost is the Euclidean distance. Steps are (1,0), (0,1) and (1,1), all with weight 1. The path
    runs from (0, 0) to (T1-1, T2-1), with no slope constraint or band. Returns ``(total cost, path)``, where
    the total cost is the sum of frame costs along the path and ``path`` [L, 2] holds int index pairs
    ``(i, j)`` in time order. On a tie the diagonal step wins, then the step that advances ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    y = y[:, None] if y.ndim == 1 else y
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"dtw: expected [T1, D] and [T2, D] frames, got {x.shape} and {y.shape}")
    if len(x) == 0 or len(y) == 0:
        raise ValueError(f"dtw: empty sequence ({len(x)} and {len(y)} frames)")
    acc = _accumulate(_pairwise_euclidean(x, y))
    i, j = len(x) - 1, len(y) - 1
    path = [(i, j)]
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            diag, up, left = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
            if diag <= up and diag <= left:
                i, j = i - 1, j - 1
            elif up <= left:
                i -= 1
            else:
                j -= 1
        path.append((i, j))
    return float(acc[-1, -1]), np.asarray(path[::-1], dtype=np.int64)


# ------------------------------------------------------------------------------------------ mel-cepstrum


@functools.lru_cache(maxsize=8)
def _freqt_matrix(in_len: int, order: int, alpha: float) -> np.ndarray:
    """The linear map of SPTK's ``freqt``: cepstrum c[0..in_len-1] -> warped c~[0..order], as [in_len, order+1].

    ``freqt`` is linear in its input, so the recursion runs once over the identity basis (one column per
    input coefficient), and every analysis is then a single matmul.
    """
    b = 1.0 - alpha * alpha
    g = np.zeros((order + 1, in_len))
    basis = np.eye(in_len)
    for k in range(in_len - 1, -1, -1):  # SPTK: i = -m1 .. 0, feeding c1[-i]
        d = g.copy()
        g[0] = basis[k] + alpha * d[0]
        if order >= 1:
            g[1] = b * d[0] + alpha * d[1]
        for j in range(2, order + 1):
            g[j] = d[j - 1] + alpha * (d[j] - g[j - 1])
    return np.ascontiguousarray(g.T)


def mel_cepstrum(power_envelope: np.ndarray, order: int = MCEP_ORDER, alpha: float = MCEP_ALPHA) -> np.ndarray:
    """Power spectral envelope [T, fft_size//2 + 1] (WORLD's CheapTrick) -> mel-cepstrum [T, order + 1].

    What ``pysptk.sp2mc`` computes. Take the real cepstrum of the log *power* envelope,
    ``c = irfft(ln P)``, halve ``c_0``, keep quefrencies 0..fft_size/2, and warp with ``freqt(alpha)``. The
    halving gives SPTK's log-*amplitude* convention, ``ln|H(w)| = c~_0 + sum_{m>=1} c~_m cos(m beta(w))``,
    where ``beta`` is the all-pass warped frequency. Unlike ``sp2mc``, the mirrored upper half of the
    ``irfft`` output (the negative quefrencies) is not fed to ``freqt``. (The difference is negligible for
    a smooth envelope.)
    """
    p = np.asarray(power_envelope, dtype=np.float64)
    p = p[None] if p.ndim == 1 else p
    c = np.fft.irfft(np.log(np.maximum(p, 1e-300)), axis=-1)[:, : p.shape[-1]]
    c[:, 0] /= 2.0
    return c @ _freqt_matrix(p.shape[-1], order, float(alpha))


def _world(wave: np.ndarray, f0_method: str = "harvest") -> tuple[np.ndarray, np.ndarray]:
    """WORLD analysis of a checked float64 wave: ``(f0 [T] Hz, 0 = unvoiced; mel-cepstrum [T, 25])``."""
    from speechlm.vocoders.world import load_pyworld

    pw = load_pyworld()
    if f0_method == "harvest":
        f0, t = pw.harvest(wave, SAMPLE_RATE, frame_period=FRAME_PERIOD_MS)
    elif f0_method == "dio":
        f0, t = pw.dio(wave, SAMPLE_RATE, frame_period=FRAME_PERIOD_MS)
        f0 = pw.stonemask(wave, f0, t, SAMPLE_RATE)
    else:
        raise ValueError(f"f0_method must be 'harvest' or 'dio', got {f0_method!r}")
    sp = pw.cheaptrick(wave, f0, t, SAMPLE_RATE)
    return np.asarray(f0, dtype=np.float64), mel_cepstrum(sp)


def _frame_energy_db(wave: np.ndarray, n_frames: int) -> np.ndarray:
    """Energy (dB) of 25-ms Hann windows centred on WORLD's frame times ``k * 10 ms``: [n_frames]."""
    hop = int(SAMPLE_RATE * FRAME_PERIOD_MS / 1000)
    win = int(0.025 * SAMPLE_RATE)
    padded = np.pad(wave, (win // 2, win // 2 + hop * n_frames))
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[::hop][:n_frames]
    e = (frames * np.hanning(win)) ** 2
    return 10.0 * np.log10(e.sum(axis=1) + 1e-12)


class _Pair:
    """WORLD analysis of both waves, and the DTW path on c_1..c_M, shared by MCD and F0 metrics."""

    def __init__(self, ref: Any, syn: Any, f0_method: str = "harvest", use_dtw: bool = True):
        self.ref = _wave(ref, "ref")
        self.syn = _wave(syn, "syn")
        self.f0_ref, self.mc_ref = _world(self.ref, f0_method)
        self.f0_syn, self.mc_syn = _world(self.syn, f0_method)
        a, b = self.mc_ref[:, 1:], self.mc_syn[:, 1:]
        if use_dtw:
            _, self.path = dtw(a, b)
        else:  # frame k against frame k, the longer one truncated
            n = min(len(a), len(b))
            self.path = np.stack([np.arange(n), np.arange(n)], axis=1)
        self.dist = np.linalg.norm(a[self.path[:, 0]] - b[self.path[:, 1]], axis=1)  # [L]

    def mcd(self, skip_silence: bool = True) -> float:
        keep = np.ones(len(self.path), dtype=bool)
        if skip_silence:
            energy = _frame_energy_db(self.ref, len(self.mc_ref))
            keep = energy[self.path[:, 0]] > energy.max() - SILENCE_DB
        return float(MCD_CONST * self.dist[keep].mean())

    def f0(self) -> dict[str, float | None]:
        fr, fs = self.f0_ref[self.path[:, 0]], self.f0_syn[self.path[:, 1]]
        vr, vs = fr > 0, fs > 0
        both = vr & vs
        rmse = float(np.sqrt(np.mean((fr[both] - fs[both]) ** 2))) if both.any() else None
        return {"f0_rmse_hz": rmse, "vuv_error": float(np.mean(vr != vs))}


# ------------------------------------------------------------------------------------------------ metrics


def mel_cepstral_distortion(ref: np.ndarray, syn: np.ndarray, *, skip_silence: bool = True,
                            use_dtw: bool = True, f0_method: str = "harvest") -> float:
    """Mel-cepstral distortion (dB) between ``ref`` and ``syn``, 16-kHz waves. Lower is better, and 0 for
    identical waves.

    The variant, exactly: WORLD analysis at 10 ms (Harvest F0, or DIO + StoneMask with ``f0_method="dio"``;
    then the CheapTrick power envelope). The mel-cepstrum is order 24 with ``alpha = 0.42``
    (:func:`mel_cepstrum`, i.e. ``pysptk.sp2mc``: SPTK's log-amplitude convention, not
    ``code_spectral_envelope``'s MFCC-like coding). c_0 (energy) is dropped. Frames are aligned by
    :func:`dtw` over the Euclidean distance of c_1..c_24 (``use_dtw=False``: frame k against frame k,
    truncated to the shorter). The per-pair distance is ``10/ln10 * sqrt(2 * sum_m (c_m - c'_m)^2)``, and
    the score is its mean over the path's pairs. A path that repeats a frame counts it once per pair.

    Silence: with ``skip_silence`` (default), path pairs whose *reference* frame has an energy (25-ms Hann
    window) more than 40 dB below the reference's loudest frame are left out of the mean. They are still
    aligned by DTW. Frames of digital silence would otherwise dominate, since their log envelope sits at
    WORLD's floor. ``skip_silence=False`` averages over every pair, as ESPnet's ``evaluate_mcd`` does.

    Raises ValueError, naming the argument, for an empty, non-finite, non-1-D or shorter-than-0.1-s wave.
    """
    return _Pair(ref, syn, f0_method=f0_method, use_dtw=use_dtw).mcd(skip_silence)


def f0_metrics(ref: np.ndarray, syn: np.ndarray, *, f0_method: str = "harvest") -> dict[str, float | None]:
    """F0 error of ``syn`` against ``ref``: ``{"f0_rmse_hz", "vuv_error"}``.

    F0 comes from WORLD (Harvest by default) at 10 ms. Frames are paired along the same DTW path as
    :func:`mel_cepstral_distortion` (on mel-cepstra c_1..c_24, silence included). ``f0_rmse_hz`` is the
    RMSE in Hz over pairs voiced in both (WORLD's F0 > 0), or None if no pair is. ``vuv_error`` is the
    fraction of pairs where one is voiced and the other not (0..1).
    """
    return _Pair(ref, syn, f0_method=f0_method).f0()


def stoi(ref: np.ndarray, syn: np.ndarray, *, extended: bool = False) -> float | None:
    """STOI (0..1, higher is better; pystoi at 16 kHz, ``extended=True`` for ESTOI).

    STOI compares the two waves sample by sample (in 384-ms windows). When the lengths differ by more than
    5 % of ``ref``'s, the pair is not comparable and the result is None. Otherwise both are trimmed to the
    shorter. pystoi itself drops frames more than 40 dB below the reference's loudest.
    """
    from pystoi import stoi as _stoi

    r, s = _wave(ref, "ref"), _wave(syn, "syn")
    if abs(len(r) - len(s)) > STOI_MAX_LENGTH_MISMATCH * len(r):
        return None
    n = min(len(r), len(s))
    return float(_stoi(r[:n], s[:n], SAMPLE_RATE, extended=extended))


class NoSpeechError(ValueError):
    """Resemblyzer's voice-activity trim left too little of a wave to embed."""


@functools.lru_cache(maxsize=1)
def _voice_encoder():
    """Resemblyzer's pretrained GE2E encoder (weights ship in its wheel), loaded once on the CPU."""
    with warnings.catch_warnings():  # resemblyzer imports scipy.ndimage.morphology, deprecated in SciPy 1.x
        warnings.simplefilter("ignore", DeprecationWarning)
        from resemblyzer import VoiceEncoder

    return VoiceEncoder("cpu", verbose=False)


def _speaker_embedding(wave: np.ndarray, name: str) -> np.ndarray:
    encoder = _voice_encoder()
    from resemblyzer import preprocess_wav

    w = preprocess_wav(wave.astype(np.float32))  # already 16 kHz: volume normalisation + webrtcvad trim only
    if len(w) < MIN_SECONDS * SAMPLE_RATE:
        raise NoSpeechError(f"{name}: no speech left after Resemblyzer's voice-activity trim "
                         f"({len(w)} samples)")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 3-layer 256-unit LSTM over ~10 partials: 3-4x faster on one thread than on two
    try:
        return np.asarray(encoder.embed_utterance(w), dtype=np.float64)
    finally:
        torch.set_num_threads(threads)


def speaker_similarity(ref: np.ndarray, syn: np.ndarray) -> float:
    """Cosine similarity (-1..1, higher is closer) of Resemblyzer d-vectors of ``ref`` and ``syn``.

    Each wave goes through ``preprocess_wav`` (volume normalisation and a long-silence trim, no resampling
    at 16 kHz) and then ``embed_utterance`` (mean of partial-window embeddings, L2-normalised). The encoder
    is loaded once, on the CPU, and runs on one torch thread (the thread count is restored afterwards).
    Same speaker, different text: about 0.8-0.95. Different speakers score lower (espeak-ng en+m3 vs en+f3,
    same sentence: about 0.66).
    """
    a = _speaker_embedding(_wave(ref, "ref"), "ref")
    b = _speaker_embedding(_wave(syn, "syn"), "syn")
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def speech_quality(ref: np.ndarray, syn: np.ndarray, *, f0_method: str = "harvest",
                   speaker: bool = True) -> dict[str, float | None]:
    """Every metric of this module for one pair: ``{"mcd_db", "f0_rmse_hz", "vuv_error", "stoi",
    "speaker_sim"}``.

    The WORLD analysis and the DTW path are computed once and shared by MCD and the F0 metrics. ``stoi``
    is None for pairs whose lengths differ by more than 5 %, and ``f0_rmse_hz`` is None when no aligned
    pair is voiced in both. ``speaker=False`` skips Resemblyzer (``speaker_sim`` is then None); so does a
    wave in which Resemblyzer's voice-activity trim finds no speech (a short, quiet digit clip, or a failed
    resynthesis): one such pair must not stop a whole evaluation.
    """
    pair = _Pair(ref, syn, f0_method=f0_method)
    out: dict[str, float | None] = {"mcd_db": pair.mcd()}
    out.update(pair.f0())
    out["stoi"] = stoi(pair.ref, pair.syn)
    out["speaker_sim"] = None
    if speaker:
        try:
            out["speaker_sim"] = speaker_similarity(pair.ref, pair.syn)
        except NoSpeechError:
            pass
    return out


# ------------------------------------------------------------------------------------------------- figure


def spectrogram_png(waves: Mapping[str, np.ndarray], path: str | os.PathLike, title: str = "") -> Path:
    """Stacked log-mel spectrograms, one row per named wave, sharing one colour scale. Returns the path.

    The log-mel is :func:`speechlm.data.mel.log_mel`: 80 bins, 100 frames/s, natural log, floored at 1e-5.
    Rows share the time axis, sized to the longest wave. The PNG is drawn on matplotlib's Agg canvas and
    written atomically, like :mod:`speechlm.evaluation.plots`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from speechlm.data.mel import FRAME_RATE, log_mel
    from speechlm.utils import atomic_open

    if not waves:
        raise ValueError("waves: nothing to draw")
    mels = {name: log_mel(np.asarray(_wave(w, f"waves[{name!r}]"), dtype=np.float32)).numpy().T
            for name, w in waves.items()}  # [M, T]
    lo = min(float(m.min()) for m in mels.values())
    hi = max(float(m.max()) for m in mels.values())
    longest = max(m.shape[1] for m in mels.values()) / FRAME_RATE
    fig = Figure(figsize=(10.0, 0.6 + 2.0 * len(mels)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(mels), 1, squeeze=False, sharex=True)[:, 0]
    image = None
    for ax, (name, m) in zip(axes, mels.items()):
        image = ax.imshow(m, origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi,
                          extent=(0.0, m.shape[1] / FRAME_RATE, 0, m.shape[0]), interpolation="nearest")
        ax.set_xlim(0.0, longest)
        ax.set_ylabel("mel bin")
        ax.set_title(str(name), fontsize=10, loc="left")
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    fig.colorbar(image, ax=list(axes), label="ln mel", fraction=0.03, pad=0.01)
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight", pad_inches=0.2)
    return path
