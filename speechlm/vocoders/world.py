"""WORLD analysis and synthesis (pyworld), and the coded features the unit vocoder predicts.

Owns the WORLD side of the vocoder: a 16-kHz wave -> F0 (dio + stonemask, or harvest), spectral envelope
(cheaptrick) and aperiodicity (d4c) at a 10-ms frame period, coded into a small vector per frame that a network
can regress, and the way back (decode + ``pyworld.synthesize``). :func:`copy_synthesis` is analysis then
synthesis with nothing predicted: the top rung of the resynthesis ladder (design/discrete-path.md, D).

Dimension legend:
    N  audio samples (16 kHz)     T  frames (100/s, one per 160 samples: T = N // 160 + 1, as data/mel.py)
    S  linear-frequency bins of WORLD's FFT (fft_size // 2 + 1 = 513 at 16 kHz)
    E  coded spectral-envelope dims (60)     A  coded aperiodicity bands (1 at 16 kHz)

The coded feature vector per frame (:data:`WorldFeatures.vector`, [T, E + 3 by default]) is laid out as
``[envelope (E) | lf0 (1) | vuv (1) | aperiodicity (A)]``: Merlin's setup at 16 kHz (60 mel-generalised
cepstral dims, interpolated log-F0 with a voiced/unvoiced flag, 1 band aperiodicity; CSTR-Edinburgh/merlin
wiki). pyworld's ``code_spectral_envelope`` computes a mel-cepstrum-like code of the log envelope, and
``code_aperiodicity`` the band aperiodicity in dB.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

import numpy as np


def load_pyworld() -> ModuleType:
    """Import pyworld's compiled module.

    pyworld 0.3.x's ``__init__`` reads its version through ``pkg_resources``, which setuptools >= 81 no longer
    ships; the compiled extension itself needs nothing of it, so when the package import fails on exactly
    that, the extension is loaded from its file."""
    if "pyworld" in sys.modules and hasattr(sys.modules["pyworld"], "synthesize"):
        return sys.modules["pyworld"]
    try:
        return importlib.import_module("pyworld")
    except ModuleNotFoundError as e:
        if e.name != "pkg_resources":
            raise ModuleNotFoundError("pyworld is not installed: run `bash install.sh` (or pip install pyworld)") from e
    spec = importlib.util.find_spec("pyworld")
    folder = list(spec.submodule_search_locations or [])[0]
    import glob

    so = sorted(glob.glob(f"{folder}/pyworld*.so") + glob.glob(f"{folder}/pyworld*.pyd"))
    if not so:
        raise ModuleNotFoundError(f"pyworld's compiled module not found in {folder}")
    ext_spec = importlib.util.spec_from_file_location("pyworld", so[0])
    module = importlib.util.module_from_spec(ext_spec)
    ext_spec.loader.exec_module(module)
    sys.modules["pyworld"] = module
    return module


SAMPLE_RATE = 16000
FRAME_PERIOD_MS = 10.0  # 100 frames/s, the hop of data/mel.py (HOP = 160 samples), so both targets line up
ENVELOPE_DIMS = 60  # coded spectral envelope dims: Merlin's 60 MGC at 16 kHz
F0_FLOOR, F0_CEIL = 71.0, 800.0  # pyworld's defaults (default_f0_floor / default_f0_ceil), Hz
FFT_SIZE = 1024  # pyworld.get_cheaptrick_fft_size(16000, 71.0): 513 bins
UNVOICED_LF0 = float(np.log(100.0))  # lf0 of a clip with no voiced frame at all (arbitrary: nothing to interpolate)
F0_METHODS = ("dio", "harvest")


def feature_dims(envelope_dims: int = ENVELOPE_DIMS) -> int:
    """Width of the coded vector: envelope + lf0 + vuv + aperiodicity bands (1 at 16 kHz)."""
    return envelope_dims + 2 + num_aperiodicities()


def num_aperiodicities() -> int:
    """Coded aperiodicity bands at 16 kHz (pyworld: one band per 3 kHz above 3 kHz -> 1)."""
    return int(load_pyworld().get_num_aperiodicities(SAMPLE_RATE))


def layout(envelope_dims: int = ENVELOPE_DIMS) -> dict[str, slice]:
    """Where each part sits in the coded vector: ``{"envelope", "lf0", "vuv", "aperiodicity"}`` -> slice."""
    e = envelope_dims
    return {"envelope": slice(0, e), "lf0": slice(e, e + 1), "vuv": slice(e + 1, e + 2),
            "aperiodicity": slice(e + 2, e + 2 + num_aperiodicities())}


def num_frames(num_samples: int) -> int:
    """WORLD frames of a clip at the 10-ms period: ``N // 160 + 1``, the same count as data/mel.py's log-mel."""
    return num_samples // int(SAMPLE_RATE * FRAME_PERIOD_MS / 1000) + 1


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or edge-pad the first axis of ``x`` to ``n`` rows."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)], axis=0)


