"""Joint CTC/LLM decoding: the CTC head's prefix probability steers the LLM's search, token by token.

Legend: B clips, R rows of the search (clips x beams, a clip's beams adjacent), A adapter frames, C+1 CTC classes
(blank last), V LLM vocabulary, K candidate tokens scored per row and step.

The CTC head (speechlm.model.ctc) scores the LLM's own tokens, so the CTC prefix probability of any partial LLM
answer can be computed exactly and added to the LLM's score, as in hybrid CTC/attention decoding (Watanabe et
al. 2017, "Hybrid CTC/Attention Architecture for End-to-End Speech Recognition", eq. 18-21; ESPnet's
``CTCPrefixScore``). Each step scores the LLM's top-K next tokens plus the end of turn:

    score(c) = (1 - w) log p_LLM(c | prefix) + w (log psi(prefix + c) - log psi(prefix))

psi(g) is the probability that the clip's collapsed CTC labelling *starts with* g (Graves 2012, sec. 7.3);
for the end of turn it is the probability that the labelling *is* g. The candidates are the LLM's top K plus every
token the CTC ranks first at some frame of the clip or gives a posterior of at least 0.05 there: with the LLM's top
K alone, a word the LLM does not expect could never be written, and the turn would end early ("in being a m" for
"in being comparatively modern", run F). The LLM keeps its fluency and knowledge of words; the CTC keeps it on the
audio: a word the audio does not hold costs the prefix probability, and ending before the audio is covered (or
running past it) costs the end-of-turn term. Tokens outside the CTC head's vocabulary get a CTC score of -inf, so
with w > 0 the transcript is written in tokens the head knows, unless the head spells them with its pieces
(``model.ctc_vocab_size``, speechlm.model.ctc): then such a token extends the prefix by its pieces' classes, one
after the other, and the LLM keeps writing its own tokens.

Forward variables per prefix (log space): r[t, 0] = log P(frames 0..t give g, ending in a non-blank),
r[t, 1] = ... ending in a blank. A prefix's variables come from its parent's in one pass over the frames,
vectorised over all (row, candidate) pairs of a step; they are cached by (clip, prefix): beam search moves
prefixes between a clip's rows, and beams that share a prefix share its pass.
"""

from __future__ import annotations

import math

import torch

NEG_INF = float("-inf")
AUDIO_CANDIDATE_PROB = 0.05
"""A token the CTC gives at least this posterior at some frame is a candidate at every step, whatever the LLM thinks."""


