"""Multi-stream acoustic tokens, and the combined ``codec_ssl`` layout (semantic unit + acoustic codes).

Dimension legend:
    N  audio samples (16 kHz)   T  log-mel frames (100/s)   M  mel bins (80)   F  token frames (50/s)
    Q  acoustic streams         K  codes per stream          P  stacked mel width (2 x 80 = 160)

* ``mel-rvq`` (:class:`MelRVQTokenizer`), the offline default: residual k-means on 50-Hz frames made by stacking
  two consecutive frames of the invertible log-mel of :mod:`speechlm.data.mel`. Stream q is k-means on what
  streams 0..q-1 left over (iterative residual k-means as in MMM, arXiv 2406.09869; GSLM's log-mel k-means
  baseline, facebookresearch/fairseq: examples/textless_nlp/gslm/speech2unit). Decoding sums the chosen
  centroids and unstacks them into a log-mel [2F, M] for a vocoder. Each stream can only lower the error on
  the frames it was fitted on: a cluster's mean is the point nearest to all its members.
* ``hf-codec`` (:class:`HFCodecTokenizer`): a neural codec by Hugging Face folder or hub id through
  transformers' own classes (EnCodec, DAC, Mimi): codes [F, Q] at the codec's own frame rate, decoded to a wave.
* ``codec_ssl`` (:class:`CodecSSLTokenizer`): stream 0 is the frame-level semantic unit, streams 1..Q the
  acoustic codes, on one 50-Hz frame grid (ESPnet-SpeechLM's codec_ssl tokenizer).
"""

from __future__ import annotations

import functools

import hashlib
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from speechlm.config import UnitsConfig
from speechlm.data.mel import N_MELS, log_mel
from speechlm.model.encoder import num_frames as whisper_num_frames
from speechlm.tokenizers import kmeans
from speechlm.tokenizers.units import (
    SAMPLE_RATE,
    SemanticTokenizer,
    TokenSeq,
    UnitTokenizer,
    VQTokenizer,
    config_hash,
    sample_manifest_frames,
)

__all__ = ["CodecSSLTokenizer", "HFCodecTokenizer", "MelRVQTokenizer", "stacked_mel", "unstack_mel"]

STACK = 2  # 100-Hz mel frames per 50-Hz token frame
FRAME_RATE = 50.0


def num_frames(num_samples: int) -> int:
    """50-Hz frames of a clip: Whisper's count, ``ceil((N // 160) / 2)``, so acoustic and semantic frames agree."""
    return whisper_num_frames(num_samples)


def stacked_mel(wave: np.ndarray | torch.Tensor) -> torch.Tensor:
    """wave [N] -> two stacked log-mel frames per 50-Hz frame [F, P].

    The log-mel has T = N // 160 + 1 frames and F = ceil((N // 160) / 2), so 2F <= T: the first 2F mel
    frames are used and the last one is dropped when N // 160 is even."""
    mel = log_mel(wave)  # [T, M]
    f = num_frames(int(np.asarray(wave).size if not torch.is_tensor(wave) else wave.numel()))
    return mel[: STACK * f].reshape(f, STACK * mel.shape[1])  # [F, P]


def unstack_mel(frames: torch.Tensor) -> torch.Tensor:
    """[F, P] -> log-mel [2F, M]."""
    return frames.reshape(frames.shape[0] * STACK, -1)


def _short_error(name: str, n: int) -> ValueError:
    return ValueError(f"{name}: field 'audio': {n} samples ({1000 * n / SAMPLE_RATE:.1f} ms) is shorter than one "
                      f"{1000 / FRAME_RATE:.0f}-ms frame")


