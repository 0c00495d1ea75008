"""Griffin-Lim phase reconstruction from the invertible log-mel of :mod:`speechlm.data.mel`.

Owns the zero-training back end: a log-mel [T, 80] (predicted by the unit vocoder, decoded from acoustic tokens,
or computed from a wave) -> linear magnitude -> phase by fast Griffin-Lim -> wave. Also the oracle
:func:`copy_synthesis` (wave -> log-mel -> wave) and :func:`spectral_convergence` to score it.

Fast Griffin-Lim (Perraudin, Balazs & Sondergaard, "A fast Griffin-Lim algorithm", WASPAA 2013): the plain
alternating projections (Griffin & Lim 1984) plus an inertial step ``t_n = c_n + alpha (c_n - c_{n-1})``,
alpha = 0.99 as the paper recommends; it reaches in ~32 iterations what the plain algorithm needs ~100+ for.

Dimension legend:
    N  audio samples (16 kHz)     T  frames (100/s, HOP = 160)     M  mel bins (80)
    S  linear-frequency bins (N_FFT // 2 + 1 = 513)
"""

from __future__ import annotations

import numpy as np
import torch

from speechlm.data.mel import HOP, N_FFT, WIN, _window, log_mel, mel_basis, mel_to_magnitude, stft_magnitude

ITERATIONS = 32  # fast Griffin-Lim converges in tens of iterations (Perraudin et al. 2013, Fig. 2)
MOMENTUM = 0.99  # alpha of Perraudin et al. 2013 (also torchaudio's GriffinLim default)
NNLS_ITERATIONS = 20  # projected-gradient steps refining the pseudo-inverse magnitude (see _mel_to_magnitude)


def _stft(x: torch.Tensor) -> torch.Tensor:
    return torch.stft(x, N_FFT, HOP, win_length=WIN, window=_window(), center=True, return_complex=True)  # [S, T]


def _istft(spec: torch.Tensor, length: int | None) -> torch.Tensor:
    return torch.istft(spec, N_FFT, HOP, win_length=WIN, window=_window(), center=True, length=length)  # [N]


def _mel_to_magnitude(logmel: torch.Tensor, iterations: int = NNLS_ITERATIONS) -> torch.Tensor:
    """log-mel [T, M] -> magnitude [S, T]: data/mel.py's clipped pseudo-inverse, then a few projected-gradient
    steps on ``||B s - m||^2`` with ``s >= 0`` (the non-negative least squares librosa's ``mel_to_stft`` solves),
    which removes most of the negative lobes the clipping leaves as spurious energy between harmonics."""
    mag = mel_to_magnitude(logmel)  # [S, T]
    if iterations <= 0:
        return mag
    basis = mel_basis()  # [M, S]
    target = logmel.float().exp().T  # [M, T]
    step = 1.0 / float(torch.linalg.matrix_norm(basis, ord=2) ** 2)  # 1/L: the gradient's Lipschitz constant
    for _ in range(iterations):
        mag = torch.clamp(mag - step * (basis.T @ (basis @ mag - target)), min=0.0)  # [S, T]
    return mag


@torch.no_grad()
def griffin_lim(logmel: torch.Tensor | np.ndarray, iterations: int = ITERATIONS, momentum: float = MOMENTUM,
                num_samples: int | None = None, seed: int = 0) -> np.ndarray:
    """Natural-log mel [T, M] (data/mel.py convention) -> 16-kHz wave float32 [N].

    ``num_samples`` trims or pads the result (default ``(T - 1) * HOP``); ``seed`` fixes the random initial
    phase, so the same mel always gives the same wave."""
    lm = torch.as_tensor(np.asarray(logmel, dtype=np.float32) if not torch.is_tensor(logmel) else logmel).float()
    if lm.ndim != 2 or lm.shape[1] != mel_basis().shape[0]:
        raise ValueError(f"expected a log-mel [T, {mel_basis().shape[0]}], got {list(lm.shape)}")
    return _griffin_lim(_mel_to_magnitude(lm), iterations, momentum, num_samples, seed)


def _griffin_lim(mag: torch.Tensor, iterations: int, momentum: float, num_samples: int | None, seed: int) -> np.ndarray:
    """Linear magnitude [S, T] -> wave [N] by fast Griffin-Lim."""
    length = (mag.shape[1] - 1) * HOP if num_samples is None else int(num_samples)
    gen = torch.Generator().manual_seed(seed)
    phase = torch.rand(mag.shape, generator=gen) * (2 * torch.pi)  # [S, T]
    t = torch.polar(mag, phase)  # [S, T] complex
    prev = None
    for _ in range(iterations):
        proj = mag * torch.exp(1j * torch.angle(t))  # P_C2: impose the target magnitude
        c = _stft(_istft(proj, length))[:, : mag.shape[1]]  # P_C1: nearest consistent spectrogram [S, T]
        t = c if prev is None else c + momentum * (c - prev)
        prev = c
    y = _istft(mag * torch.exp(1j * torch.angle(t)), length)  # [N]
    return y.numpy().astype(np.float32)


def copy_synthesis(wave: np.ndarray, iterations: int = ITERATIONS) -> np.ndarray:
    """wave [N] -> log-mel -> Griffin-Lim -> wave [N] (float32, the input's length): the mel back end's topline."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    return griffin_lim(log_mel(wave), iterations=iterations, num_samples=wave.size)


def spectral_convergence(wave: np.ndarray, reference: np.ndarray) -> float:
    """``|| |S_ref| - |S| ||_F / || |S_ref| ||_F`` over the shared frames: 0 for the same magnitude
    (phase ignored), ~1 or more for unrelated signals (Sturmel & Daudet 2011's inconsistency measure)."""
    a = stft_magnitude(np.asarray(reference, dtype=np.float32))  # [S, T]
    b = stft_magnitude(np.asarray(wave, dtype=np.float32))  # [S, T']
    n = min(a.shape[1], b.shape[1])
    a, b = a[:, :n], b[:, :n]
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(a).clamp(min=1e-12))
