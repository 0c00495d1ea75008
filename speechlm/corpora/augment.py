"""Waveform augmentation that makes clean synthetic speech sound less like TTS: speed perturbation,
room reverberation and additive noise, seeded and numpy/scipy/soxr only.

What this module owns: the augmentation of one clip (:func:`apply_augment`), the per-clip random
choice of what to apply (:func:`plan_augment`, driven by an :class:`AugmentConfig`), the record of
what was applied (:class:`AugmentPlan`: its ``label`` such as ``"speed0.9+rir0.45s+noise20dB"`` goes
into a manifest's ``augment`` field, its ``key`` into file-name hashes), and the pieces:

* :func:`speed_perturb` - resample so the clip plays ``factor`` times faster (tempo and pitch both
  change, as with Kaldi's / Ko et al. 2015's 0.9 / 1.0 / 1.1 speed perturbation); length / factor.
* :func:`synthetic_rir` - a statistical room impulse response (Polack's model: Gaussian noise under
  an exponential envelope that falls 60 dB in RT60), with a direct path, a pre-delay, sparse early
  reflections and faster decay at high frequencies; :func:`reverberate` convolves with it;
  :func:`measure_rt60` reads RT60 back (Schroeder backward integration, T20 fit).
* :func:`add_noise` - white, pink or brown Gaussian noise at an exact SNR over the whole clip.

Why not pyroomacoustics (measured here, 0.10.1): the wheel installs in ~4 s, but its image-source
method takes 0.05 / 0.37 / 1.3 s per RIR at RT60 0.3 / 0.6 / 0.9 s (6x5x3 m room, 16 kHz), and its
faster hybrid ray-tracing mode (0.08-0.25 s) gives a different RIR on every call even after
``np.random.seed``, which breaks seeded corpora. The statistical RIR here takes ~1 ms.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "AugmentConfig",
    "AugmentPlan",
    "NOISE_COLOURS",
    "TAIL_MAX_S",
    "add_noise",
    "apply_augment",
    "coloured_noise",
    "measure_rt60",
    "plan_augment",
    "reverberate",
    "speed_perturb",
    "synthetic_rir",
]

_VERSION = 1
"""Bumped when an algorithm here changes, so file names that hash :attr:`AugmentPlan.key` change too."""

NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
"""Noise colour -> exponent alpha of its power spectrum 1/f**alpha."""

TAIL_MAX_S = 0.3
"""Reverberant tail kept after the dry signal ends, seconds (a guess: long enough to sound like a room,
short enough to keep clips near their planned length; the corpus trims to 0.1 s of silence)."""

# Reverberation time per band as a multiple of the nominal RT60 (the 500-4000 Hz band). Rooms decay
# faster at high frequencies (wall absorption and air absorption rise with frequency; Kuttruff, *Room
# Acoustics*, 5th ed., ch. 6); the exact multipliers are a guess.
_BAND_EDGES_HZ = (500.0, 4000.0)
_BAND_RT60_SCALE = (1.15, 1.0, 0.6)  # below 500 Hz, 500-4000 Hz, above 4000 Hz
_PREDELAY_S = (0.002, 0.008)  # direct sound -> first reflection: 0.7-2.7 m of extra path at 343 m/s (guess)
_EARLY_WINDOW_S = 0.05  # early reflections arrive within ~50 ms (the usual early/late boundary, C50)
_N_EARLY = 6
_LN_1000 = 3.0 * math.log(10.0)  # amplitude falls by 1e3 (60 dB) over one RT60


@dataclass(frozen=True)
class AugmentConfig:
    """What :func:`plan_augment` may apply to a clip, and how often. Each effect is drawn
    independently; all ranges are inclusive and sampled uniformly."""

    p_speed: float = 0.6
    """Probability of speed perturbation (with ``speeds`` = 0.9/1.1 this gives about one clip in
    five at each factor and two in five unchanged)."""
    speeds: tuple[float, ...] = (0.9, 1.1)
    """Factors to choose from (Ko et al., Interspeech 2015, "Audio augmentation for speech recognition")."""
    p_rir: float = 0.5
    """Probability of reverberation."""
    rt60_range: tuple[float, float] = (0.2, 0.8)
    """RT60 in seconds: small furnished rooms to large living rooms/classrooms (typical 0.3-0.8 s; guess)."""
    drr_range_db: tuple[float, float] = (0.0, 10.0)
    """Direct-to-reverberant ratio in dB: a near-field microphone (guess; far-field goes below 0)."""
    p_noise: float = 0.5
    """Probability of additive noise."""
    snr_range_db: tuple[float, float] = (10.0, 30.0)
    """SNR in dB: clearly audible to faint background noise (guess; MUSAN-style recipes use 0-20 dB)."""
    noise_colours: tuple[str, ...] = ("white", "pink", "brown")

    def __post_init__(self) -> None:
        for name in ("p_speed", "p_rir", "p_noise"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be in [0, 1], got {v}")
        if not self.speeds or any(not 0.5 <= s <= 2.0 for s in self.speeds):
            raise ValueError(f"AugmentConfig.speeds must be non-empty factors in [0.5, 2], got {self.speeds}")
        for name, lo_ok in (("rt60_range", 0.05), ("drr_range_db", -30.0), ("snr_range_db", -20.0)):
            lo, hi = getattr(self, name)
            if not lo_ok <= lo <= hi:
                raise ValueError(f"AugmentConfig.{name} must be (lo, hi) with {lo_ok} <= lo <= hi, got {(lo, hi)}")
        if self.rt60_range[1] > 3.0:
            raise ValueError(f"AugmentConfig.rt60_range: RT60 above 3 s is not a room for speech, got {self.rt60_range}")
        bad = [c for c in self.noise_colours if c not in NOISE_COLOURS]
        if not self.noise_colours or bad:
            raise ValueError(f"AugmentConfig.noise_colours: unknown {bad or 'empty'}; choose from {list(NOISE_COLOURS)}")


@dataclass(frozen=True)
class AugmentPlan:
    """What is applied to one clip; ``None`` fields are effects not applied. ``seed`` drives the noise
    and the RIR, so a plan reproduces its audio exactly."""

    speed: float | None = None
    rt60: float | None = None
    drr_db: float | None = None
    snr_db: float | None = None
    noise_colour: str | None = None
    seed: int = 0

    @property
    def label(self) -> str:
        """``"speed0.9+rir0.45s+noise20dB"`` (applied effects in order), or ``"none"``."""
        parts = []
        if self.speed is not None:
            parts.append(f"speed{self.speed:g}")
        if self.rt60 is not None:
            parts.append(f"rir{self.rt60:.2f}s")
        if self.snr_db is not None:
            parts.append(f"noise{self.snr_db:g}dB")
        return "+".join(parts) or "none"

    @property
    def key(self) -> str:
        """Everything that shapes the audio, for file-name hashes (includes the algorithm version)."""
        return f"aug{_VERSION}:{self.speed}:{self.rt60}:{self.drr_db}:{self.snr_db}:{self.noise_colour}:{self.seed}"

    def labels(self) -> dict[str, Any]:
        """Manifest fields: ``augment`` (the label) and ``augment_params`` (the applied values)."""
        params = {k: v for k, v in asdict(self).items() if v is not None and k != "seed"}
        return {"augment": self.label, "augment_params": params}

    def length_factor(self, sr: int = 16000) -> tuple[float, float]:
        """``(scale, extra_seconds)``: an n-second clip comes out ``n * scale + extra_seconds`` long
        (at most; the reverberant tail is shorter when RT60 is)."""
        return (1.0 / self.speed if self.speed else 1.0), (TAIL_MAX_S if self.rt60 is not None else 0.0)


def plan_augment(rng: np.random.Generator, config: AugmentConfig | None = None) -> AugmentPlan:
    """Draw one clip's :class:`AugmentPlan`. The same number of values is drawn whatever is applied,
    so a plan depends only on ``rng``'s state and ``config``."""
    c = config or AugmentConfig()
    u = rng.random(3)  # (3,) apply speed / rir / noise?
    speed = float(c.speeds[int(rng.integers(len(c.speeds)))])
    rt60 = round(float(rng.uniform(*c.rt60_range)), 2)
    drr = round(float(rng.uniform(*c.drr_range_db)), 1)
    snr = round(float(rng.uniform(*c.snr_range_db)), 1)
    colour = c.noise_colours[int(rng.integers(len(c.noise_colours)))]
    seed = int(rng.integers(2**31))
    return AugmentPlan(
        speed=speed if u[0] < c.p_speed and speed != 1.0 else None,
        rt60=rt60 if u[1] < c.p_rir else None,
        drr_db=drr if u[1] < c.p_rir else None,
        snr_db=snr if u[2] < c.p_noise else None,
        noise_colour=colour if u[2] < c.p_noise else None,
        seed=seed,
    )