def analyze(wave: np.ndarray, f0_method: str = "dio") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WORLD analysis of a 16-kHz wave [N]: ``(f0 [T] in Hz (0 = unvoiced), envelope [T, S], aperiodicity [T, S])``.

    ``f0_method``: ``dio`` (dio + stonemask refinement; fast, ~0.01 s per audio second here) or ``harvest``
    (more robust voicing decisions, ~25x slower)."""
    pw = load_pyworld()
    if f0_method not in F0_METHODS:
        raise ValueError(f"f0_method must be one of {F0_METHODS}, got {f0_method!r}")
    x = np.ascontiguousarray(np.asarray(wave, dtype=np.float64).reshape(-1))  # [N]
    if x.size < 2 * int(SAMPLE_RATE * FRAME_PERIOD_MS / 1000):
        raise ValueError(f"wave too short for WORLD analysis: {x.size} samples (need at least 320)")
    if f0_method == "dio":
        f0, t = pw.dio(x, SAMPLE_RATE, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_PERIOD_MS)  # [T], [T]
        f0 = pw.stonemask(x, f0, t, SAMPLE_RATE)  # [T]
    else:
        f0, t = pw.harvest(x, SAMPLE_RATE, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_PERIOD_MS)
    sp = pw.cheaptrick(x, f0, t, SAMPLE_RATE, fft_size=FFT_SIZE)  # [T, S]
    ap = pw.d4c(x, f0, t, SAMPLE_RATE, fft_size=FFT_SIZE)  # [T, S]
    n = num_frames(x.size)
    return _fit(f0, n), _fit(sp, n), _fit(ap, n)


def code_spectral_envelope(sp: np.ndarray, dims: int = ENVELOPE_DIMS) -> np.ndarray:
    """Envelope [T, S] (power) -> coded envelope [T, E] (pyworld's mel-cepstrum-like code)."""
    sp = np.maximum(np.ascontiguousarray(sp, dtype=np.float64), 1e-16)  # a digital-silence frame would give log(0)
    return load_pyworld().code_spectral_envelope(sp, SAMPLE_RATE, dims)


def decode_spectral_envelope(coded: np.ndarray) -> np.ndarray:
    """Coded envelope [T, E] -> envelope [T, S]."""
    return load_pyworld().decode_spectral_envelope(np.ascontiguousarray(coded, dtype=np.float64), SAMPLE_RATE, FFT_SIZE)


def code_aperiodicity(ap: np.ndarray) -> np.ndarray:
    """Aperiodicity [T, S] (0..1) -> band aperiodicity in dB [T, A]."""
    return load_pyworld().code_aperiodicity(np.ascontiguousarray(ap, dtype=np.float64), SAMPLE_RATE)


def decode_aperiodicity(coded: np.ndarray) -> np.ndarray:
    """Band aperiodicity [T, A] (dB) -> aperiodicity [T, S]."""
    coded = np.minimum(np.ascontiguousarray(coded, dtype=np.float64), 0.0)  # > 0 dB is not an aperiodicity
    return load_pyworld().decode_aperiodicity(coded, SAMPLE_RATE, FFT_SIZE)


def interpolate_lf0(f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F0 [T] in Hz (0 = unvoiced) -> ``(lf0 [T], vuv [T])``: log-F0 linearly interpolated through unvoiced
    frames (held flat before the first and after the last voiced frame), and the voiced flag as 0/1."""
    f0 = np.asarray(f0, dtype=np.float64)
    vuv = (f0 > 0).astype(np.float64)  # [T]
    idx = np.flatnonzero(vuv)
    if idx.size == 0:
        return np.full_like(f0, UNVOICED_LF0), vuv
    lf0 = np.interp(np.arange(f0.size), idx, np.log(f0[idx]))  # [T]; np.interp holds the end values flat
    return lf0, vuv


def world_features(wave: np.ndarray, f0_method: str = "dio", envelope_dims: int = ENVELOPE_DIMS) -> np.ndarray:
    """16-kHz wave [N] -> coded WORLD vector [T, E + 2 + A] float32 (layout in the module docstring)."""
    f0, sp, ap = analyze(wave, f0_method)
    lf0, vuv = interpolate_lf0(f0)
    feats = [code_spectral_envelope(sp, envelope_dims), lf0[:, None], vuv[:, None], code_aperiodicity(ap)]
    return np.concatenate(feats, axis=1).astype(np.float32)  # [T, E + 2 + A]


def synthesize(features: np.ndarray, envelope_dims: int = ENVELOPE_DIMS, num_samples: int | None = None,
               vuv_threshold: float = 0.5) -> np.ndarray:
    """Coded WORLD vector [T, E + 2 + A] -> 16-kHz wave float32 [N].

    Frames whose vuv value is below ``vuv_threshold`` are unvoiced (F0 0: noise excitation only).
    ``num_samples`` trims or zero-pads the result (default: ``(T - 1) * 160``, the span the frames cover)."""
    pw = load_pyworld()
    feats = np.asarray(features, dtype=np.float64)  # [T, D]
    if feats.ndim != 2 or feats.shape[1] != feature_dims(envelope_dims):
        raise ValueError(f"expected WORLD features [T, {feature_dims(envelope_dims)}], got {list(feats.shape)}")
    lay = layout(envelope_dims)
    voiced = feats[:, lay["vuv"]].reshape(-1) >= vuv_threshold  # [T]
    f0 = np.where(voiced, np.exp(np.clip(feats[:, lay["lf0"]].reshape(-1), np.log(F0_FLOOR), np.log(F0_CEIL))), 0.0)
    sp = decode_spectral_envelope(feats[:, lay["envelope"]])  # [T, S]
    ap = decode_aperiodicity(feats[:, lay["aperiodicity"]])  # [T, S]
    y = pw.synthesize(np.ascontiguousarray(f0), sp, ap, SAMPLE_RATE, FRAME_PERIOD_MS)  # [N']
    n = (len(feats) - 1) * int(SAMPLE_RATE * FRAME_PERIOD_MS / 1000) if num_samples is None else int(num_samples)
    y = y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))
    return y.astype(np.float32)


def warp_envelope(sp: np.ndarray, factor: float) -> np.ndarray:
    """Envelope [T, S] with its frequency axis stretched by ``factor`` (> 1: formants move up, as from a longer to
    a shorter vocal tract): output bin s reads the input at s / factor, linearly interpolated."""
    s = sp.shape[1]
    src = np.clip(np.arange(s) / factor, 0, s - 1)  # [S]
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, s - 1)
    frac = (src - lo)[None]  # [1, S]
    return sp[:, lo] * (1 - frac) + sp[:, hi] * frac  # [T, S]


def perturb_speaker(wave: np.ndarray, f0_factor: float, formant_factor: float, f0_method: str = "dio") -> np.ndarray:
    """The same words, in the same time, by a voice of another pitch and vocal-tract length: WORLD analysis, F0
    scaled by ``f0_factor``, the spectral envelope's frequency axis by ``formant_factor``, synthesis. ContentVec's
    speaker perturbation (Qian et al. 2022, formant and pitch shifts) made with WORLD instead of Praat.
    Returns float32 [N], the input's length and peak level; frame-exact, so the clip's 50-Hz units line up with
    the original's features."""
    pw = load_pyworld()
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    f0, sp, ap = analyze(wave, f0_method)  # [T], [T, S], [T, S]
    f0 = np.where(f0 > 0, np.clip(f0 * f0_factor, F0_FLOOR, F0_CEIL), 0.0)
    sp = np.ascontiguousarray(warp_envelope(sp, formant_factor))
    y = pw.synthesize(np.ascontiguousarray(f0), sp, np.ascontiguousarray(ap), SAMPLE_RATE, FRAME_PERIOD_MS)
    y = y[:wave.size] if len(y) >= wave.size else np.pad(y, (0, wave.size - len(y)))
    peak, got = float(np.abs(wave).max()), float(np.abs(y).max())
    return (y * (peak / got if got > 0 else 1.0)).astype(np.float32)


def copy_synthesis(wave: np.ndarray, f0_method: str = "dio", envelope_dims: int = ENVELOPE_DIMS) -> np.ndarray:
    """Analysis then synthesis through the coded features (nothing predicted): the ladder's topline.
    Returns float32 [N], the input's length."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    return synthesize(world_features(wave, f0_method, envelope_dims), envelope_dims, num_samples=wave.size)
