"""The acoustic log-mel spectrogram shared by speech tokenizers and vocoders.

Dimension legend:
    N  audio samples (16 kHz)     T  mel frames (100/s, one per HOP samples)     M  mel bins (80)
    S  linear-frequency bins (N_FFT // 2 + 1 = 513)

Whisper's own log-mel (:mod:`speechlm.model.encoder`) is an encoder input: it clips each clip's dynamic range
to 80 dB below its peak and rescales, which cannot be undone. This one is meant to be *inverted*: natural-log
magnitude mel with a fixed floor, the convention of HiFi-GAN / Vocos vocoders (``log(clamp(mel, 1e-5))``), so a
predicted or token-decoded mel goes back to sound (Griffin-Lim in :mod:`speechlm.vocoders`).
Acoustic tokens (:mod:`speechlm.tokenizers`) are fitted on these frames, and the unit vocoder predicts them.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 1024  # 64 ms FFT, 513 bins: enough frequency resolution for Griffin-Lim at 16 kHz (HiFi-GAN uses 1024 too)
WIN = 640  # 40 ms Hann window
HOP = 160  # 10 ms hop: 100 frames/s, twice the 50-Hz rate of Whisper/HuBERT units
N_MELS = 80
FLOOR = 1e-5  # log floor (HiFi-GAN's dynamic_range_compression clip value)
FRAME_RATE = SAMPLE_RATE / HOP  # 100.0


@functools.lru_cache(maxsize=1)
def mel_basis() -> torch.Tensor:
    """Slaney mel filterbank [M, S] from 0 to 8 kHz."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=N_MELS, min_frequency=0.0,
                         max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney")
    return torch.from_numpy(np.ascontiguousarray(fb.T)).float()  # [M, S]


@functools.lru_cache(maxsize=1)
def _window() -> torch.Tensor:
    return torch.hann_window(WIN)


def num_frames(num_samples: int) -> int:
    """Mel frames of a clip of ``num_samples`` (centred STFT): ``N // HOP + 1``."""
    return num_samples // HOP + 1


def stft_magnitude(wave: np.ndarray | torch.Tensor) -> torch.Tensor:
    """wave [N] -> linear magnitude [S, T]."""
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32) if not torch.is_tensor(wave) else wave).float()
    spec = torch.stft(x, N_FFT, HOP, win_length=WIN, window=_window(), center=True, return_complex=True)  # [S, T]
    return spec.abs()


def log_mel(wave: np.ndarray | torch.Tensor) -> torch.Tensor:
    """wave [N] (16 kHz float) -> natural-log mel [T, M], T = N // HOP + 1."""
    mag = stft_magnitude(wave)  # [S, T]
    mel = mel_basis() @ mag  # [M, T]
    return torch.clamp(mel, min=FLOOR).log().T.contiguous()  # [T, M]


def mel_to_magnitude(logmel: torch.Tensor) -> torch.Tensor:
    """Approximate inverse of the filterbank: log-mel [T, M] -> non-negative linear magnitude [S, T].

    The least-squares solution (pseudo-inverse of the [M, S] basis) clipped at zero: what librosa's
    ``mel_to_stft`` approximates with NNLS, close enough as Griffin-Lim's starting magnitude."""
    mel = logmel.float().exp().T  # [M, T]
    inv = torch.linalg.pinv(mel_basis())  # [S, M]
    return torch.clamp(inv @ mel, min=0.0)  # [S, T]
