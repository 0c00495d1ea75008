"""Semantic unit tokenizers: speech -> one discrete unit per 20-ms encoder frame, deduplicated with durations.

Dimension legend:
    N  audio samples (16 kHz)   F  frames (50/s)   U  deduplicated units   D  encoder width   K  codebook size
    V  bottleneck width (``vq_dim``)   B  clips in a batch   S  text tokens (prompt + transcript + end)

Two kinds share one interface (:class:`SemanticTokenizer`): ``fit`` on a manifest, ``encode`` a 16-kHz wave
into a :class:`TokenSeq`, ``frames`` back to the frame-level units, and ``tensors`` / ``from_tensors`` for the
folder format of :mod:`speechlm.tokenizers.registry`.

* ``kmeans`` (:class:`UnitTokenizer`): k-means on the frames of one encoder layer, the GSLM / SpeechGPT
  recipe (HuBERT layer + k-means, 0nutation/SpeechGPT: speechgpt/utils/speech2unit).
* ``vq`` (:class:`VQTokenizer`): a vector-quantised bottleneck after encoder layer L, trained so that the
  *frozen* Whisper decoder still reads the transcript from what passes through it (supervised tokens:
  CosyVoice's S3 tokenizer, arXiv 2407.05407; WhisperSpeech's distilled VQ, WhisperSpeech/WhisperSpeech#4).
  Layer-L features are computed once and cached; only the bottleneck trains: Linear down to V, an EMA
  codebook of K codes with a straight-through gradient and commitment loss (van den Oord et al. 2017, sec.
  3.2, beta 0.25; EMA updates from appendix A.1, decay 0.99), Linear up, Whisper's positional embedding added
  again (WhisperSpeech#4: the bottleneck loses position), then the remaining frozen encoder layers.
"""

from __future__ import annotations

import functools

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from speechlm.config import UnitsConfig
from speechlm.data.audio import load_audio
from speechlm.data.manifest import Cut, read_manifest
from speechlm.tokenizers import kmeans
from speechlm.tokenizers.dedup import dedup, expand
from speechlm.tokenizers.layer_features import FRAME_RATE, LayerFeatures, run_layers

__all__ = ["SemanticTokenizer", "TokenSeq", "UnitTokenizer", "VQTokenizer", "config_hash", "manifest_clips", "sample_manifest_frames"]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
VQ_DECAY = 0.99  # EMA decay of the codebook (van den Oord et al. 2017, appendix A.1)
VQ_BETA = 0.25  # commitment loss weight (van den Oord et al. 2017, sec. 3.2)
VQ_EPS = 1e-5  # Laplace smoothing of the EMA counts (Sonnet's VectorQuantizerEMA epsilon)
VQ_RESTART_AFTER = 20  # steps without a single frame before a code is restarted on a frame of the batch


@dataclass
class TokenSeq:
    """One clip's tokens.

    Attributes:
        units: int64 [U] semantic units (deduplicated when the tokenizer dedups), or None (acoustic only).
        durations: int64 [U] frames per unit (all ones without dedup); ``expand(units, durations)`` = frames.
        streams: int64 [F, nq] frame-level multi-stream codes, or None (semantic only).
    """

    units: np.ndarray | None
    durations: np.ndarray | None
    streams: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        """Frames (50/s) the tokens cover."""
        if self.streams is not None:
            return int(self.streams.shape[0])
        return int(self.durations.sum()) if self.durations is not None else 0


def config_hash(cfg: UnitsConfig, tensors: dict[str, torch.Tensor]) -> str:
    """Short sha256 over the config and the codebook bytes: two tokenizers with one hash give the same tokens."""
    h = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _short_audio_error(name: str, n: int) -> ValueError:
    return ValueError(f"{name}: field 'audio': {n} samples ({1000 * n / SAMPLE_RATE:.1f} ms) is shorter than one "
                      f"{1000 / FRAME_RATE:.0f}-ms frame of the encoder")