def _mono(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"{what}: expected 1-D mono samples, got shape {x.shape}")
    if x.size and not np.isfinite(x).all():
        raise ValueError(f"{what}: samples contain NaN or inf")
    return x


def speed_perturb(x: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster by resampling (soxr HQ): length becomes ``len(x) / factor``,
    pitch rises by the same factor."""
    import soxr

    x = _mono(x, "speed_perturb")
    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"speed_perturb: factor must be in [0.5, 2], got {factor}")
    if factor == 1.0 or x.size == 0:
        return x.copy()
    # Treat the samples as recorded at sr * factor and resample to sr.
    return np.asarray(soxr.resample(x, sr * factor, sr, quality="HQ"), dtype=np.float32)  # (len / factor,)


def coloured_noise(n: int, rng: np.random.Generator, colour: str = "white") -> np.ndarray:
    """``n`` samples of Gaussian noise with power spectrum 1/f**alpha (white 0, pink 1, brown 2),
    scaled to unit mean power."""
    if colour not in NOISE_COLOURS:
        raise ValueError(f"unknown noise colour {colour!r}; choose from {list(NOISE_COLOURS)}")
    w = rng.standard_normal(n)  # (n,)
    alpha = NOISE_COLOURS[colour]
    if alpha and n > 2:
        spec = np.fft.rfft(w)  # (n // 2 + 1,)
        f = np.fft.rfftfreq(n)  # (n // 2 + 1,)
        f[0] = f[1]  # no infinite DC gain
        w = np.fft.irfft(spec * f ** (-alpha / 2.0), n)  # (n,)
        w -= w.mean()
    p = float(np.mean(w**2)) if n else 0.0
    return (w / math.sqrt(p) if p > 0 else w).astype(np.float32)


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator, colour: str = "white") -> np.ndarray:
    """``x`` plus noise whose mean power is ``snr_db`` below ``x``'s mean power over the whole clip.

    Raises:
        ValueError: ``x`` is empty or silent (no SNR is defined).
    """
    x = _mono(x, "add_noise")
    p_sig = float(np.mean(x.astype(np.float64) ** 2)) if x.size else 0.0
    if p_sig <= 0.0:
        raise ValueError("add_noise: the signal is empty or silent, so an SNR cannot be set")
    noise = coloured_noise(x.size, rng, colour)  # (n,) unit power
    return (x + noise * math.sqrt(p_sig / 10.0 ** (snr_db / 10.0))).astype(np.float32)


def synthetic_rir(sr: int, rt60: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    """A room impulse response ``rt60`` seconds long, normalised to unit energy.

    Direct path at sample 0; after a 2-8 ms pre-delay, six early reflections within 50 ms and a
    diffuse tail of Gaussian noise whose envelope falls 60 dB in ``rt60`` (per band: x1.15 below
    500 Hz, x0.6 above 4 kHz). The reverberant part is scaled so direct energy / reverberant energy
    is ``drr_db``.
    """
    from scipy.signal import butter, sosfilt

    if not 0.05 <= rt60 <= 3.0:
        raise ValueError(f"synthetic_rir: rt60 must be in [0.05, 3] s, got {rt60}")
    n = int(round(rt60 * max(_BAND_RT60_SCALE) * sr))  # long enough for the slowest band
    t = np.arange(n) / sr  # (n,) seconds
    white = rng.standard_normal(n)  # (n,)
    lo, hi = _BAND_EDGES_HZ
    bands = [butter(4, lo, "lowpass", fs=sr, output="sos"),
             butter(4, (lo, min(hi, 0.45 * sr)), "bandpass", fs=sr, output="sos"),
             butter(4, min(hi, 0.45 * sr), "highpass", fs=sr, output="sos")]
    tail = np.zeros(n)  # (n,)
    for sos, scale in zip(bands, _BAND_RT60_SCALE):
        tail += sosfilt(sos, white) * np.exp(-_LN_1000 * t / (rt60 * scale))
    d0 = int(round(rng.uniform(*_PREDELAY_S) * sr))
    tail[: d0] = 0.0
    # Early reflections: single spikes riding on the envelope, random sign.
    env = np.exp(-_LN_1000 * t / rt60)  # (n,)
    pos = rng.integers(d0, max(d0 + 1, min(n, int(_EARLY_WINDOW_S * sr))), size=_N_EARLY)  # (6,)
    tail[pos] += rng.choice([-1.0, 1.0], size=_N_EARLY) * rng.uniform(2.0, 4.0, size=_N_EARLY) * env[pos]
    e_rev = float(np.sum(tail**2))
    h = tail * math.sqrt(10.0 ** (-drr_db / 10.0) / e_rev)  # direct energy 1, so DRR = -10 log10(e_rev)
    h[0] += 1.0
    return (h / math.sqrt(float(np.sum(h**2)))).astype(np.float32)  # (n,)


def reverberate(x: np.ndarray, sr: int, rir: np.ndarray, tail_max_s: float = TAIL_MAX_S) -> np.ndarray:
    """``x`` convolved with ``rir``, keeping at most ``tail_max_s`` of reverberant tail after the dry
    end (with a 10 ms fade-out where it is cut)."""
    from scipy.signal import fftconvolve

    x = _mono(x, "reverberate")
    rir = _mono(rir, "reverberate (rir)")
    if rir.size == 0:
        raise ValueError("reverberate: empty impulse response")
    y = fftconvolve(x, rir)  # (len(x) + len(rir) - 1,)
    keep = x.size + min(rir.size - 1, int(round(tail_max_s * sr)))
    if keep < y.size:
        y = y[:keep]
        fade = min(int(0.01 * sr), keep)
        y[keep - fade:] *= np.linspace(1.0, 0.0, fade)
    return y.astype(np.float32)


def measure_rt60(rir: np.ndarray, sr: int) -> float:
    """RT60 of an impulse response from its Schroeder energy decay curve: a line fitted between -5 and
    -25 dB, extrapolated to -60 dB (the T20 method of ISO 3382-1)."""
    h = np.asarray(rir, dtype=np.float64)
    edc = np.cumsum((h**2)[::-1])[::-1]  # (n,) energy remaining after each sample
    if edc[0] <= 0:
        raise ValueError("measure_rt60: silent impulse response")
    db = 10.0 * np.log10(np.maximum(edc / edc[0], 1e-300))  # (n,)
    idx = np.flatnonzero((db <= -5.0) & (db >= -25.0))
    if idx.size < 2:
        raise ValueError("measure_rt60: the decay does not span -5 to -25 dB")
    slope = np.polyfit(idx / sr, db[idx], 1)[0]  # dB per second (negative)
    return float(-60.0 / slope)


def apply_augment(x: np.ndarray, sr: int, plan: AugmentPlan) -> np.ndarray:
    """Apply ``plan`` to ``x``: speed, then reverberation, then noise (noise reaches the microphone
    after the room). Returns float32; not re-normalised (the corpus builder normalises the peak)."""
    x = _mono(x, "apply_augment")
    rng = np.random.default_rng([plan.seed, _VERSION])
    if plan.speed is not None:
        x = speed_perturb(x, sr, plan.speed)
    if plan.rt60 is not None:
        x = reverberate(x, sr, synthetic_rir(sr, plan.rt60, plan.drr_db if plan.drr_db is not None else 5.0, rng))
    if plan.snr_db is not None:
        x = add_noise(x, plan.snr_db, rng, plan.noise_colour or "white")
    return x
