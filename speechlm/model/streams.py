"""Stream patterns of a multi-stream token LM: how ``[T, nq]`` frames become the ``[L, nq]`` rows the LM steps over.

Owns :data:`PATTERNS` and the pairs :func:`to_pattern` / :func:`from_pattern`:
* ``flat``: one stream (nq = 1, the SpeechGPT case), rows are the frames;
* ``parallel``: all nq tokens of a frame in one row (ESPnet ARParallelLM, espnet2/speechlm/core_lm/ar_parallel.py);
* ``delay``: stream n shifted right by n, padded, so L = T + nq - 1 (MusicGen, Copet et al. 2023; ESPnet
  ARDelayLM: ``retval[:, n:n+T, n] = dec_seq[:, :, n]``, espnet2/speechlm/core_lm/ar_delay.py)::

      step:      0   1   2   3   4   5
      stream 0:  a0  a1  a2  a3  -   -
      stream 1:  -   b0  b1  b2  b3  -
      stream 2:  -   -   c0  c1  c2  c3

May import: torch only. Legend: T frames, nq streams, L pattern rows, B batch.
"""

from __future__ import annotations

import torch

PATTERNS = ("flat", "parallel", "delay")


def delay(x: torch.Tensor, pad: int) -> torch.Tensor:
    """[T, nq] (or [B, T, nq]) -> [T+nq-1, nq] with stream n shifted down by n rows, ``pad`` elsewhere."""
    batched = x.dim() == 3
    x = x if batched else x[None]  # [B, T, nq]
    b, t, nq = x.shape
    out = x.new_full((b, t + nq - 1, nq), pad)  # [B, T+nq-1, nq]
    for n in range(nq):
        out[:, n:n + t, n] = x[:, :, n]
    return out if batched else out[0]


def undelay(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`delay`: [T+nq-1, nq] (or batched) -> [T, nq] (ESPnet reads ``dec_seq_delay[:, i:i+L, i]``)."""
    batched = y.dim() == 3
    y = y if batched else y[None]  # [B, L, nq]
    b, rows, nq = y.shape
    t = rows - nq + 1
    if t < 0:
        raise ValueError(f"{rows} delayed rows cannot hold {nq} streams")
    out = torch.stack([y[:, n:n + t, n] for n in range(nq)], dim=-1)  # [B, T, nq]
    return out if batched else out[0]


def to_pattern(x: torch.Tensor, pattern: str, pad: int) -> torch.Tensor:
    """Frames [T, nq] (or [B, T, nq]) -> pattern rows [L, nq]."""
    if pattern == "delay":
        return delay(x, pad)
    if pattern == "flat" and x.shape[-1] != 1:
        raise ValueError(f"the flat pattern has one stream, got nq={x.shape[-1]}")
    if pattern not in PATTERNS:
        raise ValueError(f"unknown stream pattern {pattern!r}; known: {', '.join(PATTERNS)}")
    return x  # flat, parallel: identity


def from_pattern(y: torch.Tensor, pattern: str) -> torch.Tensor:
    """Pattern rows [L, nq] (or batched) -> frames [T, nq]; the inverse of :func:`to_pattern`."""
    if pattern == "delay":
        return undelay(y)
    if pattern not in PATTERNS:
        raise ValueError(f"unknown stream pattern {pattern!r}; known: {', '.join(PATTERNS)}")
    return y


def tail_steps(pattern: str, nq: int) -> int:
    """Extra decoding steps after stream 0 ends, so every stream emits its last frame (delay: nq - 1)."""
    return nq - 1 if pattern == "delay" else 0
