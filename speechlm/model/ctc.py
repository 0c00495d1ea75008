"""CTC over the LLM's own vocabulary: a dense alignment signal for the adapter that needs no LLM forward.

Legend: B batch, A adapter frames (audio tokens), H LLM width, V LLM vocabulary, V+1 with the blank,
Y target tokens.

Each adapter output frame is scored against the LLM's frozen input-embedding matrix E [V, H] plus one learned
blank vector, by scaled cosine similarity, and trained with CTC against the transcript's LLM tokens. Every frame
is thus pulled toward the embedding of the token being spoken (LegoSLM, arXiv 2505.11352; Speech-LLaMA, arXiv
2307.03917; Soundwave adds the same CTC beside the LM loss at weight 0.3, FreedomIntelligence/Soundwave
``Soundwave.py``). Cosine rather than a raw dot product: E's rows have different norms (frequent tokens are
shorter), and a dot product would favour long rows whatever the direction; the learned scale (a temperature)
starts at 1/0.07, CLIP's initial temperature, so the softmax over 49k rows is not flat at step 0.

E is not copied: the head holds a reference to the LLM's embedding module, so its state dict has only the blank,
the scale and (optionally) the vocabulary it scores, and checkpoints stay small.

**Restricted vocabulary** (:meth:`EmbeddingCTCHead.set_vocab`). Scoring all 49k rows of SmolLM2's E costs
12.5 frames x 49152 x 576 x 2 FLOPs = 0.7 GFLOP per audio second at x4 forward, as much again backward: more
than the adapter and encoder together. The training loop restricts the head to the tokens of the training
transcripts (a few thousand; ``model.ctc_vocab: train``): a frame can only be pulled toward a token some
transcript holds anyway, so the signal is the same for several times less compute. Decoding maps back to LLM ids.

**Spelling with frequent pieces** (``model.ctc_vocab_size: N``, :func:`frequent_vocab`). A broad text corpus spreads
its tokens thin: the demo's 77k training tokens hold 13k token types, and a third of the open-English dev tokens
occur fewer than 5 times in them, so most classes get too few frames to learn. With N, the head keeps the N most
frequent training tokens plus one-character tokens, and a target token outside them is spelled with them, longest
piece first (as WordPiece segments a word; :meth:`EmbeddingCTCHead.to_classes`). The pieces are LLM tokens too,
so greedy decoding, compression and joint decoding read them as they are.

Also here: greedy CTC decoding (argmax, merge runs, drop blanks) and the Soundwave-style compression of what the
LLM sees: drop the frames whose argmax is blank and average each run of frames with the same argmax.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class EmbeddingCTCHead(nn.Module):
    """Scaled cosine of adapter frames against the LLM's token embeddings plus a learned blank (index V)."""

    def __init__(self, embedding: nn.Embedding, init_scale: float = 1 / 0.07, tokenizer=None):
        super().__init__()
        self._embedding = [embedding]  # a list keeps E out of this module's parameters and state dict
        self._tokenizer = tokenizer  # spells a target token outside a restricted vocabulary (None: such a token fails)
        self._spellings: dict[int, list[int] | None] = {}
        self._pieces: dict[str, int] | None = None
        self.spell_in_decoding = False  # model.ctc_vocab_size > 0: joint decoding spells tokens outside the vocabulary
        h = embedding.weight.shape[1]
        self.blank = nn.Parameter(torch.randn(h) * embedding.weight.detach().float().std())  # [H]
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        # LLM token ids the head scores, ascending (empty: all of them); saved with the checkpoint's weights
        self.register_buffer("vocab", torch.zeros(0, dtype=torch.long))

    def set_vocab(self, token_ids) -> None:
        """Score only these LLM tokens (and the blank). Class k < len(vocab) is LLM token vocab[k]."""
        ids = torch.as_tensor(sorted({int(t) for t in token_ids}), dtype=torch.long)
        if len(ids) and (int(ids[0]) < 0 or int(ids[-1]) >= self._embedding[0].weight.shape[0]):
            raise ValueError(f"CTC vocabulary: token ids must lie in [0, {self._embedding[0].weight.shape[0]})")
        self.vocab = ids.to(self.blank.device)
        self._spellings = {}
        self._pieces = None

    @property
    def vocab_size(self) -> int:
        """Classes before the blank."""
        return len(self.vocab) if len(self.vocab) else self._embedding[0].weight.shape[0]

    @property
    def blank_id(self) -> int:
        return self.vocab_size

    def spell(self, token_id: int) -> list[int] | None:
        """A token outside the restricted vocabulary as vocabulary tokens of the same (byte-level) string, longest
        piece first; None when a character has no piece (or the head has no tokenizer)."""
        if token_id in self._spellings:
            return self._spellings[token_id]
        out: list[int] | None = None
        if self._tokenizer is not None and self._pieces is None:  # built once per vocabulary
            self._pieces = dict(zip(self._tokenizer.convert_ids_to_tokens(self.vocab.tolist()), self.vocab.tolist()))
            self._longest = max(map(len, self._pieces))
            self._special = set(getattr(self._tokenizer, "all_special_ids", ()))  # the end of turn is never "spelled"
        if self._tokenizer is not None and int(token_id) not in self._special:
            s, out, i = self._tokenizer.convert_ids_to_tokens(int(token_id)), [], 0
            longest = self._longest
            while out is not None and i < len(s):
                j = next((j for j in range(min(len(s), i + longest), i, -1) if s[i:j] in self._pieces), None)
                if j is None:
                    out = None
                else:
                    out.append(self._pieces[s[i:j]])
                    i = j
        self._spellings[token_id] = out
        return out

    @property
    def spells(self) -> bool:
        """Whether joint decoding scores an LLM token outside the vocabulary by its spelling: a vocabulary of frequent
        pieces (``model.ctc_vocab_size``; the builder sets ``spell_in_decoding``) and a tokenizer."""
        return self.spell_in_decoding and self._tokenizer is not None and len(self.vocab) > 0

    def spell_classes(self, token_id: int) -> list[int] | None:
        """:meth:`spell` as class indices (joint decoding scores a spelled LLM token by them); None if unsayable."""
        pieces = self.spell(int(token_id)) if len(self.vocab) else None
        return torch.searchsorted(self.vocab.cpu(), torch.as_tensor(pieces, dtype=torch.long)).tolist() if pieces else None

    def to_classes(self, token_ids: list[int]) -> list[int]:
        """LLM token ids -> class indices (identity without a restricted vocabulary). A token outside it is spelled
        with its pieces (:meth:`spell`); one that cannot be raises."""
        if not len(self.vocab):
            return list(token_ids)
        vocab = self.vocab.cpu()
        ids = torch.as_tensor(token_ids, dtype=torch.long)
        pos = torch.searchsorted(vocab, ids).clamp(max=len(vocab) - 1)
        found = vocab[pos] == ids
        if bool(found.all()):
            return pos.tolist()
        out: list[int] = []
        for t, p, ok in zip(token_ids, pos.tolist(), found.tolist()):
            if ok:
                out.append(p)
                continue
            pieces = self.spell(int(t))
            if pieces is None:
                raise ValueError(f"CTC target token {int(t)} is outside the head's vocabulary and cannot be spelled "
                                 "with it (set_vocab from all transcripts, or keep their one-character tokens)")
            out += torch.searchsorted(vocab, torch.as_tensor(pieces, dtype=torch.long)).tolist()
        return out

    def to_tokens(self, classes: list[int]) -> list[int]:
        """Class indices (no blanks) -> LLM token ids."""
        return [int(self.vocab[c]) for c in classes] if len(self.vocab) else list(classes)

    def token_table(self) -> torch.Tensor:
        """The frozen embeddings of the classes before the blank [C, H] (all of E, or its vocab rows)."""
        e = self._embedding[0].weight.detach()  # [V, H]
        return e[self.vocab] if len(self.vocab) else e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, A, H] -> logits [B, A, C+1] (blank last); C = V, or len(vocab) when restricted."""
        # E's rows and the blank are scored apart: E is frozen, and a table that concatenated the learned blank
        # to it would make autograd compute a [C+1, H] gradient (as costly as the scoring itself) for one row.
        # The scale goes on x [B, A, H], not on the logits [B, A, C+1], for the same reason.
        with torch.no_grad():  # frozen: only the adapter, blank and scale learn
            e = self.token_table()  # [C, H]
            e = nn.functional.normalize(e.to(x.dtype), dim=-1)
        x = nn.functional.normalize(x, dim=-1) * self.log_scale.exp().to(x.dtype)  # [B, A, H]
        blank = nn.functional.normalize(self.blank.to(x.dtype), dim=-1)  # [H]
        return torch.cat([x @ e.T, (x @ blank)[..., None]], dim=-1)  # [B, A, C+1]


def frequent_vocab(token_lists, size: int, tokenizer) -> set[int]:
    """The ``size`` most frequent tokens of ``token_lists`` (ties: lower id first) plus every one-character token of
    the tokenizer (a byte-level BPE has one per byte, so any text can be spelled); a training token with a character
    no one-character token has is kept whole."""
    from collections import Counter

    counts = Counter(t for ids in token_lists for t in ids)
    keep = {t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]}
    singles = {piece for piece in tokenizer.get_vocab() if len(piece) == 1}
    keep.update(tokenizer.convert_tokens_to_ids(sorted(singles)))
    keep.update(t for t in set(counts) - keep if not set(tokenizer.convert_ids_to_tokens(int(t))) <= singles)
    return keep


def ctc_loss(logits: torch.Tensor, lengths: torch.Tensor, targets: list[list[int]], blank: int) -> tuple[torch.Tensor, int]:
    """Summed CTC loss (-log p(target | frames)) over the clips that have a target, and how many target tokens
    they hold (the caller normalises, as it does for the LM loss).

    logits [B, A, V+1], lengths [B] valid frames per clip. A clip with an empty target is skipped; a clip with
    more target tokens than frames cannot be aligned, and ``zero_infinity`` drops it from the gradient instead
    of returning inf (its share is reported by :func:`infeasible_share`).
    """
    keep = [i for i, t in enumerate(targets) if t]
    if not keep:
        return logits.sum() * 0.0, 0
    idx = torch.tensor(keep, device=logits.device)
    logp = torch.log_softmax(logits[idx].float(), dim=-1).transpose(0, 1)  # [A, B', V+1], ctc_loss wants time first
    flat = torch.tensor([tok for i in keep for tok in targets[i]], dtype=torch.long, device=logits.device)  # [sum Y]
    tlen = torch.tensor([len(targets[i]) for i in keep], dtype=torch.long, device=logits.device)  # [B']
    loss = nn.functional.ctc_loss(logp, flat, lengths[idx.cpu()].to(logits.device), tlen, blank=blank,
                                  reduction="sum", zero_infinity=True)
    return loss, int(tlen.sum())


def infeasible_share(frame_lengths: list[int], targets: list[list[int]]) -> float:
    """Share of clips whose CTC alignment is impossible: fewer frames than target tokens plus repeats (a
    repeated token needs a blank between its two copies)."""
    bad = n = 0
    for a, t in zip(frame_lengths, targets):
        if not t:
            continue
        n += 1
        repeats = sum(1 for x, y in zip(t, t[1:]) if x == y)
        bad += a < len(t) + repeats
    return bad / n if n else 0.0


def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor, blank: int) -> list[list[int]]:
    """Best path: argmax per frame, merge runs of the same token, drop blanks. logits [B, A, V+1]."""
    best = logits.argmax(dim=-1).cpu()  # [B, A]
    out = []
    for row, n in zip(best, lengths.tolist()):
        row = torch.unique_consecutive(row[:n])  # merge runs
        out.append([int(t) for t in row if int(t) != blank])
    return out


def compress(frames: torch.Tensor, logits: torch.Tensor, lengths: torch.Tensor, blank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Soundwave-style shrinking: drop frames whose argmax is blank, and average each run of consecutive frames
    with the same argmax into one. frames [B, A, H], logits [B, A, V+1] -> [B, A', H], lengths [B].

    A clip whose every frame is blank keeps its single most token-like frame, so the LLM always gets audio.
    """
    best = logits.argmax(dim=-1)  # [B, A]
    pieces, new_lengths = [], []
    for i, n in enumerate(lengths.tolist()):
        tok = best[i, :n]  # [n]
        keep = tok != blank  # [n]
        if not bool(keep.any()):
            j = int(logits[i, :n, blank].argmin())
            pieces.append(frames[i, j:j + 1])  # [1, H]
            new_lengths.append(1)
            continue
        pos = keep.nonzero()[:, 0]  # [k] kept frame positions
        # a new run starts where the token changes or a blank (or gap) separated two kept frames
        new_run = torch.ones_like(pos, dtype=torch.bool)
        new_run[1:] = (tok[pos[1:]] != tok[pos[:-1]]) | (pos[1:] != pos[:-1] + 1)
        run_id = new_run.cumsum(0) - 1  # [k]
        r = int(run_id[-1]) + 1
        summed = frames.new_zeros(r, frames.shape[-1]).index_add(0, run_id, frames[i, pos])  # [r, H]
        count = torch.bincount(run_id, minlength=r).to(frames.dtype)[:, None]  # [r, 1]
        pieces.append(summed / count)
        new_lengths.append(r)
    out = frames.new_zeros(len(pieces), max(new_lengths), frames.shape[-1])  # [B, A', H]
    for i, p in enumerate(pieces):
        out[i, : p.shape[0]] = p
    return out, torch.tensor(new_lengths)
