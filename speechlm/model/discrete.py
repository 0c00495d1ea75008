"""``DiscreteSpeechLM(llm, layout, pattern)``: a decoder-only LM over text, speech units and codec streams.

Owns the multi-stream LM of ESPnet-SpeechLM (arXiv 2502.15218; ARParallelLM / ARDelayLM in
espnet2/speechlm/core_lm/), which with one stream is SpeechGPT's units-in-vocabulary LM (arXiv 2305.11000):
* input: the LLM's embedding of stream 0 (text, units, markers) + the sum of small codec embeddings of streams
  1..nq-1 (their pad row is zero, so a text-only row reads exactly as the LLM would);
* output: the LLM's head for stream 0, a small head over the codec slice for streams >= 1, with ``head_emb[k]``
  added to the hidden state first (ESPnet ARParallel/ARDelay);
* loss: per-token weights by the target's modality, summed over streams, normalised by target frames
  (ESPnet ``SpeechLMCrossEntropyLoss``, espnet2/speechlm/loss.py);
* decoding: greedy / top-k / top-p / temperature with the KV cache (HF ``past_key_values``), constrained per
  stream (units only between ``<|sosp|>`` and ``<|eosp|>``, none elsewhere; codec codes only in speech frames),
  and nq-1 tail steps for the ``delay`` pattern.
May import: utils, config, data, tasks, backbones and its siblings in model (vocab, streams).

Legend: B batch, T frames, L pattern rows (T, or T+nq-1 for delay), nq streams, H LLM width, V' LLM vocabulary
rows (>= layout.lm_vocab), Q codec levels (nq-1), C codebook size.
"""

from __future__ import annotations

from dataclasses import dataclass

import inspect

import torch
from torch import nn

from speechlm.backbones.unwrap import causal_lm_of, decoder_of
from speechlm.model.streams import PATTERNS, from_pattern, tail_steps, to_pattern
from speechlm.model.vocab import MODALITIES, VocabLayout
from speechlm.tasks.render import EOSP, SOSP

IGNORE = -100

SPEECHGPT_WEIGHTS = {"text": 1.0, "unit": 1.0, "special": 1.0, "codec": 1.0}
"""Plain cross-entropy over every token: SpeechGPT trains with HF's unweighted loss (src/train/*.py)."""
ESPNET_SMOLLM2_WEIGHTS = {"text": 1.0, "unit": 0.5, "special": 10.0, "codec": 0.0625}
"""ESPnet's shipped SmolLM2-360M delay config: text_bpe 1.0, ssl 0.5, special_token 10.0, codec 0.0625 (g2p 1.0
too) (espnet egs2/librispeech/speechlm1/conf/train_delay_smollm_360m.yaml)."""


def default_weights(nq: int) -> dict[str, float]:
    """Text, units and markers 1; each codec stream 1/nq, so a frame's codec codes together weigh about one token."""
    return {"text": 1.0, "unit": 1.0, "special": 1.0, "codec": 1.0 / nq}


@dataclass
class StreamBatch:
    """Frames of layout ids, right-padded: what :meth:`DiscreteSpeechLM.forward` trains on."""

    frames: torch.Tensor
    """[B, T, nq] ids: stream 0 in [0, lm_vocab), streams >= 1 codec ids or ``layout.pad_id``."""
    loss_mask: torch.Tensor
    """[B, T] bool: frames that are targets (predicted from the frames before them)."""
    lengths: torch.Tensor
    """[B] frames per example."""

    @classmethod
    def collate(cls, frames: list[torch.Tensor], masks: list[torch.Tensor], pad_id: int) -> StreamBatch:
        """Each frames[i] [T_i, nq] (or [T_i] for one stream) with masks[i] [T_i] -> a right-padded batch."""
        frames = [f[:, None] if f.dim() == 1 else f for f in frames]
        lengths = torch.tensor([f.shape[0] for f in frames])  # [B]
        t, nq = int(lengths.max()), frames[0].shape[1]
        out = torch.full((len(frames), t, nq), pad_id, dtype=torch.long)  # [B, T, nq]
        mask = torch.zeros(len(frames), t, dtype=torch.bool)  # [B, T]
        for i, (f, m) in enumerate(zip(frames, masks)):
            out[i, : f.shape[0]] = f
            mask[i, : f.shape[0]] = torch.as_tensor(m, dtype=torch.bool)
        mask[:, 0] = False  # nothing predicts the first frame, so it never counts as a target
        return cls(out, mask, lengths)

    @classmethod
    def from_labels(cls, input_ids: list[list[int]], labels: list[list[int]], pad_id: int) -> StreamBatch:
        """One-stream batch from rendered chat sequences (``render_units``): frame t is a target where labels[t] != IGNORE."""
        return cls.collate([torch.tensor(x) for x in input_ids], [torch.tensor(y) != IGNORE for y in labels], pad_id)


