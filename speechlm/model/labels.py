"""Clip-level label alignment: the adapter's pooled output pulled toward the LLM's embedding of the clip's label.

Legend: B batch, A adapter frames (audio tokens), H LLM width, K labels of one task, T label tokens.

The CTC head (:mod:`speechlm.model.ctc`) pulls each adapter frame toward the embedding of the token being spoken. The
words are then in the frames, where the LLM reads them. A 1-3-token label ("female", "happy") gets no such signal:
its LM loss reaches the adapter only through the frozen LLM, and the osum-tiny model answers gender and emotion
near chance, while a linear probe on the frozen encoder's pooled features gets 97% and 58% (issue 9, item 7).

This head is the clip-level analogue of CTC on E. For each label a clip carries (its manifest's emotion, gender,
age group, ...), the adapter's output is mean-pooled over the clip's frames. It is scored by scaled cosine against
each candidate label's mean token embedding in the LLM's frozen input embeddings E, and trained with cross-entropy
over the task's closed label set. The pooled audio then points at the embedding of the right label word among its
alternatives. That is a direction the LLM already reads as that word, so answering the question needs little
LM training. It needs no LLM forward, and it trains from cached encoder features like the CTC stage.

Every label field present in the manifest counts, whatever task the batch asks. A RAVDESS clip sampled for ASR still
teaches gender and emotion, as the CTC head learns from every transcript.

E is not copied (the head keeps a reference to the LLM's embedding module); its state is one learned scale.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LabelAlignHead(nn.Module):
    """Scaled cosine of the mean-pooled adapter output against each candidate label's mean token embedding."""

    def __init__(self, embedding: nn.Embedding, init_scale: float = 1 / 0.07):
        super().__init__()
        self._embedding = [embedding]  # a list keeps E out of this module's parameters and state dict
        # the temperature, as the CTC head's: CLIP's initial 1/0.07, so the softmax over K labels is not flat
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def label_table(self, candidates: tuple[tuple[int, ...], ...]) -> torch.Tensor:
        """Each candidate's mean token embedding, unit length: [K, H] (E is frozen: no gradient flows into it)."""
        e = self._embedding[0].weight.detach()
        rows = [e[torch.as_tensor(ids, device=e.device)].float().mean(0) for ids in candidates]  # K x [H]
        return nn.functional.normalize(torch.stack(rows), dim=-1)  # [K, H]

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor,
                targets: list[list[tuple[tuple[tuple[int, ...], ...], int]]]) -> tuple[torch.Tensor, int, int]:
        """Summed cross-entropy over every (clip, label) pair, their count, and how many the head gets right.

        audio [B, A, H], lengths [B]; ``targets[b]`` lists clip b's labels as (candidate labels' token ids, index of
        the right one).
        """
        valid = torch.arange(audio.shape[1], device=audio.device)[None, :] < lengths.to(audio.device)[:, None]  # [B, A]
        pooled = (audio.float() * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)  # [B, H]
        pooled = nn.functional.normalize(pooled, dim=-1)  # [B, H]
        scale = self.log_scale.exp()
        tables: dict[tuple, torch.Tensor] = {}
        total = (pooled.sum() + self.log_scale) * 0.0  # in the graph even for a batch without labels (DDP, backward)
        n = right = 0
        for b, pairs in enumerate(targets):
            for candidates, idx in pairs:
                if candidates not in tables:
                    tables[candidates] = self.label_table(candidates)  # [K, H]
                logits = scale * (tables[candidates] @ pooled[b])  # [K]
                total = total + nn.functional.cross_entropy(logits[None], torch.tensor([idx], device=audio.device))
                right += int(logits.detach().argmax()) == idx
                n += 1
        return total, n, right


def clip_label_targets(labels: dict, tasks, token_ids) -> list[tuple[tuple[tuple[int, ...], ...], int]]:
    """A manifest line's labels as (candidate labels' token ids, index of its label) for every closed-set task whose
    field the line has. ``tasks``: task records; ``token_ids(text)``: the LLM's tokens of a label word. Label values
    go through each task's answer format and aliases, as its answers do; values outside the set are skipped (a
    label task's own answer for that line would be refused by its dataset)."""
    from speechlm.tasks.record import ANSWER_FORMATS

    out = []
    seen = set()
    for task in tasks:
        if task.labels is None or task.asr_prefix or task.target in seen or task.target == "text":
            continue
        value = labels.get(task.target)
        if value is None or str(value).strip() == "":
            continue
        value = dict(task.label_aliases).get(ANSWER_FORMATS[task.answer_format](value), ANSWER_FORMATS[task.answer_format](value))
        if value not in task.labels:
            continue
        seen.add(task.target)
        candidates = tuple(tuple(token_ids(lab.replace("_", " "))) for lab in task.labels)
        out.append((candidates, task.labels.index(value)))
    return out


__all__ = ["LabelAlignHead", "clip_label_targets"]
