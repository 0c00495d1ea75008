"""Frames of one speech-encoder layer at 50 Hz, on the real length of the audio.

Dimension legend:
    B  batch     N  audio samples (16 kHz)     F  encoder frames (50/s)     D  encoder width     L  layer (1-based)

Whisper-family encoders (a registry name of :data:`speechlm.model.builders.ENCODERS`, or a Hugging Face Whisper
folder / hub id) run through :class:`speechlm.model.encoder.SpeechEncoder`, which encodes the real frames with the
positional table sliced (no 30-s padding). Stopping after layer L is done by composition: SpeechEncoder wraps a
:class:`_WhisperPrefix`, a view of the first L layers of the same frozen encoder. Numbering follows Hugging Face's
``hidden_states``: layer 0 is the conv stem + positions, layer L < n the residual stream after layer L, and the
last layer includes the final layer norm (what Whisper's decoder reads).

Other Hugging Face speech encoders (HuBERT, wav2vec2, WavLM; local folder or hub id) run through ``AutoModel``
with ``output_hidden_states``; their 20-ms conv stride (320 samples) gives 50 frames/s as well. They are run one
clip at a time: the group-norm feature encoder of the base models normalises over time, so padding a clip in a
batch would change its frames.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from speechlm.model.encoder import SpeechEncoder
from speechlm.model.encoder import num_frames as whisper_num_frames

__all__ = ["FRAME_RATE", "LayerFeatures", "is_whisper", "padding_mask", "run_layers"]

FRAME_RATE = 50.0  # Whisper: 100-Hz mel through a stride-2 conv; HuBERT/wav2vec2: 320-sample conv stride at 16 kHz
SAMPLE_RATE = 16000


def is_whisper(encoder: str) -> bool:
    """True for a Whisper-family encoder: a registry name, or a folder / hub id whose config says ``whisper``."""
    from speechlm.model.builders import ENCODERS

    if encoder in ENCODERS or encoder == "tiny.en-ct2":
        return True
    cfg = Path(encoder) / "config.json"
    if cfg.exists():
        return json.loads(cfg.read_text("utf-8")).get("model_type") == "whisper"
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(encoder).model_type == "whisper"


class _WhisperPrefix(nn.Module):
    """The first ``layer`` layers of a Hugging Face ``WhisperEncoder``, sharing its weights: the attributes
    SpeechEncoder reads (config, conv1, conv2, embed_positions, layers, layer_norm), the final norm kept only
    when all layers are."""

    def __init__(self, encoder: nn.Module, layer: int):
        super().__init__()
        self.config = encoder.config
        self.conv1, self.conv2, self.embed_positions = encoder.conv1, encoder.conv2, encoder.embed_positions
        self.layers = nn.ModuleList(list(encoder.layers)[:layer])
        self.layer_norm = encoder.layer_norm if layer == len(encoder.layers) else nn.Identity()


def padding_mask(lengths: torch.Tensor, f: int, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive self-attention mask [B, 1, F, F] hiding frames past each clip's end (None when none is padded),
    the mask SpeechEncoder builds for the layers."""
    if int(lengths.min()) >= f:
        return None
    keep = torch.arange(f)[None, :] < lengths[:, None]  # [B, F]
    mask = torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min)  # [B, F]
    return mask[:, None, None, :].expand(-1, 1, f, -1)  # [B, 1, F, F]


def run_layers(layers: Sequence[nn.Module], x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run Whisper encoder layers on frames x [B, F, D] of clips of ``lengths`` frames -> [B, F, D]."""
    mask = padding_mask(lengths, x.shape[1], x.dtype)
    for layer in layers:
        out = layer(x, mask)
        x = out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple, 5.x a tensor
    return x


class LayerFeatures:
    """``feats(waves) -> [frames [F_i, D] per clip]``: layer ``layer`` of ``encoder`` at 50 Hz, frozen, no grad.

    Args:
        encoder: registry name (``whisper-tiny.en``, ``tiny-whisper``), or a Hugging Face folder / hub id of a
            Whisper, HuBERT, wav2vec2 or WavLM model.
        layer: 1-based layer (0 = conv/embedding output).
        batch_size: Whisper clips per encoder call (real length; batching does not change the frames).
        whisper_encoder: an already loaded ``WhisperEncoder`` to use instead of loading ``encoder``.
    """

    frame_rate = FRAME_RATE

    def __init__(self, encoder: str, layer: int, batch_size: int = 8, whisper_encoder: nn.Module | None = None):
        self.name, self.layer, self.batch_size = encoder, int(layer), max(1, int(batch_size))
        self.whisper = whisper_encoder is not None or is_whisper(encoder)
        if self.whisper:
            if whisper_encoder is None:
                from speechlm.model.builders import load_encoder

                whisper_encoder = load_encoder(encoder)
            whisper_encoder.eval().requires_grad_(False)
            self.n_layers = len(whisper_encoder.layers)
            self._check_layer()
            self.whisper_encoder = whisper_encoder
            self.model = SpeechEncoder(_WhisperPrefix(whisper_encoder, self.layer)).eval()
            self.dim = int(whisper_encoder.config.d_model)
        else:
            from transformers import AutoModel

            self.model = AutoModel.from_pretrained(encoder).float().eval().requires_grad_(False)
            self.n_layers = int(self.model.config.num_hidden_layers)
            self._check_layer()
            self.dim = int(self.model.config.hidden_size)
            self.normalize = _hf_normalize(encoder, self.model.config)

    def _check_layer(self) -> None:
        if not 0 <= self.layer <= self.n_layers:
            raise ValueError(f"units.layer={self.layer}: encoder {self.name!r} has layers 0..{self.n_layers}")

    def num_frames(self, num_samples: int) -> int:
        """Frames this encoder gives for a clip of ``num_samples`` at 16 kHz."""
        if self.whisper:
            return whisper_num_frames(num_samples)
        return max(0, int(self.model._get_feat_extract_output_lengths(int(num_samples))))

    @torch.no_grad()
    def __call__(self, waves: Sequence[np.ndarray | torch.Tensor]) -> list[torch.Tensor]:
        clips = [torch.as_tensor(np.asarray(w, dtype=np.float32)).reshape(-1) for w in waves]
        out: list[torch.Tensor] = []
        if not self.whisper:
            for w in clips:
                x = (w - w.mean()) / torch.sqrt(w.var() + 1e-7) if self.normalize else w  # [N]
                hs = self.model(x[None], output_hidden_states=True).hidden_states  # (n+1) x [1, F, D]
                out.append(hs[self.layer][0].float())
            return out
        for s in range(0, len(clips), self.batch_size):
            frames, lengths = self.model(clips[s : s + self.batch_size])  # [B, F, D], [B]
            out.extend(frames[i, : int(n)].clone() for i, n in enumerate(lengths))
        return out


def _hf_normalize(name: str, config) -> bool:
    """Whether the encoder wants zero-mean unit-variance input: its feature extractor says so; without one,
    the wav2vec2 convention (layer-norm feature encoders were trained on normalised audio, group-norm ones on raw)."""
    from transformers import AutoFeatureExtractor

    try:
        return bool(getattr(AutoFeatureExtractor.from_pretrained(name), "do_normalize", False))
    except (OSError, ValueError):
        return getattr(config, "feat_extract_norm", "group") == "layer"