def manifest_clips(manifest: str | Path, num_frames, progress: bool = False):
    """Yield ``(cut, wave [N])`` for every cut of ``manifest``; a clip too short for one frame
    (``num_frames(N) == 0``) raises ValueError naming its manifest line and id."""
    cuts = read_manifest(manifest)
    t0 = time.time()
    for i, cut in enumerate(cuts):
        wave = load_audio(cut.audio, cut.start, cut.duration)  # [N] float32 16 kHz
        if num_frames(wave.size) < 1:
            raise _short_audio_error(f"{cut.source} (clip {cut.id!r})", wave.size)
        if progress and (i + 1) % 100 == 0:
            logger.info("read %d/%d clips (%.0f s)", i + 1, len(cuts), time.time() - t0)
        yield cut, wave


def _batched(it, n: int):
    batch = []
    for item in it:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def sample_manifest_frames(manifest: str | Path, num_frames, featurize, dim: int, cap: int, seed: int,
                           batch_size: int = 8, progress: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """Frames [N, D] of every clip of ``manifest`` (``featurize(waves) -> [frames [F_i, D]]``), at most ``cap``
    of them drawn uniformly with ``seed``, and what was read (clips, frames, seconds).

    The draw is made over the frame count the manifest durations promise, before any audio is read, so only
    the kept frames are ever held in memory (200k x 384 frames: 300 MB)."""
    cuts = read_manifest(manifest)
    expected = [num_frames(int(round((c.duration or 0.0) * SAMPLE_RATE))) for c in cuts]
    offsets = np.concatenate([[0], np.cumsum(expected)]).astype(np.int64)  # [clips + 1]
    keep: np.ndarray | None = None
    if int(offsets[-1]) > cap:
        gen = torch.Generator().manual_seed(int(seed))
        keep = np.sort(torch.randperm(int(offsets[-1]), generator=gen)[:cap].numpy())  # global frame positions
    index = {c.id: i for i, c in enumerate(cuts)}
    chunks, n_frames, t0 = [], 0, time.time()
    for batch in _batched(manifest_clips(manifest, num_frames, progress), max(1, batch_size)):
        for (cut, _), frames in zip(batch, featurize([w for _, w in batch])):  # frames [F, D]
            n_frames += frames.shape[0]
            if keep is not None:
                i = index[cut.id]
                lo, hi = np.searchsorted(keep, [offsets[i], offsets[i + 1]])
                local = keep[lo:hi] - offsets[i]
                frames = frames[torch.from_numpy(local[local < frames.shape[0]])]
            chunks.append(frames)
    x = torch.cat(chunks) if chunks else torch.zeros(0, dim)  # [N, D]
    info = {"manifest": str(manifest), "clips": len(cuts), "frames": n_frames, "fit_frames": int(x.shape[0]),
            "encode_seconds": round(time.time() - t0, 2)}
    if progress:
        logger.info("%s: %d clips, %d frames (%d kept), %.1f s", manifest, len(cuts), n_frames, x.shape[0], time.time() - t0)
    return x, info


class SemanticTokenizer:
    """Shared interface of the semantic tokenizers: subclasses give ``_quantize(frames [F, D]) -> [F]``."""

    kind = ""
    frame_rate = FRAME_RATE

    def __init__(self, cfg: UnitsConfig, features: LayerFeatures | None = None):
        self.cfg = cfg
        self._features = features
        self.fit_info: dict[str, Any] = {}

    @property
    def k(self) -> int:
        return int(self.cfg.k)

    @property
    def features(self) -> LayerFeatures:
        """The frozen encoder layer (loaded on first use)."""
        if self._features is None:
            self._features = LayerFeatures(self.cfg.encoder, self.cfg.layer, batch_size=self.cfg.batch_size)
        return self._features

    @functools.cached_property
    def hash(self) -> str:
        """Short hex digest of the config and the codebooks (computed once)."""
        return config_hash(self.cfg, self.tensors())

    @property
    def layout(self) -> dict[str, Any]:
        """What a model trained on these tokens depends on: kind, K, streams and their sizes, rate, hash."""
        return {"kind": self.kind, "k": self.k, "streams": 1, "stream_sizes": [self.k], "frame_rate": self.frame_rate,
                "dedup": bool(self.cfg.dedup), "hash": self.hash}

    def tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _quantize(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def frame_units(self, waves: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[np.ndarray]:
        """Frame-level units [F] of each wave (no dedup); encoder batches of ``cfg.batch_size`` clips."""
        feats = self.features
        for i, w in enumerate(waves):
            n = int(np.asarray(w).size)
            if feats.num_frames(n) < 1:
                raise _short_audio_error(names[i] if names else f"clip #{i}", n)
        out = []
        for frames in feats(list(waves)):  # each [F, D]
            out.append(self._quantize(frames).numpy().astype(np.int64))  # [F]
        return out

    def encode_batch(self, waves: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[TokenSeq]:
        """16-kHz float waves -> one :class:`TokenSeq` each (``names`` label errors, e.g. clip ids)."""
        out = []
        for u in self.frame_units(waves, names):
            units, durations = dedup(u) if self.cfg.dedup else (u, np.ones_like(u))
            out.append(TokenSeq(units=units, durations=durations))
        return out

    def encode(self, wave: np.ndarray, name: str | None = None) -> TokenSeq:
        return self.encode_batch([wave], [name] if name else None)[0]

    def frames(self, tokseq: TokenSeq) -> np.ndarray:
        """Frame-level units [F] of a :class:`TokenSeq` (undoes the dedup)."""
        return expand(tokseq.units, tokseq.durations)


class UnitTokenizer(SemanticTokenizer):
    """``kmeans``: k-means units of one encoder layer (GSLM / SpeechGPT)."""

    kind = "kmeans"

    def __init__(self, cfg: UnitsConfig, centroids: torch.Tensor, features: LayerFeatures | None = None):
        super().__init__(cfg, features)
        self.centroids = centroids.float().contiguous()  # [K, D]

    @classmethod
    def fit(cls, cfg: UnitsConfig, manifest_path: str | Path, progress: bool = True) -> "UnitTokenizer":
        """Encode the manifest, sample frames, run k-means; ``fit_info`` records what it was fitted on."""
        tok = cls(cfg, torch.zeros(0))
        feats = tok.features
        x, tok.fit_info = sample_manifest_frames(manifest_path, feats.num_frames, feats, feats.dim, cfg.max_fit_frames,
                                                 cfg.seed, cfg.batch_size, progress)  # [N, D]
        t0 = time.time()
        try:
            tok.centroids = kmeans.fit(x, cfg.k, seed=cfg.seed, iters=cfg.kmeans_iters, progress=progress)  # [K, D]
        except ValueError as e:
            raise ValueError(f"{manifest_path}: field 'k' (units.k): {e}") from None
        tok.fit_info["kmeans_seconds"] = round(time.time() - t0, 2)
        tok.fit_info["distortion"] = kmeans.distortion(x, tok.centroids)
        return tok

    def _quantize(self, frames: torch.Tensor) -> torch.Tensor:
        return kmeans.assign(frames, self.centroids)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"centroids": self.centroids}

    @classmethod
    def from_tensors(cls, cfg: UnitsConfig, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "UnitTokenizer":
        tok = cls(cfg, tensors["centroids"])
        tok.fit_info = dict(meta.get("fit", {}))
        return tok


# --------------------------------------------------------------------------------------------------
# vq: a bottleneck trained through the frozen Whisper decoder
# --------------------------------------------------------------------------------------------------


class _Bottleneck(nn.Module):
    """Linear down [D -> V] -> EMA codebook [K, V] -> Linear up [V -> D]; the codebook is a buffer."""

    def __init__(self, d: int, v: int, k: int):
        super().__init__()
        self.down = nn.Linear(d, v)
        self.up = nn.Linear(v, d)
        self.register_buffer("codebook", torch.zeros(k, v))  # [K, V]
        self.register_buffer("ema_count", torch.zeros(k))  # [K]
        self.register_buffer("ema_sum", torch.zeros(k, v))  # [K, V]
        self.register_buffer("idle", torch.zeros(k, dtype=torch.long))  # [K] steps since a code was last used
        self.initialised = False

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Frames [..., D] -> code ids [...]."""
        z = self.down(x)  # [..., V]
        return kmeans.assign(z.reshape(-1, z.shape[-1]), self.codebook).reshape(z.shape[:-1])

    def forward(self, x: torch.Tensor, valid: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, F, D], valid [B, F] -> (up-projected straight-through codes [B, F, D], commitment loss, ids [B, F])."""
        z = self.down(x)  # [B, F, V]
        zv = z[valid]  # [M, V] the real (unpadded) frames
        if self.training and not self.initialised:  # data-dependent init: codes start on real frames
            pick = torch.randint(zv.shape[0], (self.codebook.shape[0],), generator=gen)
            self.codebook.copy_(zv.detach()[pick])
            self.ema_sum.copy_(self.codebook)
            self.ema_count.fill_(1.0)
            self.initialised = True
        ids = kmeans.assign(z.detach().reshape(-1, z.shape[-1]), self.codebook).reshape(z.shape[:-1])  # [B, F]
        q = self.codebook[ids]  # [B, F, V]
        commit = ((zv - q[valid].detach()) ** 2).mean()
        if self.training:
            self._ema_update(zv.detach(), ids[valid], gen)
        q = z + (q - z).detach()  # straight-through gradient to the encoder side
        return self.up(q), commit, ids

    @torch.no_grad()
    def _ema_update(self, zv: torch.Tensor, ids: torch.Tensor, gen: torch.Generator) -> None:
        k = self.codebook.shape[0]
        counts = torch.bincount(ids, minlength=k).float()  # [K]
        sums = torch.zeros_like(self.ema_sum).index_add_(0, ids, zv)  # [K, V]
        self.ema_count.mul_(VQ_DECAY).add_(counts, alpha=1 - VQ_DECAY)
        self.ema_sum.mul_(VQ_DECAY).add_(sums, alpha=1 - VQ_DECAY)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + VQ_EPS) / (n + k * VQ_EPS) * n  # [K]
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        self.idle.add_(1).masked_fill_(counts > 0, 0)
        dead = torch.nonzero(self.idle >= VQ_RESTART_AFTER).flatten()
        if dead.numel():  # dead-code restart (Jukebox, Dhariwal et al. 2020, sec. 2.3): move onto random frames
            pick = torch.randint(zv.shape[0], (dead.numel(),), generator=gen)
            self.codebook[dead] = zv[pick]
            self.ema_sum[dead] = zv[pick]
            self.ema_count[dead] = 1.0
            self.idle[dead] = 0


def _load_full_whisper(encoder: str):
    """The Whisper bundle (encoder, decoder, tokenizer) behind ``encoder`` for vq training."""
    from speechlm.backbones.whisper import load_whisper
    from speechlm.model.builders import ENCODERS

    if encoder == "whisper-tiny.en":
        return load_whisper("tiny.en-ct2")
    if encoder in ENCODERS:
        raise ValueError(f"units.encoder={encoder!r}: vq needs a Whisper with its decoder and tokenizer; "
                         f"{encoder!r} is an encoder alone (use whisper-tiny.en or a Hugging Face Whisper folder)")
    bundle = load_whisper(encoder)
    if bundle.tokenizer is None:
        raise ValueError(f"units.encoder={encoder!r}: vq needs the Whisper tokenizer; {encoder} has no tokenizer.json")
    return bundle


class VQTokenizer(SemanticTokenizer):
    """``vq``: an EMA-VQ bottleneck after encoder layer L trained through the frozen Whisper decoder (S3 / WhisperSpeech)."""

    kind = "vq"

    def __init__(self, cfg: UnitsConfig, bottleneck: _Bottleneck, features: LayerFeatures | None = None,
                 extra: dict[str, torch.Tensor] | None = None):
        super().__init__(cfg, features)
        self.bottleneck = bottleneck.eval()
        self.extra = dict(extra or {})  # a loaded tokenizer's trainable top layer (``top.*``), kept as tensors

    def _quantize(self, frames: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.bottleneck.codes(frames)

    def tensors(self) -> dict[str, torch.Tensor]:
        sd = self.bottleneck.state_dict()
        return {**{k: v for k, v in sd.items() if not k.startswith(("ema_", "idle"))}, **self.extra}

    @classmethod
    def from_tensors(cls, cfg: UnitsConfig, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "VQTokenizer":
        bn = _Bottleneck(tensors["down.weight"].shape[1], cfg.vq_dim, cfg.k)
        own = {k: v for k, v in tensors.items() if not k.startswith("top.")}
        bn.load_state_dict({**bn.state_dict(), **own})
        bn.initialised = True
        tok = cls(cfg, bn, extra={k: v for k, v in tensors.items() if k.startswith("top.")})
        tok.fit_info = dict(meta.get("fit", {}))
        return tok

    @classmethod
    def fit(cls, cfg: UnitsConfig, manifest_path: str | Path, progress: bool = True) -> "VQTokenizer":
        """Cache layer-L features of the manifest once, then train the bottleneck for ``vq_steps`` steps
        (or ``vq_minutes``) on the frozen decoder's cross-entropy of the transcripts (``text`` field)."""
        manifest = Path(manifest_path)
        bundle = _load_full_whisper(cfg.encoder)
        whisper = bundle.model.eval().requires_grad_(False)
        encoder = whisper.get_encoder()
        feats = LayerFeatures(cfg.encoder, cfg.layer, batch_size=cfg.batch_size, whisper_encoder=encoder)
        tok_ids = _prompt_ids(bundle.tokenizer)

        cached: list[tuple[torch.Tensor, list[int], Cut]] = []  # (layer-L frames [F, D], text ids, cut)
        t0, n_frames = time.time(), 0
        for batch in _batched(manifest_clips(manifest, feats.num_frames, progress), max(1, cfg.batch_size)):
            for (cut, _), frames in zip(batch, feats([w for _, w in batch])):
                if not cut.text.strip():
                    raise ValueError(f"{cut.source} (clip {cut.id!r}): field 'text': vq training needs a transcript")
                ids = bundle.tokenizer(" " + cut.text.strip(), add_special_tokens=False).input_ids
                cached.append((frames, ids, cut))
                n_frames += frames.shape[0]
                if n_frames >= cfg.max_fit_frames:
                    break
            if n_frames >= cfg.max_fit_frames:
                break
        if n_frames < cfg.k:
            raise ValueError(f"{manifest}: field 'k' (units.k): K={cfg.k} is larger than the number of frames ({n_frames})")
        enc_seconds = time.time() - t0

        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(int(cfg.seed))
        bn = _Bottleneck(feats.dim, cfg.vq_dim, cfg.k)
        layers = list(encoder.layers)[cfg.layer:]  # frozen layers above L
        if not layers:  # L is the last layer: one trainable layer (a copy of the last) reads the codes
            bn.top = _top_layer_like(encoder)
            layers = [bn.top]
        params = [p for p in bn.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.vq_lr)
        order = sorted(range(len(cached)), key=lambda i: cached[i][0].shape[0])  # length order
        nb = max(1, min(cfg.vq_batch, len(cached)))
        losses: list[float] = []
        t1 = time.time()
        step = 0
        while (cfg.vq_steps > 0 and step < cfg.vq_steps) or (cfg.vq_steps <= 0 and time.time() - t1 < cfg.vq_minutes * 60):
            start = int(torch.randint(len(order) - nb + 1, (1,), generator=gen))
            items = [cached[i] for i in order[start : start + nb]]  # neighbours in length: little padding
            ce, commit, _ = _vq_loss(bn, layers, encoder, whisper, items, tok_ids, gen)
            loss = ce + VQ_BETA * commit
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(ce.detach()))
            step += 1
            if progress and (step % 25 == 0 or step == 1):
                used = int((bn.ema_count > 0.5).sum())
                logger.info("vq step %d: CE %.3f, commit %.4f, ~%d codes in use, %.0f s", step, float(ce),
                            float(commit), used, time.time() - t1)
        bn.eval()
        tok = cls(cfg, bn, feats)
        all_ids = torch.cat([bn.codes(f) for f, _, _ in cached]) if cached else torch.zeros(0, dtype=torch.long)
        tok.fit_info.update(manifest=str(manifest), clips=len(cached), frames=n_frames, steps=step,
                            encode_seconds=round(enc_seconds, 2), train_seconds=round(time.time() - t1, 2),
                            losses=[round(v, 4) for v in losses], codes_used=int(torch.unique(all_ids).numel()))
        return tok


def _top_layer_like(encoder: nn.Module) -> nn.Module:
    """A trainable copy of ``encoder``'s last layer, read the codes when L is the last layer."""
    import copy

    return copy.deepcopy(encoder.layers[-1]).requires_grad_(True)


def _prompt_ids(tokenizer) -> tuple[list[int], int]:
    """tiny.en's transcription prompt ``<|startoftranscript|><|notimestamps|>`` and the end token id."""
    sot, no_ts, eot = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>"])
    if None in (sot, no_ts, eot) or eot in (sot, no_ts):  # an unknown token maps to unk = <|endoftext|>
        raise ValueError("the Whisper tokenizer lacks <|startoftranscript|> or <|notimestamps|>")
    return [sot, no_ts], eot


def _vq_loss(bn: _Bottleneck, layers: list[nn.Module], encoder: nn.Module, whisper: nn.Module,
             items: list[tuple[torch.Tensor, list[int], Cut]], tok_ids: tuple[list[int], int],
             gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decoder cross-entropy of the transcripts given the bottlenecked frames, commitment loss, code ids."""
    prompt, eot = tok_ids
    lengths = torch.tensor([f.shape[0] for f, _, _ in items])  # [B]
    f = int(lengths.max())
    x = torch.stack([nn.functional.pad(fr, (0, 0, 0, f - fr.shape[0])) for fr, _, _ in items])  # [B, F, D]
    valid = torch.arange(f)[None, :] < lengths[:, None]  # [B, F]
    h, commit, ids = bn(x, valid, gen)  # [B, F, D]
    h = h + encoder.embed_positions.weight[:f]  # re-add positions lost in the bottleneck (WhisperSpeech#4)
    h = encoder.layer_norm(run_layers(layers, h, lengths)) * valid[..., None]  # [B, F, D]
    # Whisper's decoder has no cross-attention mask: padded frames are zero and batches are length neighbours.
    room = whisper.config.max_target_positions - len(prompt) - 1  # the decoder's position table (448 in tiny.en)
    seqs = [prompt + t[:room] + [eot] for _, t, _ in items]
    s = max(len(q) for q in seqs)
    inp = torch.full((len(seqs), s - 1), eot, dtype=torch.long)  # [B, S-1]
    tgt = torch.full((len(seqs), s - 1), -100, dtype=torch.long)  # [B, S-1]
    for i, q in enumerate(seqs):
        inp[i, : len(q) - 1] = torch.tensor(q[:-1])
        tgt[i, len(prompt) - 1 : len(q) - 1] = torch.tensor(q[len(prompt):])  # predict transcript + end only
    dec = whisper.get_decoder()(input_ids=inp, encoder_hidden_states=h).last_hidden_state  # [B, S-1, D]
    logits = whisper.proj_out(dec)  # [B, S-1, vocab]
    ce = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100)
    return ce, commit, ids

