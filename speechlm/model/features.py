"""Cached encoder features: run a frozen speech encoder once per corpus instead of once per epoch.

With the encoder frozen (``train_encoder_layers: 0``, the default), its output for a clip never changes, so
:func:`cache_features` computes the frames [F_i, D] of every cut once and stores them; training then feeds
them to the adapter directly (:func:`encode_from_features`), skipping audio decoding, resampling, the
log-mel and the encoder.

Layout of the output folder::

    OUT/feats-000.safetensors   frames of the cuts of one shard (about ``shard_seconds`` of audio), key = cut id
    OUT/feats-001.safetensors   ...
    OUT/index.json              cut id -> {"file", "key", "frames"}
    OUT/manifest.jsonl          the input lines + "features": "feats-000.safetensors#<id>", "feature_frames": F
    OUT/features.json           encoder name, fingerprint, dims, dtype, shards, fp16 error, "complete": true

Storage is **fp16**. Whisper encoder outputs come out of a LayerNorm (|x| of a few units to a few tens, far
inside fp16's range of 65504), and fp16 keeps an 11-bit significand: the rounding error is at most 2^-11 of
each value (relative RMS error ~2e-4, measured per run and stored under ``"fp16"`` in features.json), well
below what changes the adapter's output or the loss (see benchmarks/bench_features.py). It halves the disk
and page-cache footprint against fp32: whisper-tiny.en (D=384, 50 frames/s) takes 138 MB per audio hour
instead of 276 MB, and a cut whose fp16 copy would overflow is stored in fp32 instead.

The **fingerprint** (:func:`encoder_fingerprint`) hashes the encoder weights, the config fields that shape
its computation, ``pad_to_30s`` and :data:`FEATURES_VERSION`; :func:`verify_features` refuses features
computed by a different encoder, and training should call it at start-up.

**Below trained top layers** (``below_top=N``, for ``model.train_encoder_layers: N``): the cached frames are then
the hidden states under the encoder's top N layers (no final norm), and the model runs those N layers and the norm
on them at every step (:meth:`SpeechEncoder.forward_top`). Only the frozen part is cached and fingerprinted (the
stem and the lower layers), so the features stay valid while the top layers train; ``features.json`` records
``"below_top": N`` and :func:`verify_features` refuses frames cut at another depth.

Re-running is safe and cheap: a finished folder with the same fingerprint and input manifest is left as is;
an interrupted run keeps the shards already written (each shard's metadata holds the fingerprint and a digest
of its cuts) and computes the rest. Every file is written atomically (temp file + rename).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from speechlm.data.audio import AudioError, load_audio
from speechlm.data.manifest import Cut, iter_manifest
from speechlm.utils import write_json, write_jsonl

__all__ = [
    "FEATURES_VERSION",
    "FeatureMismatchError",
    "cache_features",
    "encode_from_features",
    "encoder_fingerprint",
    "forward_from_features",
    "load_features",
    "read_features_meta",
    "verify_features",
]

FEATURES_VERSION = 1
"""Bump when :class:`SpeechEncoder`'s computation changes (mel, masking, real-length encoding): old caches
then stop matching and are recomputed instead of silently reused."""
_SHARD_RE = re.compile(r"^feats-(\d{3,})\.safetensors$")
# Config fields of a Whisper encoder that shape its output (not paths, versions or decoder settings).
_CONFIG_KEYS = ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins",
                "max_source_positions", "activation_function", "scale_embedding")
FP16_MAX = 65504.0


class FeatureMismatchError(ValueError):
    """Cached features were computed by another encoder (fingerprint differs) or are incomplete."""


# ------------------------------------------------------------------------------------------------
# encoder identity
# ------------------------------------------------------------------------------------------------
def _resolve_encoder(encoder: Any) -> tuple[nn.Module, str]:
    """A registry name / folder / hub id, a SpeechEncoder, or a bare Whisper encoder -> (SpeechEncoder, name)."""
    from speechlm.model.encoder import SpeechEncoder

    if isinstance(encoder, (str, os.PathLike)):
        from speechlm.model.builders import load_encoder

        name = str(encoder)
        return SpeechEncoder(load_encoder(name), pad_to_30s=False), name
    if isinstance(encoder, SpeechEncoder):
        return encoder, getattr(encoder, "name", None) or getattr(encoder.encoder.config, "_name_or_path", "") or "custom"
    if isinstance(encoder, nn.Module) and hasattr(encoder, "embed_positions"):
        return SpeechEncoder(encoder, pad_to_30s=False), getattr(encoder.config, "_name_or_path", "") or "custom"
    raise TypeError(f"encoder must be a registry name, a SpeechEncoder or a Whisper encoder, got {type(encoder).__name__}")


def encoder_fingerprint(encoder: nn.Module, below_top: int = 0) -> str:
    """``sha256:...`` of a SpeechEncoder's weights (names, dtypes, shapes, bytes), computation-relevant config and
    ``pad_to_30s``: two encoders with the same fingerprint produce the same frames. With ``below_top`` N > 0 only
    what computes the frames below the top N layers counts (the top layers and the final norm may have trained)."""
    from speechlm.model.encoder import SpeechEncoder

    enc = encoder if isinstance(encoder, SpeechEncoder) else _resolve_encoder(encoder)[0]
    h = hashlib.sha256()
    cfg = enc.encoder.config
    ident = {"version": FEATURES_VERSION, "class": type(enc.encoder).__name__, "pad_to_30s": bool(enc.pad_to_30s),
             **{k: getattr(cfg, k, None) for k in _CONFIG_KEYS}}
    skip: tuple[str, ...] = ()
    if below_top:
        n = len(enc.encoder.layers)
        ident["below_top"] = below_top  # absent for whole-encoder features: their fingerprints did not change
        skip = ("layer_norm.", *(f"layers.{i}." for i in range(n - below_top, n)))
    h.update(json.dumps(ident, sort_keys=True).encode())
    for name, t in sorted(enc.encoder.state_dict().items()):
        if name.startswith(skip):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return "sha256:" + h.hexdigest()


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
@contextmanager
def _atomic_path(path: Path) -> Iterator[str]:
    """A temp file name beside ``path`` for writers that want a file name (safetensors); renamed on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _shard_metadata(path: Path) -> dict[str, str] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply not reusable
        return None