class CTCPrefixScorer:
    """A ``transformers`` logits processor for joint CTC/LLM decoding. Generating from embeddings, ``input_ids``
    holds each row's generated tokens alone (the prefix).

    ctc_logp [B, A, C+1] CTC log-posteriors per clip (blank last), lengths [B] valid frames, token_class [V] the CTC
    class of each LLM token (-1: not in the head's vocabulary), active [B] clips whose answer is a transcript (the
    rows of others pass through unchanged), weight w in (0, 1], candidates K LLM tokens scored per row and step,
    beams: rows per clip (row i belongs to clip i // beams).
    """

    def __init__(self, ctc_logp: torch.Tensor, lengths: torch.Tensor, token_class: torch.Tensor, eos_id: int,
                 weight: float, candidates: int = 8, active: torch.Tensor | None = None, beams: int = 1,
                 spell=None):
        if not 0 < weight <= 1:
            raise ValueError(f"joint CTC decoding weight must lie in (0, 1], got {weight}")
        if candidates < 1:
            raise ValueError(f"joint CTC decoding needs at least 1 candidate token per step, got {candidates}")
        self.logp = ctc_logp.float()  # [B, A, C+1]
        self.lengths = lengths.to(self.logp.device)  # [B]
        self.beams = beams
        self.token_class = token_class.to(self.logp.device)  # [V]
        self.eos_id, self.weight, self.candidates = eos_id, weight, candidates
        self.spell = spell  # LLM id outside the head's vocabulary -> its pieces' CTC classes, or None (unsayable)
        r = self.logp.shape[0]
        self.active = (torch.ones(r, dtype=torch.bool) if active is None else active.bool()).cpu()  # [B]
        self.blank = self.logp.shape[2] - 1
        # what the audio may say: per clip, the LLM ids of the classes that are the argmax of some valid frame or
        # reach AUDIO_CANDIDATE_PROB there (the second choice at a blank-dominated frame is noise: not those)
        class_token = torch.full((self.logp.shape[2],), -1, dtype=torch.long)  # [C+1] LLM id of each class
        said = self.token_class >= 0
        class_token[self.token_class[said].cpu()] = torch.nonzero(said.cpu())[:, 0]
        self.audio_tokens = []
        for b in range(r):
            lp = self.logp[b, : int(self.lengths[b])]  # [A_b, C+1]
            hit = (lp >= math.log(AUDIO_CANDIDATE_PROB)).any(dim=0)  # [C+1]
            hit[lp.argmax(dim=-1).unique()] = True
            hit[self.blank] = False
            ids = class_token[torch.nonzero(hit.cpu())[:, 0]]
            self.audio_tokens.append([int(t) for t in ids if t >= 0])
        a = self.logp.shape[1]
        # the empty prefix: only blanks so far, r[t, 1] = sum of blank log-probs up to t; its psi is 1
        empty = torch.full((r, a, 2), NEG_INF, device=self.logp.device)  # [B, A, 2]
        empty[:, :, 1] = self.logp[:, :, self.blank].cumsum(dim=1)
        self._cache: dict[tuple[int, tuple[int, ...]], tuple[torch.Tensor, float]] = {
            (i, ()): (empty[i], 0.0) for i in range(r)}

    # ---- the CTC side -------------------------------------------------------------------------------
    def _classes(self, token: int) -> list[int] | None:
        """The CTC classes an LLM token stands for: its own, its pieces' when the head spells it, None if unsayable."""
        cls = int(self.token_class[token])
        if cls >= 0:
            return [cls]
        return self.spell(token) if self.spell is not None else None

    def _extend(self, rows: list[int], parents: list[tuple[int, ...]], classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward variables [M, A, 2] and log psi [M] of each (clip, parent prefix) extended by one CTC class [M]."""
        dev = self.logp.device
        parent_r = torch.stack([self._cache[(i, p)][0] for i, p in zip(rows, parents)])  # [M, A, 2]
        last = torch.tensor([self._last_class(p) for p in parents], device=dev)  # [M], -1 for the empty prefix
        return self._advance(rows, parent_r, last, classes)

    def _advance(self, rows: list[int], parent_r: torch.Tensor, last: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward variables [M, A, 2] and log psi [M] after one CTC class [M], from the parents' variables
        [M, A, 2] and their last classes [M] (-1: the empty prefix)."""
        dev = self.logp.device
        idx = torch.tensor(rows, device=dev)  # [M]
        y_c = self.logp[idx, :, classes]  # [M, A]: only the columns needed (all of them would be M x A x C floats)
        y_b = self.logp[idx, :, self.blank]  # [M, A]
        n_valid = self.lengths[idx]  # [M]
        m, a = y_c.shape
        r = torch.full((m, a, 2), NEG_INF, device=dev)  # [M, A, 2]
        # frame 0 can emit the new token only when nothing came before it
        r[:, 0, 0] = torch.where(last == -1, y_c[:, 0], torch.full_like(y_c[:, 0], NEG_INF))
        psi = r[:, 0, 0].clone()  # [M]
        same = classes == last  # [M] a repeated token needs a blank between its copies
        for t in range(1, a):
            # phi: the parent prefix completed by frame t-1, in a state the new token can follow
            phi = torch.where(same, parent_r[:, t - 1, 1], torch.logaddexp(parent_r[:, t - 1, 0], parent_r[:, t - 1, 1]))
            ok = t < n_valid  # [M] padded frames leave everything as it was
            r_n = torch.logaddexp(r[:, t - 1, 0], phi) + y_c[:, t]
            r_b = torch.logaddexp(r[:, t - 1, 0], r[:, t - 1, 1]) + y_b[:, t]
            r[:, t, 0] = torch.where(ok, r_n, r[:, t - 1, 0])
            r[:, t, 1] = torch.where(ok, r_b, r[:, t - 1, 1])
            psi = torch.where(ok, torch.logaddexp(psi, phi + y_c[:, t]), psi)
        return r, psi

    def _last_class(self, prefix: tuple[int, ...]) -> int:
        classes = self._classes(prefix[-1]) if prefix else None
        return classes[-1] if classes else -1

    def _ensure(self, row: int, prefix: tuple[int, ...]) -> None:
        """Cache the forward variables of ``prefix`` (and of its own prefixes), e.g. after a forced end of turn."""
        if (row, prefix) in self._cache:
            return
        self._ensure(row, prefix[:-1])
        classes = self._classes(prefix[-1])
        dev = self.logp.device
        if not classes:  # a token the head cannot say: the prefix has probability 0 from here on
            a = self.logp.shape[1]
            self._cache[(row, prefix)] = (torch.full((a, 2), NEG_INF, device=dev), NEG_INF)
            return
        r = self._cache[(row, prefix[:-1])][0][None]  # [1, A, 2]
        last = self._last_class(prefix[:-1])
        for cls in classes:  # a spelled token: its pieces one after the other
            r, psi = self._advance([row], r, torch.tensor([last], device=dev), torch.tensor([cls], device=dev))
            last = cls
        self._cache[(row, prefix)] = (r[0], float(psi[0]))

    def end_score(self, row: int, prefix: tuple[int, ...]) -> float:
        """log P(the CTC labelling is exactly ``prefix``) for clip ``row``."""
        self._ensure(row, prefix)
        r = self._cache[(row, prefix)][0]  # [A, 2]
        n = int(self.lengths[row])
        return float(torch.logaddexp(r[n - 1, 0], r[n - 1, 1]))

    def prefix_score(self, row: int, prefix: tuple[int, ...]) -> float:
        """log psi(``prefix``): log P(the CTC labelling starts with ``prefix``) for clip ``row``."""
        self._ensure(row, prefix)
        return self._cache[(row, prefix)][1]

    # ---- the logits processor -----------------------------------------------------------------------
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """input_ids [R, n] generated tokens, scores [R, V] the LLM's logits (or log-probs) -> joint scores [R, V]:
        -inf outside each active row's candidates."""
        return self.score([tuple(int(t) for t in input_ids[i].tolist()) if bool(self.active[i // self.beams]) else None
                           for i in range(scores.shape[0])], scores)

    def score(self, prefixes: list[tuple[int, ...] | None], scores: torch.Tensor) -> torch.Tensor:
        """Each row's generated tokens so far (None: pass the row through, e.g. a finished or non-transcript row)
        and the LLM's next-token logits [R, V] -> joint scores [R, V]. Rows scored together have prefixes of one length."""
        logp_llm = torch.log_softmax(scores.float(), dim=-1)  # [R, V]
        out = scores.clone()
        rows = [i for i, p in enumerate(prefixes) if p is not None]
        if not rows:
            return out
        clip = {i: i // self.beams for i in rows}
        prefixes = {i: prefixes[i] for i in rows}
        for i in rows:
            self._ensure(clip[i], prefixes[i])
        k = min(self.candidates, scores.shape[1])
        top = logp_llm[rows].topk(k, dim=-1).indices.tolist()  # [R', K]
        top = [list(dict.fromkeys(cands + self.audio_tokens[clip[i]])) for i, cands in zip(rows, top)]  # + the CTC's
        todo = {(clip[i], prefixes[i], c) for i, cands in zip(rows, top) for c in cands
                if c != self.eos_id and int(self.token_class[c]) >= 0 and (clip[i], prefixes[i] + (c,)) not in self._cache}
        if self.spell is not None:  # spelled candidates: their pieces one by one (few per step)
            for i, cands in zip(rows, top):
                for c in cands:
                    if c != self.eos_id and int(self.token_class[c]) < 0:
                        self._ensure(clip[i], prefixes[i] + (c,))
        if todo:
            todo = sorted(todo)
            new_r, new_psi = self._extend([b for b, _, _ in todo], [p for _, p, _ in todo],
                                          self.token_class[torch.tensor([c for _, _, c in todo])].to(self.logp.device))
            for j, (b, p, c) in enumerate(todo):
                self._cache[(b, p + (c,))] = (new_r[j], float(new_psi[j]))
        n = max(len(p) for p in prefixes.values())
        # prefixes of the next step are one longer: what is shorter than this step's prefixes is no longer needed
        self._cache = {key: v for key, v in self._cache.items() if len(key[1]) >= n or not key[1]}  # () ends _ensure
        w = self.weight
        for i, cands in zip(rows, top):
            b, prefix = clip[i], prefixes[i]
            base = self._cache[(b, prefix)][1]
            out[i] = NEG_INF
            for c in set(cands) | {self.eos_id}:
                if c == self.eos_id:
                    ctc = self.end_score(b, prefix)
                elif int(self.token_class[c]) < 0 and self.spell is None:
                    ctc = NEG_INF
                else:
                    ctc = self._cache[(b, prefix + (c,))][1]
                if ctc == NEG_INF:
                    continue  # impossible for the CTC: never chosen
                out[i, c] = (1 - w) * logp_llm[i, c] + w * (ctc - base)
            if bool(torch.isinf(out[i]).all()):  # nothing the CTC allows (the prefix already left it): plain LLM
                out[i] = logp_llm[i]
        return out


def token_classes(vocab: torch.Tensor, n_llm_tokens: int) -> torch.Tensor:
    """[V] the CTC class of each LLM token id: its position in the head's sorted ``vocab`` (-1 when absent), or
    the id itself when the head scores the whole vocabulary (empty ``vocab``)."""
    if not len(vocab):
        return torch.arange(n_llm_tokens)
    table = torch.full((n_llm_tokens,), -1, dtype=torch.long)
    table[vocab.cpu()] = torch.arange(len(vocab))
    return table