@dataclass
class Sampling:
    """How a token is drawn from a stream's masked logits (ESPnet: greedy_search, topk_sampling, topp_sampling)."""

    strategy: str = "greedy"
    """``greedy``, ``topk``, ``topp`` or ``sample`` (the full distribution)."""
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.8
    """SpeechGPT's inference: temperature 0.7, top_p 0.8, top_k 50 (src/infer/cli_infer.py)."""


def sample_token(logits: torch.Tensor, allowed: torch.Tensor, opts: Sampling, gen: torch.Generator | None) -> int:
    """logits [V], allowed [V] bool -> one id. Disallowed ids can never be drawn, whatever the strategy."""
    logits = logits.float().masked_fill(~allowed, float("-inf"))  # [V]
    if opts.strategy == "greedy":
        return int(logits.argmax())
    logits = logits / max(opts.temperature, 1e-5)
    if opts.strategy == "topk":
        kth = torch.topk(logits, min(opts.top_k, int(allowed.sum()))).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    elif opts.strategy == "topp":
        sorted_logits, order = torch.sort(logits, descending=True)  # [V]
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs > opts.top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    elif opts.strategy != "sample":
        raise ValueError(f"unknown sampling strategy {opts.strategy!r}: greedy, topk, topp or sample")
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen))


