"""Unit rows the LLM can read from the start: each unit's embedding pulled, by CTC, toward the tokens spoken with it.

Legend: K units, H LLM width, C text tokens of the transcripts (+1 blank), N clips, U units of one clip, T tokens.

The continuous path aligns its adapter with CTC on the LLM's own embeddings (speechlm.model.ctc), so the LLM reads
the audio as something near text from its first LM step. The discrete path's unit rows start with no such
meaning: whatever the init, the LLM must learn to read them through the LM loss alone, and on a CPU budget it does
not (speechgpt-tiny run I: 300 ASR+TTS steps, transcripts that ignore the units). This module gives the rows the
same dense signal before any LLM step. Every deduplicated unit of a clip is scored by the scaled cosine of its row
against the frozen embeddings of the transcripts' tokens plus one learned blank (LegoSLM, arXiv 2505.11352;
Soundwave's CTC on E), and CTC against the clip's transcript tokens trains the K rows. A row has no context, so it
becomes a mixture of the tokens its unit is heard in: the sequence of rows then spells the transcript roughly, the
way the CTC head's frames do. It needs no LLM forward: seconds to a minute on a CPU.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn


def ctc_unit_rows(units: list[list[int]], tokens: list[list[int]], embedding: torch.Tensor, init: torch.Tensor,
                  steps: int = 300, lr: float = 0.02, batch: int = 32, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Unit rows [K, H] trained with CTC, and a report (loss at start and end, seconds).

    units[i]: clip i's deduplicated units (0..K-1); tokens[i]: its transcript's LLM token ids; embedding [V, H]:
    the frozen text rows; init [K, H]: the rows to start from. Rows come back at the text rows' mean norm.
    Clips with no tokens, or more tokens than units (CTC cannot emit them), are left out."""
    pairs = [(u, t) for u, t in zip(units, tokens) if t and len(u) >= len(t)]
    if not pairs:
        raise ValueError("ctc_unit_rows: no clip has a transcript with at most as many tokens as units")
    vocab = sorted({t for _, ts in pairs for t in ts})
    index = {t: i for i, t in enumerate(vocab)}  # token id -> class (0..C-1); blank is C
    e = nn.functional.normalize(embedding[torch.tensor(vocab)].detach().float(), dim=-1)  # [C, H]
    gen = torch.Generator().manual_seed(seed)
    rows = nn.Parameter(init.detach().float().clone())  # [K, H]
    blank = nn.Parameter(torch.randn(e.shape[1], generator=gen) * 0.02)  # [H]
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's temperature, as the CTC head's
    opt = torch.optim.Adam([rows, blank, log_scale], lr=lr)
    t0, losses = time.time(), []
    for step in range(steps):
        pick = torch.randperm(len(pairs), generator=gen)[:batch].tolist()
        us = [torch.tensor(pairs[i][0]) for i in pick]
        ts = [torch.tensor([index[t] for t in pairs[i][1]]) for i in pick]
        x = nn.utils.rnn.pad_sequence(us, batch_first=True)  # [B, U]
        table = torch.cat([e, nn.functional.normalize(blank, dim=-1)[None]])  # [C+1, H]
        logits = log_scale.exp() * nn.functional.normalize(rows[x], dim=-1) @ table.T  # [B, U, C+1]
        loss = nn.functional.ctc_loss(logits.log_softmax(-1).transpose(0, 1), torch.cat(ts),
                                      torch.tensor([len(u) for u in us]), torch.tensor([len(t) for t in ts]),
                                      blank=len(vocab), reduction="mean", zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    norm = embedding.detach().float().norm(dim=-1).mean()
    out = nn.functional.normalize(rows.detach(), dim=-1) * norm  # [K, H]
    k = max(1, min(20, steps // 5))
    report = {"clips": len(pairs), "classes": len(vocab) + 1, "steps": steps, "loss_start": sum(losses[:k]) / k,
              "loss_end": sum(losses[-k:]) / k, "seconds": round(time.time() - t0, 1)}
    return out, report
