"""Label tags: what a linear probe hears in the clip, written into the LLM's input as words ("emotion: angry").

Legend: B batch, N clips, F encoder frames, D encoder width, A adapter frames, H LLM width, G label fields, K labels
of one field, T tag frames (every field's prefix tokens and its label frame), P a prefix's tokens.

On held-out speakers, a linear probe on the frozen encoder's mean-pooled features gets gender right 97% of the time
and emotion 58% (8 classes); the osum-tiny model, reading the adapter's frames, gets 88% and 16% (issue 9, item 7).
The evidence is in the pooled features; a few hundred LM-loss steps on 1-3-token answers do not carry it through
the adapter and the frozen LLM. Pulling the adapter's pooled output toward the label's embedding
(:mod:`speechlm.model.labels`, run D) did not help: the adapter's frames serve the transcript, and their mean is a
poor place for a clip-level label.

So each closed-set field the recipe names (``model.label_frames: [sgc, ser]``: gender, emotion) gets a probe inside
the model, and the probe's answer is written where the LLM reads: before the clip's audio frames come the tokens of
"gender:" and one frame holding the predicted label word, then "emotion:" and its label, and so on. The LLM reads
a tag in its own embeddings, so answering "what emotion?" is copying a word from its input, which an instruction
model does from the start.

* **The probe** is the linear probe of :func:`speechlm.evaluation.probe.linear_probe`: multinomial logistic
  regression on the encoder's mean-pooled output, standardised per dimension by the training clips' mean and std.
  Before the first step the training loop fits it the same way, by L-BFGS on the pooled features of the training
  clips (:meth:`LabelFramesAdapter.fit_probes`; a few seconds beside one pass of the encoder over the data). It then
  keeps learning by cross-entropy on every label field a manifest line holds (``train.label_weight`` / a stage's
  ``label``) and from the LM loss through the tag.
* **The label frame is the argmax label's embedding** (the mean of its tokens, with a leading space as inside a
  sentence), with the softmax's gradient (straight-through, Bengio et al. 2013). A posterior mixture ("0.4 angry +
  0.3 fearful") was tried first (run F): the in-model probe was right 43% of the time on held-out RAVDESS actors, yet
  the LLM answered the emotion question 20% right, soft or hard at inference, with the tag words left out.
* The ASR path, reading the adapter's frames, is untouched; CTC heads are refused beside the tags (they would
  score the tag frames as speech).

This module owns the adapter wrapper (:class:`LabelFramesAdapter`: composition, the inner adapter unchanged) and
its loss view (:class:`LabelFramesHead`, which the training loop calls as it calls a label head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LabelField", "LabelFramesAdapter", "LabelFramesHead", "fit_logreg"]


@dataclass(frozen=True)
class LabelField:
    """One closed-set field's token ids in the LLM's vocabulary."""

    candidates: tuple[tuple[int, ...], ...]
    """Each label's tokens as the training targets tokenize it (speechlm.model.labels.clip_label_targets): K tuples,
    in the task's label order; they identify the field of a target."""
    prefix: tuple[int, ...]
    """The tag's words before the label, e.g. the tokens of "emotion:"."""
    tags: tuple[tuple[int, ...], ...]
    """Each label's tokens inside the tag (with a leading space): K tuples; a label frame is one label's mean."""


def fit_logreg(x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float, max_iter: int) -> nn.Linear:
    """Multinomial logistic regression by L-BFGS from zero: mean cross-entropy + weight_decay/2 * ||W||^2 (bias
    unpenalized); x [N, D] float64, y [N]. The in-model probes and the report's linear probe
    (speechlm.evaluation.probe) are fitted by this one function."""
    model = nn.Linear(x.shape[1], n_classes).double()
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + 0.5 * weight_decay * model.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return model


