"""Speech encoder: log-mel features + a Whisper-family encoder run on the real length of the audio.

Dimension legend (used in shape comments):
    B  batch            N  audio samples (16 kHz)      M  mel bins (80)
    T  mel frames (100/s)   F  encoder frames (50/s, after the stride-2 conv)   D  encoder width

Whisper was trained on 30-s windows and the Hugging Face encoder refuses anything shorter (it checks for
3000 mel frames). Encoding a 5-s clip padded to 30 s spends 6x the compute on silence; here the conv stem
and the layers run on the real frames, with the positional table sliced to F positions and an attention
mask over the padding between clips of one batch. ``pad_to_30s=True`` keeps Whisper's own setup for
comparison (the output is then cut back to the real frames).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms window, Whisper (Radford et al. 2022, sec. 2.2)
HOP = 160  # 10 ms hop
CHUNK_SAMPLES = 30 * SAMPLE_RATE


def mel_filters(n_mels: int = 80) -> torch.Tensor:
    """Slaney-style mel filterbank [M, N_FFT//2+1], the one Whisper's feature extractor uses."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2, num_mel_filters=n_mels, min_frequency=0.0, max_frequency=8000.0,
        sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney",
    )  # [N_FFT//2+1, M]
    return torch.from_numpy(np.ascontiguousarray(fb.T)).float()  # [M, N_FFT//2+1]


class SpeechEncoder(nn.Module):
    """Wraps a Hugging Face ``WhisperEncoder``; ``forward(waves)`` -> (frames [B, F, D], lengths [B])."""

    def __init__(self, whisper_encoder: nn.Module, pad_to_30s: bool = False):
        super().__init__()
        self.encoder = whisper_encoder
        self.pad_to_30s = pad_to_30s
        n_mels = whisper_encoder.config.num_mel_bins
        self.register_buffer("filters", mel_filters(n_mels), persistent=False)  # [M, 201]
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)  # [400]
        self.max_frames = whisper_encoder.config.max_source_positions  # 1500 for 30 s

    @property
    def dim(self) -> int:
        return self.encoder.config.d_model

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Whisper log-mel of one clip: wave [N] -> [M, N // HOP]; the same numbers as WhisperFeatureExtractor."""
        stft = torch.stft(wave, N_FFT, HOP, window=self.window, return_complex=True)  # [201, N//HOP + 1]
        power = stft[..., :-1].abs() ** 2  # [201, T]
        mel = self.filters @ power  # [M, T]
        log = torch.clamp(mel, min=1e-10).log10()
        log = torch.maximum(log, log.max() - 8.0)  # 80 dB dynamic range, as Whisper
        return (log + 4.0) / 4.0

    def features(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch of clips -> padded mel [B, M, T] and mel lengths [B]."""
        if self.pad_to_30s:
            mels = [self.log_mel(nn.functional.pad(w, (0, max(0, CHUNK_SAMPLES - w.numel())))[:CHUNK_SAMPLES]) for w in waves]
            lengths = torch.tensor([min(w.numel() // HOP, 2 * self.max_frames) for w in waves])
            return torch.stack(mels), lengths  # [B, M, 3000]
        mels = [self.log_mel(w) for w in waves]  # each [M, T_i]
        lengths = torch.tensor([m.shape[1] for m in mels])
        t_max = int(lengths.max())
        t_max += t_max % 2  # even, so the stride-2 conv maps padding cleanly
        # Zero padding: what the conv stem's own padding=1 shows a clip encoded alone, so batching changes nothing.
        batch = torch.stack([nn.functional.pad(m, (0, t_max - m.shape[1])) for m in mels])
        return batch, lengths  # [B, M, T]

    def forward(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mel, mel_lengths = self.features(waves)  # [B, M, T], [B]
        if mel.shape[-1] > 2 * self.max_frames:
            raise ValueError(f"audio longer than {2 * self.max_frames * HOP / SAMPLE_RATE:.0f} s reached the encoder")
        enc = self.encoder
        lengths = (mel_lengths + 1) // 2  # [B] frames after the stride-2 conv (ceil(T/2))
        x = nn.functional.gelu(enc.conv1(mel))  # [B, D, T]
        if not self.pad_to_30s:
            # conv1 outputs past a clip's end would leak into its last conv2 frame; a clip encoded alone sees zeros
            valid = torch.arange(x.shape[-1], device=x.device)[None, :] < mel_lengths.to(x.device)[:, None]  # [B, T]
            x = x * valid[:, None, :]
        x = nn.functional.gelu(enc.conv2(x))  # [B, D, F]
        x = x.transpose(1, 2)  # [B, F, D]
        f = x.shape[1]
        x = x + enc.embed_positions.weight[:f]  # slice the learned/sinusoidal table to the real length
        mask = None
        if not self.pad_to_30s and lengths.min() < f:
            keep = torch.arange(f, device=x.device)[None, :] < lengths.to(x.device)[:, None]  # [B, F]
            mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device)
            mask = mask.masked_fill(~keep, torch.finfo(x.dtype).min)[:, None, None, :]  # [B, 1, 1, F]
            mask = mask.expand(-1, 1, f, -1)  # [B, 1, F, F]
        for layer in enc.layers:
            out = layer(x, mask)
            x = out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple, 5.x a tensor
        x = enc.layer_norm(x)  # [B, F, D]
        if self.pad_to_30s:
            x = x[:, : int(lengths.max())]
        # Zero the frames past each clip's end: the adapter stacks/convolves neighbours, and a clip's output
        # must not depend on which longer clips share its batch.
        keep = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]  # [B, F]
        return x * keep[..., None], lengths


def num_frames(num_samples: int) -> int:
    """Encoder frames for a clip of ``num_samples`` at 16 kHz (real-length encoding)."""
    return math.ceil((num_samples // HOP) / 2)