class DiscreteSpeechLM(nn.Module):
    def __init__(self, llm: nn.Module, layout: VocabLayout, pattern: str | None = None,
                 weights: dict[str, float] | None = None, seed: int = 0):
        super().__init__()
        self.llm = llm  # a transformers causal LM extended by vocab.extend_llm, possibly wrapped by peft
        self.layout = layout
        self.nq = layout.nq
        self.pattern = pattern or ("flat" if self.nq == 1 else "delay")
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; known: {', '.join(PATTERNS)}")
        if (self.pattern == "flat") != (self.nq == 1):
            raise ValueError(f"pattern {self.pattern!r} does not fit nq={self.nq} (flat is the one-stream pattern)")
        rows = self.causal_lm.get_input_embeddings().weight.shape[0]
        if rows < layout.lm_vocab:
            raise ValueError(f"LLM has {rows} embedding rows < layout.lm_vocab {layout.lm_vocab}: run vocab.extend_llm first")
        self.weights = {**default_weights(self.nq), **(weights or {})}
        unknown = set(self.weights) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modality weights {sorted(unknown)}; modalities: {', '.join(MODALITIES)}")
        self.register_buffer("modality_weight", torch.tensor([self.weights[m] for m in MODALITIES]), persistent=False)
        h = self.causal_lm.config.hidden_size
        q, c = layout.codec_levels, layout.codebook_size
        if q:
            gen = torch.Generator().manual_seed(seed)
            std = float(self.causal_lm.get_input_embeddings().weight.detach().float().std())
            self.codec_emb = nn.Embedding(q * c + 1, h, padding_idx=q * c)  # [Q*C+1, H], last row: pad (zero)
            self.aux_head = nn.Linear(h, q * c + 1, bias=False)  # [Q*C+1, H]: the codec slice, then pad
            self.head_emb = nn.Parameter(torch.zeros(self.nq, h))  # [nq, H]; row 0 unused: stream 0 is the LLM's own
            with torch.no_grad():
                self.codec_emb.weight.normal_(0, std, generator=gen)
                self.codec_emb.weight[q * c].zero_()
                self.aux_head.weight.normal_(0, std, generator=gen)
                self.head_emb.normal_(0, std, generator=gen)
        # stream 0 may emit only what the layout names (an LLM may have spare rows past its tokenizer)
        self.register_buffer("_real", torch.arange(rows) < layout.lm_vocab, persistent=False)  # [V']
        units = torch.zeros(rows, dtype=torch.bool)  # [V']
        units[layout.unit_start:layout.marker_start] = True
        self.register_buffer("_units", units, persistent=False)
        self.sosp_id, self.eosp_id = layout.marker_id(SOSP), layout.marker_id(EOSP)
        # transformers 5.x renamed the decoder's `past_key_values` argument (and output) to `cache`
        self._cache_kw = "cache" if "cache" in inspect.signature(self.decoder.forward).parameters else "past_key_values"

    # ---- pieces of the LLM, whether or not peft wraps it -------------------------------------------
    @property
    def causal_lm(self) -> nn.Module:
        return causal_lm_of(self.llm)

    @property
    def decoder(self) -> nn.Module:
        return decoder_of(self.llm)

    # ---- ids <-> codec classes -------------------------------------------------------------------
    def _codec_index(self, ids: torch.Tensor) -> torch.Tensor:
        """Layout ids of streams >= 1 -> rows of codec_emb (pad and anything not codec -> the pad row)."""
        lay = self.layout
        local = ids - lay.codec_start
        return torch.where((local >= 0) & (local < lay.codec_levels * lay.codebook_size), local,
                           torch.full_like(ids, lay.codec_levels * lay.codebook_size))

    def embed(self, rows: torch.Tensor) -> torch.Tensor:
        """rows [B, L, nq] of layout ids -> inputs_embeds [B, L, H]: stream 0 through the LLM, plus codec streams."""
        x = self.causal_lm.get_input_embeddings()(rows[..., 0])  # [B, L, H]
        if self.nq > 1:
            x = x + self.codec_emb(self._codec_index(rows[..., 1:])).sum(dim=2).to(x.dtype)  # [B, L, H]
        return x

    def heads(self, hidden: torch.Tensor) -> list[torch.Tensor]:
        """hidden [..., H] -> logits per stream: [..., V'] for stream 0, [..., C+1] (level k-1's codes, pad last) for k >= 1."""
        out = [self.causal_lm.get_output_embeddings()(hidden)]  # [..., V']
        c = self.layout.codebook_size
        for k in range(1, self.nq):
            full = self.aux_head(hidden + self.head_emb[k].to(hidden.dtype))  # [..., Q*C+1]
            out.append(torch.cat([full[..., (k - 1) * c:k * c], full[..., -1:]], dim=-1))  # [..., C+1]
        return out

    def _classes(self, ids: torch.Tensor, k: int) -> torch.Tensor:
        """Target ids of stream k -> class indices of that stream's head (stream 0: the id itself)."""
        if k == 0:
            return ids
        c = self.layout.codebook_size
        local = ids - self.layout.codec_id(k - 1, 0)
        return torch.where((local >= 0) & (local < c), local, torch.full_like(ids, c))

    def _token_weights(self, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """targets [..., nq], mask [..., nq] -> weight of each target token: its modality's weight, 0 outside the mask
        and for pad in streams >= 1 (outside speech they are forced to pad when decoding, nothing to learn)."""
        w = self.modality_weight[self.layout.modality_of(targets)]  # [..., nq]
        if self.nq > 1:
            w[..., 1:] = torch.where(targets[..., 1:] == self.layout.pad_id, 0.0, w[..., 1:])
        return w * mask

    # ---- training ----------------------------------------------------------------------------------
    def pattern_rows(self, batch: StreamBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """frames -> pattern rows [B, L, nq], per-stream target mask [B, L, nq] and attention mask [B, L]."""
        pad = self.layout.pad_id
        rows = to_pattern(batch.frames, self.pattern, pad)  # [B, L, nq]
        nq = self.nq
        mask = batch.loss_mask[..., None].expand(-1, -1, nq).long()  # [B, T, nq]
        mask = to_pattern(mask, self.pattern, 0).bool()  # [B, L, nq]: delayed with the tokens
        extra = rows.shape[1] - batch.frames.shape[1]
        attn = (torch.arange(rows.shape[1])[None] < (batch.lengths[:, None] + extra)).long()  # [B, L]
        return rows, mask, attn.to(rows.device)

    def forward(self, batch: StreamBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted cross-entropy summed over streams and target tokens, and the number of target frames (the
        caller divides; ESPnet normalises by frames, loss.py)."""
        rows, mask, attn = self.pattern_rows(batch)  # [B, L, nq], [B, L, nq], [B, L]
        hidden = self.decoder(inputs_embeds=self.embed(rows[:, :-1]), attention_mask=attn[:, :-1]).last_hidden_state  # [B, L-1, H]
        return self._loss(hidden, rows[:, 1:], mask[:, 1:]), batch.loss_mask.sum()

    def _loss(self, hidden: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden [B, N, H] predicting targets [B, N, nq] with mask [B, N, nq] -> the weighted sum."""
        w = self._token_weights(targets, mask)  # [B, N, nq]
        pick = w.sum(-1) > 0  # [B, N]: run the heads only where something is scored
        h, tgt, w = hidden[pick], targets[pick], w[pick]  # [P, H], [P, nq], [P, nq]
        total = hidden.new_zeros((), dtype=torch.float32)
        for k, logits in enumerate(self.heads(h)):  # [P, V'] or [P, C+1]
            ce = nn.functional.cross_entropy(logits.float(), self._classes(tgt[:, k], k), reduction="none")  # [P]
            total = total + (ce * w[:, k]).sum()
        return total

    def loss(self, batch: StreamBatch) -> torch.Tensor:
        """Mean loss per target frame."""
        total, frames = self.forward(batch)
        return total / frames.clamp(min=1)

    # ---- inference ---------------------------------------------------------------------------------
    def _step(self, rows: torch.Tensor, past=None):
        """rows [1, n, nq] -> last hidden states [1, n, H] and the updated KV cache."""
        key = self._cache_kw
        out = self.decoder(inputs_embeds=self.embed(rows), use_cache=True, **{key: past})
        return out.last_hidden_state, getattr(out, key)

    @torch.no_grad()
    def teacher_force(self, batch: StreamBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loss recomputed row by row through the KV cache, as decoding runs the model (ESPnet's
        README asks for this check: teacher-forced inference must match training). Returns (sum, frames)."""
        rows, mask, _ = self.pattern_rows(batch)  # [B, L, nq]
        total = torch.zeros(())
        for b in range(rows.shape[0]):
            n = int(batch.lengths[b]) + rows.shape[1] - batch.frames.shape[1]  # this example's rows
            past, hs = None, []
            for r in range(n - 1):
                h, past = self._step(rows[b:b + 1, r:r + 1], past)  # [1, 1, H]
                hs.append(h)
            total = total + self._loss(torch.cat(hs, dim=1), rows[b:b + 1, 1:n], mask[b:b + 1, 1:n])
        return total, batch.loss_mask.sum()

    def _allowed0(self, in_speech: bool) -> torch.Tensor:
        """Stream 0's mask [V']: inside a speech span units and <|eosp|> only; outside, anything but units and pad."""
        if in_speech:
            allowed = self._units.clone()
            allowed[self.eosp_id] = True
            return allowed
        allowed = self._real & ~self._units
        allowed[self.layout.pad_id] = False
        return allowed

    def _allowed_codec(self, speech_frame: bool) -> torch.Tensor:
        """Stream k >= 1's mask [C+1]: a speech frame takes a code, any other frame the pad."""
        allowed = torch.zeros(self.layout.codebook_size + 1, dtype=torch.bool, device=self._units.device)
        if speech_frame:
            allowed[:-1] = True
        else:
            allowed[-1] = True
        return allowed

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_frames: int = 256, sampling: Sampling | None = None,
                 stop_ids: tuple[int, ...] = (), generator: torch.Generator | None = None,
                 constrained: bool = True, no_repeat_units: bool = False) -> torch.Tensor:
        """Continue ``prompt`` [T0, nq] (or [T0] for one stream) frame by frame with the KV cache.

        Stops after a stream-0 token in ``stop_ids`` (kept as the last frame) or ``max_frames`` new frames; with
        ``delay`` it then runs nq-1 tail steps so every stream emits its last frame. Codes of streams >= 1 that fall
        in prompt frames are teacher-forced. Returns the new frames [T_new, nq] (or [T_new] for a 1-D prompt).
        ``no_repeat_units``: a unit never follows itself, as in deduplicated units (SpeechGPT's reduced units), where
        no training sequence has it; an undertrained model otherwise repeats its most likely unit to the cap.
        """
        opts = sampling or Sampling()
        flat_in = prompt.dim() == 1
        frames = (prompt[:, None] if flat_in else prompt).to(self._units.device)  # [T0, nq]
        t0, nq, pad = frames.shape[0], self.nq, self.layout.pad_id
        shift = [k if self.pattern == "delay" else 0 for k in range(nq)]
        rows = to_pattern(frames, self.pattern, pad)[:t0]  # [T0, nq]: the rows the prompt fills completely
        s0 = [int(x) for x in frames[:, 0]]  # stream-0 token of every frame so far
        in_speech = False
        for tok in s0:
            in_speech = (tok == self.sosp_id) or (in_speech and tok != self.eosp_id)
        hidden, past = self._step(rows[None])  # [1, T0, H]
        new_rows, end, r = [], None, t0
        while True:
            logits = self.heads(hidden[0, -1])  # per stream: [V'] or [C+1]
            row = torch.full((nq,), pad, dtype=torch.long, device=frames.device)  # [nq]
            if end is None:
                allowed = self._allowed0(in_speech) if constrained else self._real
                if no_repeat_units and in_speech and self.layout.unit_of(s0[-1]) is not None:
                    allowed = allowed.clone()
                    allowed[s0[-1]] = False
                tok = sample_token(logits[0], allowed, opts, generator)
                row[0] = tok
                s0.append(tok)
                in_speech = (tok == self.sosp_id) or (in_speech and tok != self.eosp_id)
                if tok in stop_ids or r - t0 + 1 >= max_frames:
                    end = r
            for k in range(1, nq):
                f = r - shift[k]  # the frame whose stream-k code this row holds
                if f < 0 or (end is not None and f > end):
                    continue
                if f < t0:
                    row[k] = frames[f, k]
                    continue
                speech = self.layout.unit_of(s0[f]) is not None
                allowed = self._allowed_codec(speech) if constrained else torch.ones(logits[k].shape[0], dtype=torch.bool)
                cls = sample_token(logits[k], allowed, opts, generator)
                row[k] = pad if cls == self.layout.codebook_size else self.layout.codec_id(k - 1, cls)
            new_rows.append(row)
            if end is not None and r >= end + tail_steps(self.pattern, nq):
                break
            hidden, past = self._step(row[None, None], past)  # [1, 1, H]
            r += 1
        out = from_pattern(torch.cat([rows, torch.stack(new_rows)]), self.pattern)[t0:]  # [T_new, nq]
        return out[:, 0] if flat_in else out

    @torch.no_grad()
    def set_unit_rows(self, rows: torch.Tensor) -> None:
        """Write the unit rows [K, H] where they train: peft's trainable-token values (which replace the base rows,
        input and tied head alike), else the embedding itself."""
        lay = self.layout
        done = False
        for m in self.llm.modules():
            deltas, indices = getattr(m, "trainable_tokens_delta", None), getattr(m, "token_indices", None)
            if deltas is None or indices is None:
                continue
            for name, delta in deltas.items():
                for j, tok in enumerate(indices[name]):
                    if lay.unit_start <= tok < lay.marker_start:
                        delta[j] = rows[tok - lay.unit_start].to(delta.dtype)
                done = True
        if not done:
            w = self.causal_lm.get_input_embeddings().weight  # [V', H]
            w[lay.unit_start:lay.marker_start] = rows.to(w.dtype)

    # ---- trainable state ---------------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: every parameter that trains (LoRA, trainable rows, codec tables)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k in names}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], layout: VocabLayout | None = None,
                                  where: str = "") -> None:
        """Copy a :meth:`trainable_state_dict` back; with the checkpoint's saved ``layout``, check it against
        this model's first (:func:`speechlm.model.vocab.check_layout`), so a reordered vocabulary fails loudly."""
        from speechlm.model.vocab import check_layout

        if layout is not None:
            check_layout(layout, self.layout, where)
        own = dict(self.named_parameters())
        trainable = {n for n, p in own.items() if p.requires_grad}
        missing, unknown = trainable - set(state), set(state) - set(own)
        if missing or unknown:
            raise KeyError(f"checkpoint does not fit the model: missing {sorted(missing)[:5]}, unexpected {sorted(unknown)[:5]}")
        with torch.no_grad():
            for k, v in state.items():
                if own[k].shape != v.shape:
                    raise KeyError(f"checkpoint tensor {k} has shape {tuple(v.shape)}, the model {tuple(own[k].shape)}")
                own[k].copy_(v)
