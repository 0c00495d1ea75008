"""Speech encoder: log-mel features + a Whisper-family encoder run on the real length of the audio.

Dimension legend (used in shape comments):
    B  batch            N  audio samples (16 kHz)      M  mel bins (80)
    T  mel frames (100/s)   F  encoder frames (50/s, after the stride-2 conv)   D  encoder width

Whisper was trained on 30-s windows and the Hugging Face encoder refuses anything shorter (it checks for
3000 mel frames). Encoding a 5-s clip padded to 30 s spends 6x the compute on silence; here the conv stem
and the layers run on the real frames, with the positional table sliced to F positions and an attention
mask over the padding between clips of one batch. ``pad_to_30s=True`` keeps Whisper's own setup for
comparison (the output is then cut back to the real frames, unless ``keep_window``: Whisper's own decoder, the
``whisper-decoder`` anchor adapter, reads the whole window, silence included).

**Top layers on cached frames.** ``top_layers`` (N, set from ``model.train_encoder_layers``) says which layers
may train. Cached features of such a model are the hidden states below those layers (``forward(waves,
below_top=N)``: the stem and the frozen layers, no final norm); :meth:`forward_top` runs the top N layers and the
final norm on them, so training from cached features costs only the trained layers (speechlm.model.features).

The padding mask takes the form the encoder's attention kernel reads (``config._attn_implementation``): a boolean
[B, 1, 1, F] for SDPA (any query dtype), a [B, F] keep mask for flash-attention (transformers unpads by it), an
additive float mask in the scores' dtype for eager. The weights may be bf16 (``model.dtype``) with the trained top
layers in fp32: the mel goes in at the stem's dtype, each layer gets its input in its own weights' dtype (so the
forward runs with autocast off), and the frames come out in fp32 for the adapter's fp32 weights.
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

    def __init__(self, whisper_encoder: nn.Module, pad_to_30s: bool = False, top_layers: int = 0,
                 keep_window: bool = False):
        super().__init__()
        self.encoder = whisper_encoder
        self.pad_to_30s = pad_to_30s
        if keep_window and not pad_to_30s:
            raise ValueError("keep_window needs pad_to_30s: there is no window to keep on real-length frames")
        self.keep_window = keep_window  # return all 1500 frames of the 30-s window (lengths still the speech's)
        if not 0 <= top_layers <= len(whisper_encoder.layers):
            raise ValueError(f"top_layers={top_layers}: the encoder has {len(whisper_encoder.layers)} layers")
        self.top_layers = top_layers  # the layers that may train, and that cached features stop below
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
        """Batch of clips -> padded mel [B, M, T] and mel lengths [B], in fp32 even under autocast (the filterbank
        matmul in bf16 would round the power spectrum to 3 significant digits before the log)."""
        with torch.autocast(waves[0].device.type, enabled=False):
            return self._features(waves)

    def _features(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
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

    def forward(self, waves: list[torch.Tensor], below_top: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """waves -> frames [B, F, D] (zero past each clip's end) and lengths [B]. ``below_top`` N > 0 stops below
        the top N layers and skips the final norm: the hidden states :meth:`forward_top` takes."""
        mel, mel_lengths = self.features(waves)  # [B, M, T], [B]
        if mel.shape[-1] > 2 * self.max_frames:
            raise ValueError(f"audio longer than {2 * self.max_frames * HOP / SAMPLE_RATE:.0f} s reached the encoder")
        enc = self.encoder
        lengths = (mel_lengths + 1) // 2  # [B] frames after the stride-2 conv (ceil(T/2))
        x = nn.functional.gelu(enc.conv1(mel.to(enc.conv1.weight.dtype)))  # [B, D, T]
        if not self.pad_to_30s:
            # conv1 outputs past a clip's end would leak into its last conv2 frame; a clip encoded alone sees zeros
            valid = torch.arange(x.shape[-1], device=x.device)[None, :] < mel_lengths.to(x.device)[:, None]  # [B, T]
            x = x * valid[:, None, :]
        x = nn.functional.gelu(enc.conv2(x))  # [B, D, F]
        x = x.transpose(1, 2)  # [B, F, D]
        f = x.shape[1]
        x = x + enc.embed_positions.weight[:f]  # slice the learned/sinusoidal table to the real length
        if not 0 <= below_top <= len(enc.layers):
            raise ValueError(f"below_top={below_top}: the encoder has {len(enc.layers)} layers")
        x = self._layers(x, lengths, enc.layers[: len(enc.layers) - below_top])  # [B, F, D]
        if below_top == 0:
            x = self._norm(x)
        if self.keep_window:  # Whisper's own input to its decoder: every frame of the window, and the speech's length
            return x.float(), lengths
        if self.pad_to_30s:
            x = x[:, : int(lengths.max())]
        return self._zero_padding(x, lengths), lengths

    def forward_top(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden states below the top ``top_layers`` layers [B, F, D] (zero padded; cached features) -> the
        encoder's output [B, F, D]: those layers, then the final norm, as :meth:`forward` would run them."""
        enc = self.encoder
        x = self._layers(hidden, lengths, enc.layers[len(enc.layers) - self.top_layers:])
        return self._zero_padding(self._norm(x), lengths)

    def _layers(self, x: torch.Tensor, lengths: torch.Tensor, layers) -> torch.Tensor:
        """x [B, F, D] through ``layers``, with a padding mask when a clip is shorter than F."""
        f = x.shape[1]
        valid = None
        if not self.pad_to_30s and lengths.min() < f:
            valid = torch.arange(f, device=x.device)[None, :] < lengths.to(x.device)[:, None]  # [B, F]
        for layer in layers:
            dtype = next(layer.parameters()).dtype  # fp32 for a trained top layer over bf16 frozen ones
            x = x.to(dtype)
            out = layer(x, self.attention_mask(valid, dtype) if valid is not None else None)
            x = out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple, 5.x a tensor
        return x

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        norm_weight = getattr(self.encoder.layer_norm, "weight", None)  # None: an Identity (a middle-layer view)
        return self.encoder.layer_norm(x if norm_weight is None else x.to(norm_weight.dtype))  # [B, F, D]

    @staticmethod
    def _zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Zero the frames past each clip's end, in fp32: the adapter stacks/convolves neighbours, and a clip's
        output must not depend on which longer clips share its batch."""
        keep = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]  # [B, F]
        return (x * keep[..., None]).float()

    def attention_mask(self, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Padding mask from ``valid`` [B, F] (True on real frames) in the form the attention kernel reads; ``dtype``
        is the layer's weights' (what the scores are in unless autocast is on)."""
        impl = getattr(self.encoder.config, "_attn_implementation", None) or "eager"
        if impl.startswith("flash_attention"):
            return valid.long()  # [B, F]: transformers' flash path unpads the keys and queries by it
        if impl == "sdpa":
            return valid[:, None, None, :]  # [B, 1, 1, F] boolean, True = attend: SDPA takes it for any query dtype
        dev = valid.device.type
        if torch.is_autocast_enabled(dev):  # the q·k matmul runs in the autocast dtype
            dtype = torch.get_autocast_dtype(dev)
        mask = torch.zeros(valid.shape, dtype=dtype, device=valid.device)
        return mask.masked_fill(~valid, torch.finfo(dtype).min)[:, None, None, :]  # [B, 1, 1, F] additive


def num_frames(num_samples: int) -> int:
    """Encoder frames for a clip of ``num_samples`` at 16 kHz (real-length encoding)."""
    return math.ceil((num_samples // HOP) / 2)