class LabelFramesAdapter(nn.Module):
    """Inner adapter output [B, A, H] with every field's tag in front: [B, T + A, H], T = sum of (P_g + 1)."""

    def __init__(self, inner: nn.Module, embedding: nn.Embedding, fields: dict[str, LabelField], in_dim: int):
        """``fields``: task name -> its :class:`LabelField`; ``in_dim`` D, the encoder's width."""
        super().__init__()
        if not fields:
            raise ValueError("label frames need at least one closed-set field")
        self.inner = inner
        self._embedding = [embedding]  # a list keeps E out of this module's parameters and state dict
        self.names = list(fields)
        self.fields = [fields[n] for n in self.names]
        self.candidates = [f.candidates for f in self.fields]  # G x K_g x T
        self._field_of = {c: g for g, c in enumerate(self.candidates)}  # a target's candidates -> its field
        self.tag_len = sum(len(f.prefix) + 1 for f in self.fields)  # T
        # pooled features -> (pooled - shift) * scale: the training clips' mean and 1/std, set from data
        self.feat_shift = nn.Parameter(torch.zeros(in_dim))  # [D]
        self.feat_scale = nn.Parameter(torch.ones(in_dim))  # [D]
        self.heads = nn.ModuleList(nn.Linear(in_dim, len(c)) for c in self.candidates)  # G x [D -> K_g]
        for h in self.heads:  # zero until fitted: every label equally likely
            nn.init.zeros_(h.weight)
            nn.init.zeros_(h.bias)
        self.last_logits: list[torch.Tensor] = []  # G x [B, K_g] of the last forward, for the label loss
        self.last_pooled: torch.Tensor | None = None  # [B, D] mean-pooled frames of the last forward, unscaled

    @property
    def out_norm(self):
        return getattr(self.inner, "out_norm", None)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.inner.out_lengths(lengths) + self.tag_len

    def _rows(self, ids: tuple[int, ...]) -> torch.Tensor:
        e = self._embedding[0].weight.detach()  # E is frozen
        return e[torch.as_tensor(ids, device=e.device)].float()  # [len(ids), H]

    def tag_table(self, g: int) -> torch.Tensor:
        """Field g's labels as LLM inputs: each label's mean tag-token embedding [K_g, H]."""
        return torch.stack([self._rows(ids).mean(0) for ids in self.fields[g].tags])

    def pool(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """frames [B, F, D] -> the mean of each clip's valid frames [B, D], unscaled."""
        valid = torch.arange(frames.shape[1], device=frames.device)[None, :] < lengths.to(frames.device)[:, None]  # [B, F]
        return (frames.float() * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)  # [B, D]

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """frames [B, F, D], lengths [B] -> [B, T + A, H]; clip b's valid frames are its first T + A_b."""
        audio = self.inner(frames, lengths)  # [B, A, H]
        pooled = self.pool(frames, lengths)  # [B, D]
        self.last_pooled = pooled.detach()
        x = (pooled - self.feat_shift) * self.feat_scale  # [B, D]: the probe's features, standardised
        self.last_logits = [head(x) for head in self.heads]  # G x [B, K_g]
        parts = []
        for g, logits in enumerate(self.last_logits):
            p = torch.softmax(logits, -1)  # [B, K_g]
            hard = nn.functional.one_hot(p.argmax(-1), p.shape[-1]).to(p.dtype) + p - p.detach()  # straight-through
            prefix = self._rows(self.fields[g].prefix).to(p.device)  # [P_g, H]
            parts += [prefix.expand(len(p), -1, -1), (hard @ self.tag_table(g).to(p.device))[:, None]]  # [B, P_g|1, H]
        return torch.cat([torch.cat(parts, dim=1).to(audio.dtype), audio], dim=1)  # [B, T + A, H]

    @torch.no_grad()
    def fit_probes(self, pooled: torch.Tensor, targets: list[list[tuple[tuple[tuple[int, ...], ...], int]]],
                   weight_decay: float = 1e-2, max_iter: int = 200) -> dict[str, int]:
        """Fit the standardiser and every probe in closed form, as the linear probe is fitted: pooled [N, D] mean-
        pooled encoder frames of N >= 2 training clips, ``targets[n]`` clip n's labels (candidates, right index).
        Returns how many clips each field was fitted on; a field without any keeps its zero probe."""
        if pooled.ndim != 2 or pooled.shape[0] < 2 or pooled.shape[1] != self.feat_shift.shape[0]:
            raise ValueError(f"label frames: fitting the probes needs [N >= 2, {self.feat_shift.shape[0]}] pooled "
                             f"features, got {list(pooled.shape)}")
        pooled = pooled.detach().double().cpu()  # the fit runs on the CPU in float64, as linear_probe's
        std = pooled.std(0)  # [D]
        mean, scale = pooled.mean(0), torch.where(std > 1e-6, 1.0 / std.clamp(min=1e-6), torch.ones_like(std))
        self.feat_shift.copy_(mean)
        self.feat_scale.copy_(scale)
        x_all = (pooled - mean) * scale  # [N, D]
        counts = {}
        for g, head in enumerate(self.heads):
            rows = [(n, idx) for n, pairs in enumerate(targets) for c, idx in pairs if c == self.candidates[g]]
            counts[self.names[g]] = len(rows)
            if not rows:
                continue
            x = x_all[[n for n, _ in rows]]  # [N_g, D]
            y = torch.tensor([idx for _, idx in rows])  # [N_g]
            lin = fit_logreg(x, y, head.out_features, weight_decay, max_iter)
            head.weight.copy_(lin.weight)
            head.bias.copy_(lin.bias)
        return counts

    def label_loss(self, targets: list[list[tuple[tuple[tuple[int, ...], ...], int]]]) -> tuple[torch.Tensor, int, int]:
        """Summed cross-entropy of the last forward's probes over every (clip, field) target, their count, and how
        many the probes get right. ``targets[b]``: clip b's labels as (candidate labels' token ids, right index), as
        :func:`speechlm.model.labels.clip_label_targets` gives them; fields without a probe are skipped."""
        if not self.last_logits:
            raise RuntimeError("label_loss before a forward: no probe logits")
        total = sum(lg.sum() for lg in self.last_logits) * 0.0  # in the graph even for a batch without labels (DDP)
        n = right = 0
        for b, pairs in enumerate(targets):
            for candidates, idx in pairs:
                g = self._field_of.get(candidates)
                if g is None:
                    continue
                logits = self.last_logits[g][b]  # [K_g]
                total = total + nn.functional.cross_entropy(logits[None], torch.tensor([idx], device=logits.device))
                right += int(logits.detach().argmax()) == idx
                n += 1
        return total, n, right


class LabelFramesHead(nn.Module):
    """The label-head interface of the training loop, ``head(audio, lengths, targets) -> (sum, count, right)``, over
    a :class:`LabelFramesAdapter`'s last probes. No parameters of its own (the probes are the adapter's)."""

    def __init__(self, adapter: LabelFramesAdapter):
        super().__init__()
        self._adapter = [adapter]  # not a submodule: the probes are saved and trained as the adapter's

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor, targets) -> tuple[torch.Tensor, int, int]:
        return self._adapter[0].label_loss(targets)