class MelRVQTokenizer:
    """``mel-rvq``: residual k-means on 50-Hz stacked log-mel; ``encode`` -> [F, Q], ``decode`` -> log-mel [2F, 80]."""

    kind = "mel-rvq"
    frame_rate = FRAME_RATE
    decodes_to = "logmel"

    def __init__(self, cfg: UnitsConfig, centroids: torch.Tensor):
        self.cfg = cfg
        self.centroids = centroids.float().contiguous()  # [Q, K, P]
        self.fit_info: dict[str, Any] = {}

    @property
    def streams(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def k(self) -> int:
        return int(self.centroids.shape[1])

    @functools.cached_property
    def hash(self) -> str:
        """Short hex digest of the config and the codebooks (computed once)."""
        return config_hash(self.cfg, self.tensors())

    @property
    def layout(self) -> dict[str, Any]:
        return {"kind": self.kind, "k": self.k, "streams": self.streams, "stream_sizes": [self.k] * self.streams,
                "frame_rate": self.frame_rate, "dedup": False, "hash": self.hash}

    @classmethod
    def fit(cls, cfg: UnitsConfig, manifest_path: str | Path, progress: bool = True) -> "MelRVQTokenizer":
        """Residual k-means with ``acoustic_streams`` streams of ``acoustic_k`` codes on the manifest's mel frames."""
        if cfg.acoustic_streams < 1:
            raise ValueError(f"units.acoustic_streams={cfg.acoustic_streams}: mel-rvq needs at least one stream")
        x, info = sample_manifest_frames(manifest_path, num_frames, lambda ws: [stacked_mel(w) for w in ws],
                                         STACK * N_MELS, cfg.max_fit_frames, cfg.seed, cfg.batch_size, progress)  # [N, P]
        t0 = time.time()
        residual, books, errors = x.clone(), [], [float((x ** 2).mean())]
        for q in range(cfg.acoustic_streams):
            try:
                c = kmeans.fit(residual, cfg.acoustic_k, seed=cfg.seed + q, iters=cfg.kmeans_iters)  # [K, P]
            except ValueError as e:
                raise ValueError(f"{manifest_path}: field 'acoustic_k' (units.acoustic_k): {e}") from None
            residual -= c[kmeans.assign(residual, c)]  # [N, P]
            books.append(c)
            errors.append(float((residual ** 2).mean()))
        tok = cls(cfg, torch.stack(books))
        tok.fit_info = {**info, "kmeans_seconds": round(time.time() - t0, 2), "mse_per_stream": errors}
        return tok

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Stacked mel [F, P] -> codes [F, Q]."""
        residual = frames.float().clone()
        codes = []
        for c in self.centroids:  # c [K, P]
            idx = kmeans.assign(residual, c)  # [F]
            residual -= c[idx]
            codes.append(idx)
        return torch.stack(codes, 1) if codes else torch.zeros(frames.shape[0], 0, dtype=torch.long)  # [F, Q]

    def encode(self, wave: np.ndarray, name: str | None = None) -> np.ndarray:
        """16-kHz wave [N] -> int64 codes [F, Q]."""
        n = int(np.asarray(wave).size)
        if num_frames(n) < 1:
            raise _short_error(name or "clip", n)
        return self.encode_frames(stacked_mel(wave)).numpy().astype(np.int64)

    def encode_batch(self, waves: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[np.ndarray]:
        return [self.encode(w, names[i] if names else f"clip #{i}") for i, w in enumerate(waves)]

    def decode(self, streams: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Codes [F, Q'] (Q' <= Q: the first streams) -> log-mel [2F, 80]: the sum of the chosen centroids, unstacked."""
        codes = torch.as_tensor(np.asarray(streams), dtype=torch.long)  # [F, Q']
        if codes.ndim != 2 or codes.shape[1] > self.streams:
            raise ValueError(f"mel-rvq decode: expected codes [F, <= {self.streams}], got shape {tuple(codes.shape)}")
        out = torch.zeros(codes.shape[0], self.centroids.shape[2])  # [F, P]
        for q in range(codes.shape[1]):
            out += self.centroids[q][codes[:, q]]
        return unstack_mel(out)  # [2F, M]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"centroids": self.centroids}

    @classmethod
    def from_tensors(cls, cfg: UnitsConfig, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "MelRVQTokenizer":
        tok = cls(cfg, tensors["centroids"])
        tok.fit_info = dict(meta.get("fit", {}))
        return tok


class HFCodecTokenizer:
    """``hf-codec``: a Hugging Face neural codec (EnCodec, DAC, Mimi); ``encode`` -> [F, Q], ``decode`` -> 16-kHz wave."""

    kind = "hf-codec"
    decodes_to = "wave"

    def __init__(self, cfg: UnitsConfig, model=None):
        if not cfg.codec:
            raise ValueError("units.codec is empty: hf-codec needs a Hugging Face codec folder or hub id")
        self.cfg = cfg
        if model is None:
            from transformers import AutoModel

            model = AutoModel.from_pretrained(cfg.codec)
        self.model = model.float().eval().requires_grad_(False)
        mc = self.model.config
        self.family = mc.model_type  # "encodec", "dac", "mimi"
        self.sampling_rate = int(mc.sampling_rate)
        rate = getattr(mc, "frame_rate", None)
        self.frame_rate = float(rate) if rate else self.sampling_rate / float(mc.hop_length)
        if self.family == "encodec" and (mc.chunk_length_s or mc.normalize):
            raise ValueError(f"units.codec={cfg.codec!r}: chunked / normalised EnCodec (the 48-kHz model) is not supported")
        self.fit_info: dict[str, Any] = {}
        self._hash: str | None = None
        self._streams: int | None = None

    @property
    def streams(self) -> int:
        """Codes per frame: ``acoustic_streams`` when set, else all the codec gives (found by encoding silence once)."""
        if self._streams is None:
            full = self._codes(torch.zeros(1, 1, self.sampling_rate // 10)).shape[0]
            self._streams = min(full, self.cfg.acoustic_streams) if self.cfg.acoustic_streams > 0 else full
        return self._streams

    @property
    def k(self) -> int:
        return int(self.model.config.codebook_size)

    @property
    def hash(self) -> str:
        if self._hash is None:
            h = hashlib.sha256(config_hash(self.cfg, {}).encode())
            h.update(self.model.config.to_json_string().encode())
            for name, p in sorted(self.model.state_dict().items()):
                h.update(name.encode())
                h.update(p.detach().contiguous().numpy().tobytes())
            self._hash = h.hexdigest()[:16]
        return self._hash

    @property
    def layout(self) -> dict[str, Any]:
        return {"kind": self.kind, "k": self.k, "streams": self.streams, "stream_sizes": [self.k] * self.streams,
                "frame_rate": self.frame_rate, "dedup": False, "hash": self.hash, "codec": self.cfg.codec}

    @classmethod
    def fit(cls, cfg: UnitsConfig, manifest_path: str | Path, progress: bool = True) -> "HFCodecTokenizer":
        """Nothing to fit: loads the codec (the manifest is only recorded)."""
        tok = cls(cfg)
        tok.fit_info = {"manifest": str(manifest_path), "fitted": False}
        return tok

    @torch.no_grad()
    def _codes(self, x: torch.Tensor) -> torch.Tensor:
        """Audio at the codec rate [1, 1, N'] -> codes [Q_all, F]."""
        if self.family == "encodec":
            out = self.model.encode(x, bandwidth=max(self.model.config.target_bandwidths))
            return out.audio_codes[0, 0]  # [chunks=1, B=1, Q, F] -> [Q, F]
        return self.model.encode(x).audio_codes[0]  # DAC, Mimi: [B=1, Q, F] -> [Q, F]

    def encode(self, wave: np.ndarray, name: str | None = None) -> np.ndarray:
        """16-kHz wave [N] -> int64 codes [F, Q]."""
        import soxr

        w = np.asarray(wave, dtype=np.float32).reshape(-1)
        if w.size * self.frame_rate / SAMPLE_RATE < 1:
            raise _short_error(name or "clip", w.size)
        if self.sampling_rate != SAMPLE_RATE:
            w = soxr.resample(w, SAMPLE_RATE, self.sampling_rate, quality="HQ")
        codes = self._codes(torch.from_numpy(np.ascontiguousarray(w))[None, None])  # [Q_all, F]
        return codes[: self.streams].T.numpy().astype(np.int64)  # [F, Q]

    def encode_batch(self, waves: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[np.ndarray]:
        return [self.encode(w, names[i] if names else f"clip #{i}") for i, w in enumerate(waves)]

    @torch.no_grad()
    def decode(self, streams: np.ndarray | torch.Tensor) -> np.ndarray:
        """Codes [F, Q] -> 16-kHz float32 wave [N] (residual codecs decode a prefix of their streams)."""
        import soxr

        codes = torch.as_tensor(np.asarray(streams), dtype=torch.long).T.contiguous()  # [Q, F]
        if self.family == "encodec":
            wave = self.model.decode(codes[None, None], [None]).audio_values  # [1, 1, N']
        elif self.family == "dac":
            wave = self.model.decode(audio_codes=codes[None]).audio_values  # [1, N']
        else:
            wave = self.model.decode(codes[None]).audio_values  # [1, 1, N']
        w = wave.reshape(-1).float().numpy()
        if self.sampling_rate != SAMPLE_RATE:
            w = soxr.resample(w, self.sampling_rate, SAMPLE_RATE, quality="HQ")
        return np.ascontiguousarray(w, dtype=np.float32)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}  # the weights stay in the codec's own folder (units.codec)

    @classmethod
    def from_tensors(cls, cfg: UnitsConfig, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "HFCodecTokenizer":
        tok = cls(cfg)
        tok.fit_info = dict(meta.get("fit", {}))
        return tok


SEMANTIC: dict[str, type[SemanticTokenizer]] = {"kmeans": UnitTokenizer, "vq": VQTokenizer}


class CodecSSLTokenizer:
    """``codec_ssl``: stream 0 = the frame-level semantic unit, streams 1..Q = acoustic codes, on one 50-Hz grid."""

    kind = "codec_ssl"
    frame_rate = FRAME_RATE

    def __init__(self, semantic: SemanticTokenizer, acoustic: MelRVQTokenizer | HFCodecTokenizer):
        if abs(acoustic.frame_rate - semantic.frame_rate) > 1e-6:
            raise ValueError(f"codec_ssl: the acoustic tokens run at {acoustic.frame_rate:g} Hz and the semantic units "
                             f"at {semantic.frame_rate:g} Hz; pick a codec with {semantic.frame_rate:g} frames/s "
                             f"(e.g. DAC 16 kHz, hop 320) or mel-rvq")
        self.semantic, self.acoustic = semantic, acoustic
        self.cfg = semantic.cfg
        self.decodes_to = acoustic.decodes_to
        self.fit_info: dict[str, Any] = {"semantic": semantic.fit_info, "acoustic": acoustic.fit_info}

    @property
    def k(self) -> int:
        return self.semantic.k

    @property
    def hash(self) -> str:
        return hashlib.sha256(f"{self.semantic.hash}:{self.acoustic.hash}".encode()).hexdigest()[:16]

    @property
    def layout(self) -> dict[str, Any]:
        a = self.acoustic.layout
        return {"kind": self.kind, "k": self.k, "streams": 1 + a["streams"],
                "stream_sizes": [self.k] + a["stream_sizes"], "frame_rate": self.frame_rate, "dedup": False,
                "hash": self.hash, "parts": {"semantic": self.semantic.layout, "acoustic": a}}

    def encode_batch(self, waves: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[TokenSeq]:
        """Waves -> TokenSeq with ``units`` the frame-level semantic units [F] (durations all ones) and
        ``streams`` [F, 1 + Q]."""
        units = self.semantic.frame_units(waves, names)
        out = []
        for i, (u, w) in enumerate(zip(units, waves)):
            a = self.acoustic.encode(w, names[i] if names else f"clip #{i}")  # [F_a, Q]
            f = u.shape[0]
            if abs(a.shape[0] - f) > 1:
                raise ValueError(f"{names[i] if names else f'clip #{i}'}: codec_ssl: {a.shape[0]} acoustic frames "
                                 f"but {f} semantic frames")
            # The two front ends round a clip's end differently (e.g. HuBERT's 400-sample receptive field, a
            # codec's padding): at most one frame is repeated or cut at the end so both streams share F frames.
            a = np.concatenate([a, a[-1:]]) if a.shape[0] < f else a[:f]
            out.append(TokenSeq(units=u, durations=np.ones_like(u), streams=np.concatenate([u[:, None], a], 1)))
        return out

    def encode(self, wave: np.ndarray, name: str | None = None) -> TokenSeq:
        return self.encode_batch([wave], [name] if name else None)[0]

    def frames(self, tokseq: TokenSeq) -> np.ndarray:
        """Frame-level semantic units [F] (stream 0)."""
        return np.asarray(tokseq.streams)[:, 0]

    def decode(self, streams: np.ndarray | TokenSeq):
        """[F, 1 + Q] (or a TokenSeq) -> what the acoustic part decodes to (log-mel [2F, 80] or a wave)."""
        s = streams.streams if isinstance(streams, TokenSeq) else np.asarray(streams)
        return self.acoustic.decode(s[:, 1:])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**{f"semantic.{k}": v for k, v in self.semantic.tensors().items()},
                **{f"acoustic.{k}": v for k, v in self.acoustic.tensors().items()}}

    @classmethod
    def fit(cls, cfg: UnitsConfig, manifest_path: str | Path, progress: bool = True) -> "CodecSSLTokenizer":
        semantic = SEMANTIC[cfg.kind].fit(cfg, manifest_path, progress)
        acoustic = (HFCodecTokenizer if cfg.codec else MelRVQTokenizer).fit(cfg, manifest_path, progress)
        return cls(semantic, acoustic)

    @classmethod
    def from_tensors(cls, cfg: UnitsConfig, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "CodecSSLTokenizer":
        fit = meta.get("fit", {})
        part = {p: {k[len(p) + 1:]: v for k, v in tensors.items() if k.startswith(p + ".")} for p in ("semantic", "acoustic")}
        semantic = SEMANTIC[cfg.kind].from_tensors(cfg, part["semantic"], {"fit": fit.get("semantic", {})})
        acoustic = (HFCodecTokenizer if cfg.codec else MelRVQTokenizer).from_tensors(
            cfg, part["acoustic"], {"fit": fit.get("acoustic", {})})
        return cls(semantic, acoustic)

