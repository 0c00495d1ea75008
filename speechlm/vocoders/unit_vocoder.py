"""The unit vocoder network: deduplicated units -> durations -> 100-Hz acoustic features -> wave.

Owns :class:`UnitVocoder`, the CPU default of design/discrete-path.md (section C, "Pick for the CPU default"):

1. a unit embedding (K rows) and a small unit-level convolution stack (each unit sees its neighbours);
2. a duration predictor (two convolutions) regressing ``log(d + 1)`` of each unit's 50-Hz run length, trained
   with MSE; at inference ``d = clamp(round(exp(pred) - 1), min=1)`` (fairseq's unit HiFi-GAN convention:
   fairseq/models/text_to_speech/codehifigan.py ``CodeGenerator``, ``VariancePredictor``;
   speech-resynthesis examples/speech_to_speech_translation/models.py);
3. ``repeat_interleave`` by the durations (true ones in training, predicted or given at inference), then x2 to
   the 100-Hz frame rate of WORLD and data/mel.py;
4. a frame-level trunk of ``cfg.layers`` residual dilated convolutions of width ``cfg.hidden``, fed the unit
   vector plus where the frame sits inside its unit (so one unit's frames are not identical);
5. two heads: the coded WORLD vector (:mod:`speechlm.vocoders.world`: envelope, lf0, a vuv *logit*,
   aperiodicity) and the 80-d log-mel of :mod:`speechlm.data.mel`.

Both targets are regressed per dimension normalised (mean/std over the training frames, kept as buffers, so a
saved vocoder carries them). :meth:`UnitVocoder.synthesize` turns the heads into a wave through a back end:
``world`` (pyworld synthesis) or ``griffinlim`` (fast Griffin-Lim from the log-mel).

Frame-rate contract with the tokenizers: units and durations are at 50 Hz (20 ms, the Whisper / HuBERT rate);
for a clip of N samples the tokenizer gives ``sum(durations) = F = ceil((N // 160) / 2)`` while the acoustic
frames number ``T = N // 160 + 1`` (100 Hz). ``2F`` is ``T - 1`` (N // 160 even) or ``T`` (odd), so the
expanded frames are edge-padded by at most one frame to ``T`` in training, and ``T = 2F + 1`` at inference.

Dimension legend:
    B  clips in a batch     U  units (deduplicated)     F  50-Hz frames     T  100-Hz frames
    H  hidden width (cfg.hidden)     W  coded WORLD dims (E + 3)     M  mel bins (80)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from speechlm.config import VocoderConfig
from speechlm.data.mel import N_MELS
from speechlm.vocoders import world
from speechlm.vocoders.griffinlim import griffin_lim

BACKENDS = ("world", "griffinlim")
UNIT_KERNEL = 3  # unit-level convolutions see one neighbour each side (fairseq's VariancePredictor kernel)
TRUNK_KERNEL = 5  # frame-level kernel; with dilations 1, 2, 4 three blocks see +-28 frames (0.28 s)
DILATIONS = (1, 2, 4)


class UnitRangeError(ValueError):
    """Units outside 0..K-1 were given to a vocoder trained on K units."""


class _ConvBlock(nn.Module):
    """Pre-norm residual block: LayerNorm -> dilated conv -> GELU -> 1x1 conv, added back; padding re-zeroed."""

    def __init__(self, hidden: int, kernel: int, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.conv = nn.Conv1d(hidden, hidden, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.proj = nn.Conv1d(hidden, hidden, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(x).transpose(1, 2)  # [B, H, L]
        h = self.proj(self.drop(nn.functional.gelu(self.conv(h)))).transpose(1, 2)  # [B, L, H]
        return (x + h) * mask[..., None]  # [B, L, H]


class DurationPredictor(nn.Module):
    """fairseq's VariancePredictor shape: (conv k=3 -> ReLU -> LayerNorm -> dropout) x 2 -> linear, predicting
    ``log(d + 1)`` per unit."""

    def __init__(self, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, UNIT_KERNEL, padding=UNIT_KERNEL // 2) for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(2))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = self.drop(norm(torch.relu(conv(x.transpose(1, 2)).transpose(1, 2)))) * mask[..., None]  # [B, U, H]
        return self.out(x).squeeze(-1)  # [B, U]


def durations_from_log(log_dur: torch.Tensor) -> torch.Tensor:
    """Predicted ``log(d + 1)`` -> integer 50-Hz durations, ``clamp(round(exp(pred) - 1), min=1)`` (fairseq)."""
    return torch.clamp(torch.round(torch.exp(log_dur) - 1), min=1).long()


class UnitVocoder(nn.Module):
    """Deduplicated units [U] (+ optional 50-Hz durations) -> WORLD and log-mel frames -> 16-kHz wave.

    Args:
        k: number of units of the tokenizer it is trained for (embedding rows).
        cfg: width, depth and back end (:class:`~speechlm.config.VocoderConfig`).
        tokenizer_hash: the tokenizer's hash, recorded so the wrong tokenizer's units are refused at load.
    """

    def __init__(self, k: int, cfg: VocoderConfig | None = None, tokenizer_hash: str = ""):
        super().__init__()
        self.cfg = cfg = cfg or VocoderConfig()
        if cfg.backend not in BACKENDS:
            raise ValueError(f"vocoder backend must be one of {BACKENDS}, got {cfg.backend!r}")
        self.k = int(k)
        self.tokenizer_hash = tokenizer_hash
        self.folder: str | None = None  # set by load_vocoder, for error messages
        self.world_dims = world.feature_dims(cfg.envelope_dims)
        self.vuv_index = world.layout(cfg.envelope_dims)["vuv"].start
        h = cfg.hidden
        self.embed = nn.Embedding(self.k, h)
        self.unit_blocks = nn.ModuleList(_ConvBlock(h, UNIT_KERNEL) for _ in range(2))
        self.duration = DurationPredictor(h)
        self.position = nn.Linear(3, h)  # [position in its unit, its bump, log run length] -> H
        self.trunk = nn.ModuleList(_ConvBlock(h, TRUNK_KERNEL, DILATIONS[i % len(DILATIONS)]) for i in range(cfg.layers))
        self.out_norm = nn.LayerNorm(h)
        self.world_head = nn.Linear(h, self.world_dims)
        self.mel_head = nn.Linear(h, N_MELS)
        # Per-dimension normalisation of the targets (set from the training set by train_vocoder). The vuv
        # column stays mean 0 / std 1: the head's value there is a logit, not a normalised feature.
        self.register_buffer("world_mean", torch.zeros(self.world_dims))
        self.register_buffer("world_std", torch.ones(self.world_dims))
        self.register_buffer("mel_mean", torch.zeros(N_MELS))
        self.register_buffer("mel_std", torch.ones(N_MELS))

    # ------------------------------------------------------------------------------------------ network

    def encode_units(self, units: torch.Tensor, unit_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """units [B, U] -> ``(unit vectors [B, U, H], predicted log(d + 1) [B, U])``."""
        x = self.embed(units) * unit_mask[..., None]  # [B, U, H]
        for block in self.unit_blocks:
            x = block(x, unit_mask)  # [B, U, H]
        return x, self.duration(x, unit_mask)

    def expand(self, x: torch.Tensor, durations: torch.Tensor, unit_mask: torch.Tensor,
               frames: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit vectors [B, U, H] and 50-Hz durations [B, U] -> 100-Hz frames [B, T, H] and their mask [B, T].

        Each unit covers ``2 d`` frames; clip b is then trimmed or edge-padded to ``frames[b]`` (at most one
        frame when the durations come from the same clip: see the module docstring)."""
        batch, t_max = x.shape[0], max(frames)
        out = x.new_zeros(batch, t_max, x.shape[2])  # [B, T, H]
        pos = x.new_zeros(batch, t_max, 3)  # [B, T, 3]
        mask = torch.zeros(batch, t_max, dtype=torch.bool, device=x.device)  # [B, T]
        for b in range(batch):
            n = (2 * durations[b] * unit_mask[b]).long()  # [U] 100-Hz frames per unit
            idx = torch.repeat_interleave(torch.arange(len(n), device=x.device), n)  # [2F] unit of each frame
            if idx.numel() == 0:
                continue
            start = torch.cumsum(n, 0) - n  # [U] first frame of each unit
            within = torch.arange(idx.numel(), device=x.device) - start[idx]  # [2F] 0..2d-1
            length = n[idx].float()  # [2F]
            frac = (within.float() + 0.5) / length  # [2F] in (0, 1)
            feats = torch.stack([frac - 0.5, torch.sin(math.pi * frac), torch.log(length) / math.log(100.0)], -1)  # [2F, 3]
            t = frames[b]
            keep = min(t, idx.numel())
            fill = torch.cat([idx[:keep], idx[-1:].expand(t - keep)])  # [T_b] edge-padded unit indices
            out[b, :t] = x[b, fill]
            pos[b, :t] = torch.cat([feats[:keep], feats[-1:].expand(t - keep, 3)])
            mask[b, :t] = True
        return (out + self.position(pos)) * mask[..., None], mask

    def forward(self, units: torch.Tensor, unit_mask: torch.Tensor, durations: torch.Tensor | None = None,
                frames: list[int] | None = None) -> dict[str, torch.Tensor]:
        """units [B, U] (long), unit_mask [B, U] (bool), durations [B, U] (50-Hz, None: predicted), frames
        (100-Hz length per clip; default ``2 F + 1``). Returns ``log_dur`` [B, U], ``durations`` [B, U] used,
        ``world`` [B, T, W] (normalised; vuv column a logit), ``mel`` [B, T, M] (normalised), ``mask`` [B, T]."""
        x, log_dur = self.encode_units(units, unit_mask)  # [B, U, H], [B, U]
        if durations is None:
            durations = durations_from_log(log_dur) * unit_mask  # [B, U]
        if frames is None:
            frames = [int(2 * d.sum()) + 1 for d in durations]
        h, mask = self.expand(x, durations, unit_mask, frames)  # [B, T, H], [B, T]
        for block in self.trunk:
            h = block(h, mask)  # [B, T, H]
        h = self.out_norm(h)
        return {"log_dur": log_dur, "durations": durations, "world": self.world_head(h), "mel": self.mel_head(h),
                "mask": mask}

    # ------------------------------------------------------------------------------------------ inference

    def check_units(self, units: np.ndarray | torch.Tensor) -> torch.Tensor:
        """units [U] as a long tensor; raises :class:`UnitRangeError` naming the field for units outside 0..K-1."""
        u = torch.as_tensor(np.asarray(units) if not torch.is_tensor(units) else units).long().reshape(-1)  # [U]
        if u.numel() and (int(u.min()) < 0 or int(u.max()) >= self.k):
            where = f"vocoder {self.folder}: " if self.folder else "vocoder: "
            bad = int(u.max()) if int(u.max()) >= self.k else int(u.min())
            raise UnitRangeError(f"{where}units must lie in 0..{self.k - 1} (k = {self.k}, the tokenizer it was trained "
                                 f"on, tokenizer_hash {self.tokenizer_hash!r}); got unit {bad}: units from another "
                                 "tokenizer?")
        return u

    @torch.no_grad()
    def predict_features(self, units: np.ndarray | torch.Tensor,
                         durations: np.ndarray | torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Deduplicated units [U] (+ 50-Hz durations [U]) -> ``(WORLD vector [T, W] with the vuv column a
        probability, log-mel [T, M])``, de-normalised, T = 2 F + 1."""
        u = self.check_units(units)
        if u.numel() == 0:
            return np.zeros((0, self.world_dims), np.float32), np.zeros((0, N_MELS), np.float32)
        d = None
        if durations is not None:
            d = torch.as_tensor(np.asarray(durations)).long().reshape(1, -1)  # [1, U]
            if d.shape[1] != u.numel() or int(d.min()) < 1:
                raise ValueError(f"durations must be {u.numel()} positive integers (one per unit), got {list(d.shape)}")
        was = self.training
        self.eval()
        out = self(u[None], torch.ones(1, u.numel(), dtype=torch.bool), d)
        self.train(was)
        w = out["world"][0] * self.world_std + self.world_mean  # [T, W]
        w[:, self.vuv_index] = torch.sigmoid(out["world"][0, :, self.vuv_index])  # [T] voiced probability
        mel = out["mel"][0] * self.mel_std + self.mel_mean  # [T, M]
        return w.numpy().astype(np.float32), mel.numpy().astype(np.float32)

    def synthesize(self, units: np.ndarray | torch.Tensor, durations: np.ndarray | torch.Tensor | None = None,
                   backend: str | None = None) -> np.ndarray:
        """Deduplicated units [U] -> 16-kHz wave float32 [N], N = 2 F * 160 (F = sum of the durations, given
        or predicted). ``backend``: ``world`` or ``griffinlim`` (default: the one in the vocoder's config)."""
        backend = backend or self.cfg.backend
        if backend not in BACKENDS:
            raise ValueError(f"vocoder backend must be one of {BACKENDS}, got {backend!r}")
        feats, mel = self.predict_features(units, durations)
        if len(feats) == 0:
            return np.zeros(0, np.float32)
        if backend == "world":
            return world.synthesize(feats, self.cfg.envelope_dims)
        return griffin_lim(mel, iterations=self.cfg.griffinlim_iters)
