"""Adapters: encoder frames [B, F, D] -> LLM input embeddings [B, A, H] at a lower frame rate.

Legend: B batch, F encoder frames (50/s for Whisper), D encoder width, A audio tokens (F / k), H LLM width,
k downsampling factor.

- ``StackingProjector`` (Ultravox, Fixie.ai 2024): concatenate k consecutive frames, then an MLP.
- ``ConvDownsampler`` (SpeechVerse, Das et al. 2024; OSUM, Geng et al. 2025): strided conv1d layers of
  stride 2 (log2 k of them), then a linear projection.
- ``StackTransformer``: frame stacking, then two small pre-norm Transformer layers at the adapter's frame rate
  before the projection (OSUM's adapter also ends in Transformer layers; Qwen-Audio / Soundwave put attention in
  the adaptor): each output frame sees the whole clip, which a CTC target over LLM tokens needs to decide which
  token a frame belongs to, at a cost that is small at 12.5 frames/s.
Both map lengths with ``out_lengths`` so padded frames never become audio tokens. With ``out_norm`` both end
in an RMSNorm (Ultravox's projector does the same); the builder sets its gain to the RMS of the LLM's token
embeddings, so audio frames start at the scale of the LLM's own inputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from speechlm.model.whisper_anchor import WhisperDecoderAdapter


class StackingProjector(nn.Module):
    """Frame stacking + MLP (Ultravox): k frames concatenated, LayerNorm, Linear-GELU-Linear."""

    def __init__(self, in_dim: int, out_dim: int, k: int = 8, hidden: int = 1024, out_norm: bool = False):
        super().__init__()
        self.k = k
        self.norm = nn.LayerNorm(in_dim * k)
        self.proj = nn.Sequential(nn.Linear(in_dim * k, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.out_norm = nn.RMSNorm(out_dim) if out_norm else None

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths + self.k - 1) // self.k

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, F, D] with zeros past ``lengths`` -> [B, A, H]; stacking never mixes frames of two clips."""
        b, f, d = x.shape  # [B, F, D]
        pad = (-f) % self.k
        x = nn.functional.pad(x, (0, 0, 0, pad))  # [B, F', D], F' multiple of k
        x = x.reshape(b, (f + pad) // self.k, d * self.k)  # [B, A, D*k]
        y = self.proj(self.norm(x))  # [B, A, H]
        return self.out_norm(y) if self.out_norm is not None else y


class ConvDownsampler(nn.Module):
    """Strided conv1d downsampler (SpeechVerse/OSUM): log2(k) stride-2 convs, LayerNorm, Linear."""

    def __init__(self, in_dim: int, out_dim: int, k: int = 4, hidden: int = 1024, out_norm: bool = False):
        super().__init__()
        if k < 1 or k & (k - 1):
            raise ValueError(f"conv adapter needs a power-of-two downsample factor, got {k}")
        self.k = k
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(int(math.log2(k))):
            layers += [nn.Conv1d(dim, hidden, kernel_size=3, stride=2, padding=1), nn.GELU()]
            dim = hidden
        self.convs = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, out_dim)
        self.out_norm = nn.RMSNorm(out_dim) if out_norm else None

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for _ in range(int(math.log2(self.k))):
            lengths = (lengths + 1) // 2  # kernel 3, stride 2, padding 1: ceil(L / 2)
        return lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, F, D] -> [B, A, H]. With ``lengths``, outputs past each clip's end are zeroed after every
        conv, as a clip convolved alone would see (the conv's own zero padding)."""
        h = x.transpose(1, 2)  # [B, D, F]
        for layer in self.convs:
            h = layer(h)
            if lengths is not None and isinstance(layer, nn.Conv1d):
                lengths = (lengths + 1) // 2
                keep = torch.arange(h.shape[-1], device=h.device)[None, :] < lengths.to(h.device)[:, None]  # [B, A']
                h = h * keep[:, None, :]
        y = self.proj(self.norm(h.transpose(1, 2)))  # [B, A, H]
        return self.out_norm(y) if self.out_norm is not None else y


class StackTransformer(nn.Module):
    """Frame stacking, Linear to the hidden width, 2 pre-norm Transformer layers (padding masked), Linear."""

    def __init__(self, in_dim: int, out_dim: int, k: int = 4, hidden: int = 1024, out_norm: bool = False,
                 layers: int = 2, width: int = 512, heads: int = 8):
        super().__init__()
        self.k = k
        self.norm = nn.LayerNorm(in_dim * k)
        self.inp = nn.Linear(in_dim * k, width)
        # 512 wide, 8 heads, 4x feed-forward (the base Transformer's ratio): ~6.3M parameters for 2 layers
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.1, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.out_norm = nn.RMSNorm(out_dim) if out_norm else None

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths + self.k - 1) // self.k

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, F, D] with zeros past ``lengths`` -> [B, A, H]; attention never looks past a clip's end, so a
        clip's output does not depend on what it is batched with."""
        b, f, d = x.shape  # [B, F, D]
        pad = (-f) % self.k
        x = nn.functional.pad(x, (0, 0, 0, pad)).reshape(b, (f + pad) // self.k, d * self.k)  # [B, A, D*k]
        h = self.inp(self.norm(x))  # [B, A, W]
        mask = None
        if lengths is not None:
            a = self.out_lengths(lengths.to(h.device))  # [B]
            mask = torch.arange(h.shape[1], device=h.device)[None, :] >= a[:, None]  # [B, A], True = padding
        h = self.layers(h, src_key_padding_mask=mask)  # [B, A, W]
        y = self.proj(h)  # [B, A, H]
        return self.out_norm(y) if self.out_norm is not None else y


ADAPTERS: dict[str, type[nn.Module]] = {"stack": StackingProjector, "conv": ConvDownsampler, "stack-tf": StackTransformer,
                                        "whisper-decoder": WhisperDecoderAdapter}
"""Adapter registry, keyed by the name used in recipes (`model.adapter`). ``whisper-decoder`` (speechlm.model.whisper_anchor)
wraps Whisper's frozen decoder, so the builder constructs it from the loaded Whisper rather than from this table."""