def read_features_meta(path: str | os.PathLike) -> dict[str, Any]:
    """features.json of a features folder (or of the folder holding the given manifest)."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    meta = folder / "features.json"
    if not meta.exists():
        raise FileNotFoundError(f"{meta}: not a features folder (run cache_features / `speechlm prepare --features`)")
    return json.loads(meta.read_text(encoding="utf-8"))


def verify_features(path: str | os.PathLike, encoder: Any, below_top: int = 0) -> dict[str, Any]:
    """Check that the features folder (or its manifest) was computed, completely, by ``encoder``, below its top
    ``below_top`` layers (0: the whole encoder).

    ``encoder``: a SpeechEncoder / registry name, or a fingerprint string. Returns features.json's content.

    Raises:
        FeatureMismatchError: another encoder (fingerprint differs) or an unfinished caching run.
        FileNotFoundError: no features.json.
    """
    meta = read_features_meta(path)
    if int(meta.get("below_top", 0)) != below_top:
        def depth(n):
            return f"below the top {n} layer(s)" if n else "the whole encoder's output"

        raise FeatureMismatchError(
            f"{path}: the features are {depth(int(meta.get('below_top', 0)))}, but this model needs "
            f"{depth(below_top)} (model.train_encoder_layers={below_top}); recompute them "
            f"(`speechlm prepare ... --features --below-top {below_top}`) or train from audio")
    fp = encoder if isinstance(encoder, str) and encoder.startswith("sha256:") else encoder_fingerprint(
        _resolve_encoder(encoder)[0], below_top)
    if meta.get("fingerprint") != fp:
        raise FeatureMismatchError(
            f"{path}: features were computed by encoder {meta.get('encoder')!r} (fingerprint {str(meta.get('fingerprint'))[:23]}...), "
            f"but this model's encoder has fingerprint {fp[:23]}...: the weights, config or pad_to_30s differ. "
            "Recompute them with this encoder (`speechlm prepare --features`) or train from audio.")
    if not meta.get("complete"):
        raise FeatureMismatchError(f"{path}: the caching run did not finish; re-run cache_features to complete it")
    return meta


@functools.lru_cache(maxsize=32)
def _open_shard(path: str, mtime_ns: int, size: int):
    """An open safetensors file (memory-mapped). Keyed on mtime and size, so a re-written shard is re-opened."""
    from safetensors import safe_open

    return safe_open(path, framework="pt")


def load_features(ref: Cut | Mapping[str, Any] | str, base_dir: str | os.PathLike | None = None,
                  dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """Frames [F, D] of one cut from its ``features`` reference ``"feats-000.safetensors#<key>"``.

    ``ref``: a Cut (``labels["features"]``, resolved against the folder of the manifest it was read from), a
    manifest record dict, or the reference string itself. Relative file names resolve against ``base_dir``
    (default: the Cut's manifest folder, else the working directory). ``dtype`` None keeps the stored
    dtype (fp16). Open files are kept in a small LRU cache (per process, so per data-loader worker).
    """
    base = Path(base_dir) if base_dir is not None else None
    if isinstance(ref, Cut):
        spec = ref.labels.get("features")
        if base is None and ref.source:
            base = Path(ref.source.rsplit(":", 1)[0]).resolve().parent
    elif isinstance(ref, Mapping):
        spec = ref.get("features")
    else:
        spec = os.fspath(ref)
    if not isinstance(spec, str) or "#" not in spec:
        raise ValueError(f"no features reference of the form 'FILE#KEY' in {ref!r}"[:300])
    file, _, key = spec.partition("#")
    p = Path(file)
    if not p.is_absolute():
        p = (base or Path.cwd()) / p
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileNotFoundError(f"features file not found: {p} (for {spec!r})") from None
    f = _open_shard(str(p.resolve()), st.st_mtime_ns, st.st_size)
    try:
        t = f.get_tensor(key)
    except Exception as e:  # safetensors raises SafetensorError for an unknown key
        raise KeyError(f"{p}: no features for key {key!r}: {e}") from None
    return t if dtype is None else t.to(dtype)


load_features.cache_clear = _open_shard.cache_clear  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------
# caching
# ------------------------------------------------------------------------------------------------
class _AudioItems(torch.utils.data.Dataset):
    def __init__(self, cuts: list[Cut], skip_bad: bool):
        self.cuts, self.skip_bad = cuts, skip_bad

    def __len__(self) -> int:
        return len(self.cuts)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        c = self.cuts[i]
        try:
            return i, torch.from_numpy(load_audio(c.audio, start=c.start, duration=c.duration)), ""
        except AudioError as e:
            if self.skip_bad:
                return i, None, str(e)
            raise AudioError(f"{c.source or c.id}: {e}") from e


def _as_list(items):
    return items


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _plan_shards(cuts: list[Cut], shard_seconds: float) -> list[list[int]]:
    shards: list[list[int]] = [[]]
    acc = 0.0
    for i, c in enumerate(cuts):
        d = c.duration or 0.0
        if shards[-1] and acc + d > shard_seconds:
            shards.append([])
            acc = 0.0
        shards[-1].append(i)
        acc += d
    return shards if shards[0] else []


def _plan_batches(cuts: list[Cut], idx: list[int], batch_seconds: float) -> list[list[int]]:
    """Longest first, so each batch pads little; a batch's padded length (n x longest) stays <= batch_seconds."""
    order = sorted(idx, key=lambda i: -(cuts[i].duration or 0.0))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * (cuts[batches[-1][0]].duration or 0.0) <= batch_seconds:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _shard_digest(cuts: list[Cut], idx: list[int], fingerprint: str) -> str:
    spec = [[cuts[i].id, cuts[i].audio, cuts[i].start, cuts[i].duration] for i in idx]
    return hashlib.sha256(json.dumps([fingerprint, spec]).encode()).hexdigest()


def cache_features(
    manifest: str | os.PathLike,
    encoder_name_or_model: Any,
    out_dir: str | os.PathLike,
    batch_seconds: float = 60.0,
    workers: int = 0,
    progress: bool = True,
    shard_seconds: float = 1800.0,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    skip_bad: bool = False,
    below_top: int = 0,
) -> Path:
    """Encode every cut of ``manifest`` once and store the frames; returns ``out_dir/manifest.jsonl``.

    Args:
        manifest: input JSONL manifest (parsed strictly: a bad line raises ManifestError with file:line).
        encoder_name_or_model: registry name / folder / hub id (loaded with ``load_encoder`` and wrapped in
            ``SpeechEncoder(..., pad_to_30s=False)``), or a ``SpeechEncoder`` (e.g. ``model.encoder``).
        out_dir: features folder (see the module docstring for its layout).
        batch_seconds: padded audio seconds per encoder batch (cuts sorted by length within a shard).
        workers: data-loader processes decoding audio (0: in this process).
        progress: tqdm bar over cuts.
        shard_seconds: audio seconds per safetensors file (1800 s = ~69 MB for whisper-tiny.en).
        device: where the encoder runs (default: where its weights are; "auto": CUDA if available).
        overwrite: replace features of another encoder in ``out_dir`` instead of raising.
        skip_bad: drop cuts whose audio cannot be read (listed in features.json ``"skipped"``) instead of raising.
        below_top: store the hidden states below the encoder's top N layers (no final norm), for a model that
            trains those layers (``model.train_encoder_layers: N``); 0 stores the encoder's output.

    Raises:
        FeatureMismatchError: ``out_dir`` holds features of another encoder (and not ``overwrite``).
        ManifestError, AudioError: bad manifest line / unreadable audio, naming file:line.
    """
    from safetensors.torch import save_file

    t_start = time.perf_counter()
    out = Path(out_dir)
    manifest = Path(manifest)
    enc, name = _resolve_encoder(encoder_name_or_model)
    if below_top and enc.pad_to_30s:
        raise ValueError("below_top needs real-length encoding: padded-to-30-s features are cut back to the real "
                         "frames, and the top layers would then see another context than they do from audio")
    fp = encoder_fingerprint(enc, below_top)
    meta_path, out_manifest = out / "features.json", out / "manifest.jsonl"
    manifest_sha = _sha256_file(manifest)
    old: dict[str, Any] = {}
    if meta_path.exists():
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        if old.get("fingerprint") != fp and not overwrite:
            raise FeatureMismatchError(
                f"{out}: holds features of encoder {old.get('encoder')!r} (fingerprint {str(old.get('fingerprint'))[:23]}...), "
                f"not of {name!r} ({fp[:23]}...); use another folder or overwrite=True")
        if (old.get("fingerprint") == fp and old.get("complete") and old.get("source_manifest_sha256") == manifest_sha
                and out_manifest.exists()):
            if progress:
                print(f"[speechlm] features in {out} are up to date ({old.get('cuts')} cuts, encoder {old.get('encoder')}); skipping", flush=True)
            return out_manifest

    cuts = list(iter_manifest(manifest))  # ids are unique (iter_manifest rejects duplicates): they are the keys
    lines = manifest.read_text(encoding="utf-8").splitlines()
    raw = [json.loads(lines[int(c.source.rsplit(":", 1)[1]) - 1]) for c in cuts]
    shards = _plan_shards(cuts, shard_seconds)
    meta: dict[str, Any] = {
        "encoder": name, "fingerprint": fp, "features_version": FEATURES_VERSION,
        "dim": int(enc.dim), "frame_rate": 50, "dtype": "float16", "pad_to_30s": bool(enc.pad_to_30s),
        "below_top": below_top,
        "source_manifest": str(manifest.resolve()), "source_manifest_sha256": manifest_sha,
        "cuts": len(cuts), "complete": False, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(meta_path, meta)  # claims the folder for this encoder before any shard is written

    # ---- which shards are already there ------------------------------------------------------------
    names = [f"feats-{k:03d}.safetensors" for k in range(len(shards))]
    digests = [_shard_digest(cuts, idx, fp) for idx in shards]
    frames_of: dict[int, int] = {}
    todo: list[int] = []
    for k, idx in enumerate(shards):
        md = _shard_metadata(out / names[k]) if (out / names[k]).exists() else None
        if md and md.get("fingerprint") == fp and md.get("digest") == digests[k]:
            counts = json.loads(md.get("frames", "{}"))
            skipped_k = set(json.loads(md.get("skipped", "[]")))
            for i in idx:
                if cuts[i].id in counts:
                    frames_of[i] = counts[cuts[i].id]
                elif cuts[i].id not in skipped_k:
                    break
            else:
                continue
        todo.append(k)
    for stale in out.glob("feats-*.safetensors"):  # shards of an earlier, longer manifest
        m = _SHARD_RE.match(stale.name)
        if m and int(m.group(1)) >= len(shards):
            stale.unlink()

    # ---- encode the rest ---------------------------------------------------------------------------
    skipped: list[dict[str, str]] = []
    err = {"max_abs": 0.0, "sq_err": 0.0, "sq_val": 0.0, "max_value": 0.0, "fp32_cuts": 0}
    encode_s = 0.0
    if todo:
        from tqdm import tqdm

        was_training = enc.training
        orig_dev = next(enc.parameters()).device
        enc.eval()
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else (
            torch.device(device) if device is not None else next(enc.parameters()).device)
        enc.to(dev)
        plan = [(k, b) for k in todo for b in _plan_batches(cuts, shards[k], batch_seconds)]
        left = {k: sum(1 for kk, _ in plan if kk == k) for k in todo}
        pending: dict[int, dict[str, torch.Tensor]] = {k: {} for k in todo}
        pending_skipped: dict[int, list[str]] = {k: [] for k in todo}
        loader = torch.utils.data.DataLoader(_AudioItems(cuts, skip_bad), batch_sampler=[b for _, b in plan],
                                             collate_fn=_as_list, num_workers=workers)
        bar = tqdm(total=sum(len(shards[k]) for k in todo), desc="encode", unit="cut", disable=not progress, dynamic_ncols=True)
        try:
            for (k, _), items in zip(plan, loader):
                good = [(i, w) for i, w, _ in items if w is not None]
                for i, w, msg in items:
                    if w is None:
                        skipped.append({"source": cuts[i].source, "id": cuts[i].id, "reason": msg})
                        pending_skipped[k].append(cuts[i].id)
                if good:
                    t0 = time.perf_counter()
                    with torch.inference_mode():
                        frames, lengths = enc([w.to(dev) for _, w in good], below_top=below_top)  # [B, F, D], [B]
                    encode_s += time.perf_counter() - t0
                    for j, (i, _) in enumerate(good):
                        f32 = frames[j, : int(lengths[j])].float().cpu()  # [F_i, D]
                        f16 = f32.half()
                        amax = float(f32.abs().max()) if f32.numel() else 0.0
                        if amax >= FP16_MAX:  # would overflow to inf: keep this cut in fp32
                            stored = f32
                            err["fp32_cuts"] += 1
                        else:
                            stored = f16
                            d = f16.float() - f32
                            err["max_abs"] = max(err["max_abs"], float(d.abs().max()) if d.numel() else 0.0)
                            err["sq_err"] += float(d.double().square().sum())
                            err["sq_val"] += float(f32.double().square().sum())
                        err["max_value"] = max(err["max_value"], amax)
                        pending[k][cuts[i].id] = stored.contiguous()
                        frames_of[i] = int(stored.shape[0])
                bar.update(len(items))
                left[k] -= 1
                if left[k] == 0:  # shard complete: write it
                    md = {"fingerprint": fp, "digest": digests[k], "encoder": name,
                          "frames": json.dumps({cid: int(t.shape[0]) for cid, t in pending[k].items()}),
                          "skipped": json.dumps(pending_skipped[k])}
                    with _atomic_path(out / names[k]) as tmp:
                        save_file(pending.pop(k), tmp, metadata=md)
        finally:
            bar.close()
            enc.train(was_training)
            enc.to(orig_dev)

    # ---- index, manifest, meta ---------------------------------------------------------------------
    skipped_ids = {s["id"] for s in skipped}
    for k in range(len(shards)):  # skips recorded in reused shards
        if k not in todo:
            md = _shard_metadata(out / names[k]) or {}
            for cid in json.loads(md.get("skipped", "[]")):
                if cid not in skipped_ids:
                    skipped.append({"id": cid, "reason": "audio could not be read (earlier run)"})
                    skipped_ids.add(cid)
    index: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    for k, idx in enumerate(shards):
        for i in idx:
            c, rec = cuts[i], dict(raw[i])
            if c.id in skipped_ids:
                continue
            key_audio = "audio" if "audio" in rec else "path"
            rec[key_audio] = c.audio  # absolute: the features manifest lives in another folder than the input
            if rec.get("duration") is None and c.duration is not None:
                rec["duration"] = round(c.duration, 6)
            rec["features"] = f"{names[k]}#{c.id}"
            rec["feature_frames"] = frames_of[i]
            index[c.id] = {"file": names[k], "key": c.id, "frames": frames_of[i]}
            records.append(rec)
    write_json(out / "index.json", index)
    write_jsonl(out_manifest, records)
    total_frames = sum(frames_of.values())
    meta.update({
        "cuts": len(records), "shards": [{"file": names[k], "cuts": len(shards[k]), "digest": digests[k]} for k in range(len(shards))],
        "frames": total_frames, "audio_hours": sum(c.duration or 0.0 for c in cuts if c.id not in skipped_ids) / 3600.0,
        "bytes": sum((out / n).stat().st_size for n in names),
        "skipped": skipped, "complete": True,
        "run": {"computed_shards": len(todo), "reused_shards": len(shards) - len(todo),
                "wall_s": round(time.perf_counter() - t_start, 3), "encoder_s": round(encode_s, 3)},
    })
    if todo:
        meta["fp16"] = {
            "max_abs_error": err["max_abs"], "rel_rms_error": math.sqrt(err["sq_err"] / max(err["sq_val"], 1e-30)),
            "max_abs_value": err["max_value"], "cuts_kept_fp32": err["fp32_cuts"],
            "note": "stored fp16 vs the encoder's fp32 output, over the cuts computed in this run",
        }
    elif "fp16" in old and old.get("fingerprint") == fp:
        meta["fp16"] = old["fp16"]  # nothing recomputed: keep the error measured when the shards were written
    write_json(meta_path, meta)
    return out_manifest


# ------------------------------------------------------------------------------------------------
# using the features
# ------------------------------------------------------------------------------------------------
def encode_from_features(model, frames_list: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached frames (each [F_i, D]) -> audio embeddings [B, A, H] and lengths [B], as ``model.encode_audio``
    would give for the same clips: frames padded with zeros (what the encoder leaves past a clip's end),
    then ``model.adapter(frames, lengths)`` and ``model.adapter.out_lengths(lengths)``.

    A model with trained top encoder layers (``model.encoder.top_layers``) takes frames cached below them
    (``below_top``) and runs those layers first.
    """
    if not frames_list:
        raise ValueError("encode_from_features: empty batch")
    dim = frames_list[0].shape[-1]
    if dim != model.encoder.dim:
        raise ValueError(f"features have width {dim} but the model's encoder has {model.encoder.dim}: another encoder")
    return model.adapt([], frames=frames_list)  # pads, runs the trained top layers if any, then the adapter


def forward_from_features(model, batch, frames_list: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``SpeechLM.forward`` with cached frames in place of ``batch.waves``: summed answer-token cross-entropy
    and the answer-token count (splice, decoder, LM head only at answer positions)."""
    from speechlm.model.speechlm import IGNORE

    audio, audio_lengths = encode_from_features(model, frames_list)  # [B, A, H], [B]
    emb, mask, labels = model.splice(batch, audio, audio_lengths)  # [B, L, H], [B, L], [B, L]
    hidden = model.decoder(inputs_embeds=emb, attention_mask=mask).last_hidden_state  # [B, L, H]
    nxt = labels[:, 1:]  # [B, L-1]
    pick = nxt != IGNORE
    logits = model.causal_lm.get_output_embeddings()(hidden[:, :-1][pick])  # [Y_total, V]
    loss = nn.functional.cross_entropy(logits.float(), nxt[pick], reduction="sum")
    return loss, pick.sum()
