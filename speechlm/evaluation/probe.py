"""Honest closed-set baselines: the majority class, and a linear probe on a frozen speech encoder.

A speech LM that answers "what emotion / speaker / language is this?" should be compared with what the
encoder's features already give a linear classifier, and with always answering the most common label.
Both baselines score with :func:`speechlm.evaluation.taskmetrics.accuracy_f1`, so their numbers sit in the same
table as the LM's.

:func:`linear_probe` mean-pools each clip's real-length encoder frames (no 30-s padding: padding frames
would dilute the mean differently for short and long clips), standardizes the features with the
training set's statistics and fits multinomial logistic regression with an L2 penalty by full-batch
L-BFGS in float64. The problem is strictly convex and the weights start at zero, so the result does not
depend on the seed or on the thread count beyond float rounding.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from speechlm.evaluation.taskmetrics import accuracy_f1, normalize_label
from speechlm.model.label_frames import fit_logreg

__all__ = ["majority_baseline", "pooled_features", "linear_probe", "cut_label"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MAX_SECONDS = 30.0  # a Whisper encoder sees at most 30 s; longer clips are cut to their first 30 s
_MIN_SAMPLES = 400  # one STFT window: shorter clips are zero-padded to it


def majority_baseline(train_labels: Sequence[Any], test_labels: Sequence[Any]) -> dict[str, Any]:
    """Always answer the most frequent training label (ties: alphabetically first).

    Labels are compared case-insensitively (:func:`speechlm.evaluation.taskmetrics.normalize_label`). Returns
    ``{"accuracy", "macro_f1", "label", "n"}``; ``label`` is ``None`` (accuracy 0) with no training label.
    """
    keys = [normalize_label(x) for x in train_labels]
    counts = Counter(k for k in keys if k)
    if not counts:
        label = None
    else:
        label = min(counts, key=lambda k: (-counts[k], k))
    res = accuracy_f1(list(test_labels), [label or ""] * len(test_labels), labels=sorted(counts))
    return {"accuracy": res["accuracy"], "macro_f1": res["macro_f1"], "label": label, "n": res["n"]}


def cut_label(cut: Any, label_key: str) -> Any:
    """``cut.text`` for ``label_key == "text"``, else ``cut.labels[label_key]`` (``None`` when absent)."""
    if label_key == "text":
        return getattr(cut, "text", None)
    labels = getattr(cut, "labels", None)
    return labels.get(label_key) if isinstance(labels, dict) else None


def _as_speech_encoder(encoder: nn.Module) -> nn.Module:
    """Accept a ``SpeechEncoder`` or a bare Hugging Face ``WhisperEncoder`` (wrapped, real-length)."""
    from speechlm.model.encoder import SpeechEncoder

    if isinstance(encoder, SpeechEncoder):
        return encoder
    if hasattr(encoder, "config") and hasattr(encoder, "conv1") and hasattr(encoder, "layers"):
        device = next(encoder.parameters()).device
        return SpeechEncoder(encoder, pad_to_30s=False).to(device)
    raise TypeError(f"expected a SpeechEncoder or a WhisperEncoder, got {type(encoder).__name__}")


def _load_wave(item: Any) -> np.ndarray:
    """A cut (``audio``/``start``/``duration``) or a 16-kHz 1-D array -> float32 mono, at most 30 s."""
    if isinstance(item, (np.ndarray, torch.Tensor)):
        x = np.asarray(item.detach().cpu() if isinstance(item, torch.Tensor) else item, dtype=np.float32).reshape(-1)
    else:
        from speechlm.data.audio import load_audio

        dur = getattr(item, "duration", None)
        dur = MAX_SECONDS if dur is None else min(float(dur), MAX_SECONDS)
        x = load_audio(item.audio, start=float(getattr(item, "start", 0.0) or 0.0), duration=dur, sample_rate=SAMPLE_RATE)
    x = x[: int(MAX_SECONDS * SAMPLE_RATE)]
    if x.size < _MIN_SAMPLES:
        x = np.pad(x, (0, _MIN_SAMPLES - x.size))
    return x


def _cache_key(item: Any) -> tuple | None:
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return None
    return (str(item.audio), float(getattr(item, "start", 0.0) or 0.0), getattr(item, "duration", None))


def pooled_features(encoder: nn.Module, cuts: Sequence[Any], batch_size: int = 16, cache: dict | None = None) -> np.ndarray:
    """Mean of each clip's real-length encoder frames: ``[len(cuts), D]`` float32, in input order.

    ``encoder``: a :class:`~speechlm.model.encoder.SpeechEncoder` (``pad_to_30s=False`` is the intended
    setup; with ``True`` frames past the clip are still excluded) or a bare ``WhisperEncoder``. ``cuts``:
    :class:`~speechlm.data.manifest.Cut` objects, or 16-kHz waveforms as 1-D arrays. Clips are batched by
    similar length (less padding), run under ``torch.inference_mode`` with the encoder in eval mode (its
    previous train/eval mode is restored), on the encoder's device. ``cache``: a dict kept by the caller and
    shared across calls with the same encoder; a clip (audio, start, duration) already in it is not encoded
    again (a per-task evaluation meets the same clip in several tasks).
    """
    enc = _as_speech_encoder(encoder)
    params = list(enc.parameters())
    device = params[0].device if params else torch.device("cpu")
    out = np.zeros((len(cuts), enc.dim), dtype=np.float32)
    keys = [_cache_key(c) if cache is not None else None for c in cuts]
    todo = [i for i, k in enumerate(keys) if k is None or k not in cache]
    for i, k in enumerate(keys):
        if k is not None and k in cache:
            out[i] = cache[k]
    waves = {i: _load_wave(cuts[i]) for i in todo}
    order = sorted(todo, key=lambda i: waves[i].size)
    was_training = enc.training
    enc.eval()
    try:
        with torch.inference_mode():
            for b in range(0, len(order), max(1, batch_size)):
                idx = order[b: b + max(1, batch_size)]
                batch = [torch.from_numpy(waves[i]).to(device) for i in idx]
                frames, lengths = enc(batch)  # [B, F, D], [B]; frames past each clip are zeros
                frames = frames.float()
                lengths = lengths.to(frames.device).clamp(min=1)
                pooled = frames.sum(dim=1) / lengths[:, None].to(frames.dtype)  # [B, D]
                out[idx] = pooled.cpu().numpy()
    finally:
        enc.train(was_training)
    for i in todo:
        if keys[i] is not None:
            cache[keys[i]] = out[i].copy()
    return out


def _labels_of(cuts: Sequence[Any], label_key: str, split: str) -> tuple[list[Any], list[str]]:
    keep, labels, missing = [], [], []
    for c in cuts:
        v = cut_label(c, label_key)
        if v is None or str(v).strip() == "":
            missing.append(getattr(c, "id", "?"))
            continue
        keep.append(c)
        labels.append(str(v).strip())
    if missing:
        log.warning("%s: %d cut(s) without label %r skipped (e.g. %s)", split, len(missing), label_key, missing[:3])
    return keep, labels


def linear_probe(
    encoder: nn.Module,
    train_cuts: Sequence[Any],
    test_cuts: Sequence[Any],
    label_key: str,
    epochs: int = 200,
    seed: int = 0,
    weight_decay: float = 1e-2,
    batch_size: int = 16,
    feature_cache: dict | None = None,
) -> dict[str, Any]:
    """Train a linear classifier on frozen, mean-pooled encoder features and score it on ``test_cuts``.

    Args:
        encoder: frozen encoder (see :func:`pooled_features`); never updated.
        train_cuts / test_cuts: cuts whose ``labels[label_key]`` (or ``text`` for ``"text"``) is the class;
            cuts without it are skipped (``skipped_train`` / ``skipped_test``, and a warning).
        epochs: L-BFGS iterations over the full training set.
        seed: seeds torch for the fit (the fit starts from zero weights, so it is deterministic anyway).
        weight_decay: L2 strength on the weights (added to the *mean* cross-entropy) on standardized features.
        feature_cache: pooled features by clip, shared across probes with the same encoder (see pooled_features).

    Labels are compared case-insensitively. A test label never seen in training cannot be predicted: it is
    counted as wrong and listed in ``unseen_test_labels`` (with a warning), not raised.

    Returns ``{"accuracy", "macro_f1", "confusion", "confusion_labels", "labels", "per_class",
    "train_accuracy", "majority": majority_baseline(...), "predictions": [label per scored test cut],
    "unseen_test_labels": {label: count}, "n_train", "n_test", "skipped_train", "skipped_test",
    "feature_dim", "n"}``. ``labels`` are the training classes (sorted), then unseen test labels.
    """
    train_keep, train_labels = _labels_of(train_cuts, label_key, "train")
    test_keep, test_labels = _labels_of(test_cuts, label_key, "test")
    if not train_keep:
        raise ValueError(f"linear_probe: no training cut has label {label_key!r}")
    classes = sorted({normalize_label(x) for x in train_labels})
    display = {}
    for x in train_labels:
        display.setdefault(normalize_label(x), x)
    class_index = {k: i for i, k in enumerate(classes)}
    unseen = Counter(normalize_label(x) for x in test_labels if normalize_label(x) not in class_index)
    if unseen:
        log.warning("linear_probe: test label(s) absent from training, counted as wrong: %s", dict(unseen))

    x_train = pooled_features(encoder, train_keep, batch_size=batch_size, cache=feature_cache).astype(np.float64)
    x_test = pooled_features(encoder, test_keep, batch_size=batch_size, cache=feature_cache).astype(np.float64) if test_keep else \
        np.zeros((0, x_train.shape[1]))
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)  # constant features: centre only
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    y = torch.tensor([class_index[normalize_label(x)] for x in train_labels])
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = fit_logreg(torch.from_numpy(x_train), y, len(classes), weight_decay, max(1, epochs))
    finally:
        torch.random.set_rng_state(gen_state)
    with torch.no_grad():
        train_pred = model(torch.from_numpy(x_train)).argmax(dim=1)
        test_pred = model(torch.from_numpy(x_test)).argmax(dim=1).tolist() if len(x_test) else []
    predictions = [display[classes[i]] for i in test_pred]
    label_set = [display[k] for k in classes] + sorted(unseen)
    res = accuracy_f1(test_labels, predictions, labels=label_set)
    return {
        "accuracy": res["accuracy"],
        "macro_f1": res["macro_f1"],
        "confusion": res["confusion"],
        "confusion_labels": res["confusion_labels"],
        "labels": res["labels"],
        "per_class": res["per_class"],
        "train_accuracy": float((train_pred == y).double().mean()),
        "majority": majority_baseline(train_labels, test_labels),
        "predictions": predictions,
        "unseen_test_labels": dict(unseen),
        "n_train": len(train_keep),
        "n_test": len(test_keep),
        "skipped_train": len(train_cuts) - len(train_keep),
        "skipped_test": len(test_cuts) - len(test_keep),
        "feature_dim": int(x_train.shape[1]),
        "n": len(test_keep),
    }
