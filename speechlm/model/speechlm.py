"""``SpeechLM(encoder, adapter, llm)``: audio frames spliced into an LLM's chat prompt, by composition.

Legend: B batch, N samples, F encoder frames, A audio tokens, P prompt tokens, Y answer tokens,
L = P + A + Y spliced sequence length, H LLM width, V vocabulary.

The prompt is the LLM's own chat template with a placeholder (``<|audio|>``) in the user message; the text
is split at the placeholder and the adapter's A frames are spliced in between, so any chat LLM works
without adding tokens to its vocabulary. The loss counts answer tokens only (prompt and audio are masked),
and the LM head runs only at the positions that predict answer tokens: with a 49k vocabulary and ~100
prompt+audio positions per clip, full logits would be most of the head's cost for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from speechlm.backbones.unwrap import causal_lm_of, decoder_of

IGNORE = -100


@dataclass
class PromptIds:
    """A tokenized prompt split at the audio placeholder."""

    before: list[int]
    """Tokens before the placeholder (system turn, start of the user turn)."""
    after: list[int]
    """Tokens after it (instruction, end of the user turn, start of the assistant turn)."""


@dataclass
class Batch:
    """What the model consumes: clips, their prompts and (for training) answer tokens."""

    ids: list[str]
    """Clip ids, for logs and error messages."""
    waves: list[torch.Tensor]
    """16-kHz mono waveforms, each [N_i]."""
    prompts: list[PromptIds]
    """Prompt per clip."""
    targets: list[list[int]] | None = None
    """Answer tokens per clip, ending with the end-of-turn token (None at inference)."""
    frames: list[torch.Tensor] | None = None
    """Cached frozen-encoder outputs, each [F_i, D], used instead of ``waves`` (speechlm prepare --features)."""
    ctc_targets: list[list[int]] | None = None
    """Transcript tokens per clip for the CTC alignment loss (no end-of-turn; empty for a clip without text)."""
    label_targets: list[list[tuple[tuple[tuple[int, ...], ...], int]]] | None = None
    """Per clip, its closed-set labels for the clip-level label loss: (candidate labels' token ids, right index)."""

    def pin_memory(self) -> Batch:
        """Page-locked audio (``DataLoader(pin_memory=True)`` calls this), so the copy to the GPU runs asynchronously."""
        self.waves = [w.pin_memory() for w in self.waves]
        if self.frames is not None:
            self.frames = [f.pin_memory() for f in self.frames]
        return self


class PromptFormatter:
    """Chat-template prompts split at the audio placeholder, and answer tokens. Small and picklable, so
    dataloader workers can tokenize without holding the model."""

    def __init__(self, tokenizer, audio_token: str = "<|audio|>", system_prompt: str = ""):
        self.tokenizer = tokenizer
        self.audio_token = audio_token
        self.system_prompt = system_prompt
        self.eos_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)

    def prompt_ids(self, user_message: str) -> PromptIds:
        """Render the chat template around ``user_message`` and split it at the audio placeholder."""
        messages = [{"role": "user", "content": user_message}]
        if self.system_prompt != "default":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if text.count(self.audio_token) != 1:
            raise ValueError(f"prompt must contain the audio placeholder {self.audio_token!r} exactly once: {user_message!r}")
        before, after = text.split(self.audio_token)
        return PromptIds(self._ids(before), self._ids(after))

    def target_ids(self, answer: str) -> list[int]:
        """Answer tokens followed by the end-of-turn token, so the model learns to stop."""
        return self._ids(answer) + [self.eos_id]

    def ctc_ids(self, transcript: str) -> list[int]:
        """The transcript's tokens as the CTC target: what is spoken, with no end-of-turn."""
        return self._ids(transcript.strip())

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids


class EndTurnAtCap:
    """A ``transformers`` logits processor: each row whose generated tokens reached its cap ([R] tensor) can only
    end the turn next. Generating from embeddings, ``input_ids`` holds the generated tokens alone."""

    def __init__(self, caps: torch.Tensor, eos_id: int):
        self.caps, self.eos_id = caps, eos_id  # [R]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        over = input_ids.shape[1] >= self.caps  # [R]
        only_eos = torch.full_like(scores, float("-inf"))  # [R, V]
        only_eos[:, self.eos_id] = 0.0
        return torch.where(over[:, None], only_eos, scores)  # no host sync: a GPU keeps generating


class SpeechLM(nn.Module):
    def __init__(self, encoder: nn.Module, adapter: nn.Module, llm: nn.Module, tokenizer, audio_token: str = "<|audio|>",
                 system_prompt: str = "", ctc: nn.Module | None = None, compress_audio: bool = False,
                 posterior_input: bool = False, ctc_length_budget: float = 0.0, label_head: nn.Module | None = None,
                 ctc_decode_weight: float = 0.0, ctc_decode_candidates: int = 8, trim_silence: bool = False):
        super().__init__()
        self.encoder = encoder
        self.adapter = adapter
        self.llm = llm  # a transformers causal LM, possibly wrapped by peft
        self.ctc = ctc  # optional CTC head over the LLM's embeddings (speechlm.model.ctc)
        self.label_head = label_head  # optional clip-level label head over the same embeddings (speechlm.model.labels)
        self.compress_audio = compress_audio
        self.posterior_input = posterior_input  # LegoSLM: the LLM reads CTC-posterior-weighted token embeddings
        if (compress_audio or posterior_input) and ctc is None:
            raise ValueError("compress_audio and posterior_input need a CTC head")
        if ctc_length_budget < 0:
            raise ValueError(f"ctc_length_budget must be >= 0 (0: no cap), got {ctc_length_budget}")
        self.ctc_length_budget = ctc_length_budget  # transcripts capped at this x the greedy CTC length (0: off)
        if not 0 <= ctc_decode_weight <= 1:
            raise ValueError(f"ctc_decode_weight must lie in [0, 1] (0: off), got {ctc_decode_weight}")
        if ctc_decode_weight > 0 and ctc is None:
            raise ValueError("ctc_decode_weight > 0 (joint CTC/LLM decoding) needs a CTC head")
        self.ctc_decode_weight = ctc_decode_weight  # joint CTC/LLM decoding of transcripts (speechlm.model.ctc_prefix)
        self.ctc_decode_candidates = ctc_decode_candidates  # LLM tokens the CTC scores per step
        self.trim_silence = trim_silence  # inference cuts leading/trailing silence off every clip (model.trim_silence)
        # the parts of the last forward's loss, for the training log: detached tensors (reading a float here would
        # wait for the GPU every step; the loop adds them up on the device and reads them at log steps)
        self.last_losses: dict[str, torch.Tensor | int] = {}
        self.tokenizer = tokenizer
        self.audio_token = audio_token
        self.formatter = PromptFormatter(tokenizer, audio_token, system_prompt)
        # What checkpoints hold: everything trainable at construction, even if a curriculum stage freezes part of it.
        self.trainable_names = {n for n, p in self.named_parameters() if p.requires_grad}

    # ---- pieces of the LLM, whether or not peft wraps it -------------------------------------------
    @property
    def causal_lm(self) -> nn.Module:
        return causal_lm_of(self.llm)

    @property
    def decoder(self) -> nn.Module:
        return decoder_of(self.llm)

    @property
    def eos_id(self) -> int:
        return self.formatter.eos_id

    def prompt_ids(self, user_message: str) -> PromptIds:
        return self.formatter.prompt_ids(user_message)

    def target_ids(self, answer: str) -> list[int]:
        return self.formatter.target_ids(answer)

    # ---- audio -------------------------------------------------------------------------------------
    def encode_audio(self, waves: list[torch.Tensor], frames: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """waves (or cached encoder frames) -> what the LLM sees [B, A, H] and its lengths [B]: the adapter's
        frames, shrunk by their CTC argmax when ``compress_audio`` is on."""
        audio, lengths = self.adapt(waves, frames)  # [B, A, H], [B]
        return self.llm_audio(audio, lengths)

    def encode_for_answers(self, waves: list[torch.Tensor], transcript: list[bool]) -> tuple[torch.Tensor, torch.Tensor, list[int | None]]:
        """What the LLM sees [B, A, H], its lengths [B], and each row's cap on answer tokens before the end of turn:
        ``ctc_length_budget`` x its greedy CTC token count + 1 for rows whose answer is the transcript (``transcript``)
        when the model has a CTC head and a budget, else None (no cap)."""
        audio, lengths, caps, _ = self.encode_for_decoding(waves, transcript)
        return audio, lengths, caps

    def encode_for_decoding(self, waves: list[torch.Tensor], transcript: list[bool], num_beams: int = 1):
        """:meth:`encode_for_answers` plus, when ``ctc_decode_weight`` > 0 and a row's answer is the transcript, the
        joint CTC/LLM scorer of the search (speechlm.model.ctc_prefix; rows = clips x ``num_beams``, beams of a clip
        adjacent), else None."""
        audio, lengths = self.adapt(waves)  # [B, A, H], [B]
        caps: list[int | None] = [None] * len(waves)
        scorer = None
        budget = self.ctc_length_budget > 0
        joint = self.ctc_decode_weight > 0
        if self.ctc is not None and (budget or joint) and any(transcript):
            import math

            from speechlm.model.ctc import greedy_decode

            logits = self.ctc(audio)  # [B, A, C+1]: llm_audio reuses them (the head is not cheap: C ~ 12k tokens)
            if budget:
                n_ctc = [len(t) for t in greedy_decode(logits, lengths, self.ctc.blank_id)]
                # at least 2 tokens: a clip the CTC hears nothing in may still hold a word (the LLM may stop earlier)
                caps = [max(2, math.ceil(self.ctc_length_budget * n) + 1) if t else None for n, t in zip(n_ctc, transcript)]
            if joint:
                from speechlm.model.ctc_prefix import CTCPrefixScorer, token_classes

                n_llm = self.causal_lm.get_output_embeddings().weight.shape[0]
                scorer = CTCPrefixScorer(torch.log_softmax(logits.float(), dim=-1), lengths,  # [B, A, C+1], [B]
                                         token_classes(self.ctc.vocab, n_llm), self.eos_id, self.ctc_decode_weight,
                                         self.ctc_decode_candidates, active=torch.tensor(transcript), beams=num_beams,
                                         spell=self.ctc.spell_classes if self.ctc.spells else None)
            audio, lengths = self.llm_audio(audio, lengths, logits)
        else:
            audio, lengths = self.llm_audio(audio, lengths)
        return audio, lengths, caps, scorer

    def llm_audio(self, audio: torch.Tensor, lengths: torch.Tensor,
                  logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapter output [B, A, H] -> what the LLM reads: as is; with ``posterior_input`` each frame replaced by
        its CTC posterior over the head's tokens times their embeddings (LegoSLM, arXiv 2505.11352: the LLM then
        reads mixtures of its own input embeddings); with ``compress_audio`` blank frames dropped and runs merged."""
        if not (self.compress_audio or self.posterior_input):
            return audio, lengths
        from speechlm.model.ctc import compress

        if logits is None:  # the CTC head's logits of ``audio``, unless the caller has them already
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.posterior_input):
                logits = self.ctc(audio)  # [B, A, C+1]
        if self.posterior_input:
            probs = torch.softmax(logits[..., :-1].float(), dim=-1)  # [B, A, C], blank left out
            audio = (probs @ self.ctc.token_table().float()).to(audio.dtype)  # [B, A, H]
        if self.compress_audio:
            audio, lengths = compress(audio, logits.detach(), lengths, self.ctc.blank_id)  # [B, A', H], [B]
        return audio, lengths

    def adapt(self, waves: list[torch.Tensor], frames: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """waves (or cached encoder frames) -> adapter output [B, A, H] and its lengths [B]."""
        frozen = not any(p.requires_grad for p in self.encoder.parameters())
        if frames is not None and getattr(self.encoder, "keep_window", False):
            raise ValueError("cached encoder features hold each clip's real-length frames, but this model's adapter "
                             "(whisper-decoder) reads Whisper's whole 30-s window: train it from audio, not --features")
        if frames is not None:  # cached: the encoder's output, or the hidden states below its top_layers
            lengths = torch.tensor([f.shape[0] for f in frames])  # [B]
            p = next(self.adapter.parameters())
            padded = p.new_zeros(len(frames), int(lengths.max()), frames[0].shape[-1])  # [B, F, D], zero padding
            for i, f in enumerate(frames):
                padded[i, : f.shape[0]] = f.to(p.device, p.dtype)
            frames = padded
            if self.encoder.top_layers:
                with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
                    frames = self.encoder.forward_top(frames, lengths)  # [B, F, D]
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
                frames, lengths = self.encoder(waves)  # [B, F, D], [B]
        audio = self.adapter(frames, lengths)  # [B, A, H]
        if isinstance(audio, tuple):  # an adapter whose length depends on the content (whisper-decoder) says it
            return audio
        return audio, self.adapter.out_lengths(lengths)

    # ---- splicing ----------------------------------------------------------------------------------
    def splice(self, batch: Batch, audio: torch.Tensor, audio_lengths: torch.Tensor, left_pad: bool = False):
        """Build inputs_embeds [B, L, H], attention_mask [B, L] and labels [B, L] (IGNORE outside answers)."""
        embed = self.causal_lm.get_input_embeddings()
        dev = audio.device
        seqs, labels = [], []
        for i, prompt in enumerate(batch.prompts):
            target = batch.targets[i] if batch.targets is not None else []
            text_ids = torch.tensor(prompt.before + prompt.after + target, device=dev)
            text_emb = embed(text_ids)  # [P+Y, H]
            nb = len(prompt.before)
            a = int(audio_lengths[i])
            seqs.append(torch.cat([text_emb[:nb], audio[i, :a].to(text_emb.dtype), text_emb[nb:]]))  # [L_i, H]
            lab = torch.full((seqs[-1].shape[0],), IGNORE, dtype=torch.long, device=dev)
            if target:
                lab[-len(target):] = torch.tensor(target, device=dev)
            labels.append(lab)
        lengths = [s.shape[0] for s in seqs]
        l_max, h = max(lengths), seqs[0].shape[1]
        emb = seqs[0].new_zeros(len(seqs), l_max, h)  # [B, L, H]
        mask = torch.zeros(len(seqs), l_max, dtype=torch.long, device=dev)  # [B, L]
        lab = torch.full((len(seqs), l_max), IGNORE, dtype=torch.long, device=dev)  # [B, L]
        for i, (s, n) in enumerate(zip(seqs, lengths)):
            sl = slice(l_max - n, l_max) if left_pad else slice(0, n)
            emb[i, sl], mask[i, sl], lab[i, sl] = s, 1, labels[i]
        return emb, mask, lab

    # ---- training ----------------------------------------------------------------------------------
    def forward(self, batch: Batch, per_example: bool = False, lm_weight: float = 1.0,
                ctc_weight: float = 0.0, label_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy over answer tokens and their count (the caller normalizes globally).

        ``ctc_weight`` > 0 adds the CTC alignment loss of the adapter frames (summed over clips) times that weight;
        ``label_weight`` > 0 adds the clip-level label loss (summed over (clip, label) pairs) times that weight;
        ``lm_weight`` = 0 skips the LLM and returns the weighted alignment sums and the CTC target-token count (the
        label-pair count when there is no CTC loss).

        ``per_example``: sum each example's *mean* token loss instead, and count examples. A 2-token label
        then weighs as much as a 100-token timestamped transcript, where token averaging would give the
        label tasks of a multi-task batch a few percent of the gradient (train.loss_norm = example).
        """
        audio, audio_lengths = self.adapt(batch.waves, batch.frames)  # [B, A, H], [B]
        ctc_sum, n_ctc = None, 0
        if ctc_weight > 0:
            from speechlm.model.ctc import ctc_loss

            if self.ctc is None or batch.ctc_targets is None:
                raise ValueError("a CTC weight above 0 needs model.ctc_head=true and transcripts in the batch")
            targets = [self.ctc.to_classes(t) for t in batch.ctc_targets]
            ctc_sum, n_ctc = ctc_loss(self.ctc(audio), audio_lengths, targets, self.ctc.blank_id)
            self.last_losses = {"ctc": ctc_sum.detach(), "ctc_tokens": n_ctc}
        align = ctc_sum * ctc_weight if ctc_sum is not None else None  # the alignment losses, weighted
        if label_weight > 0:
            if self.label_head is None or batch.label_targets is None:
                raise ValueError("a label weight above 0 needs model.label_head=true and label targets in the batch")
            label_sum, n_label, right = self.label_head(audio, audio_lengths, batch.label_targets)
            self.last_losses.update(label=label_sum.detach(), label_pairs=n_label, label_right=right)
            align = label_weight * label_sum if align is None else align + label_weight * label_sum
            if ctc_sum is None:
                n_ctc = n_label
        if lm_weight == 0:  # an alignment-only stage: no LLM forward at all
            if align is None:
                raise ValueError("lm_weight=0 needs ctc_weight > 0 or label_weight > 0")
            return align, torch.tensor(n_ctc, device=audio.device)
        audio, audio_lengths = self.llm_audio(audio, audio_lengths)  # [B, A', H], [B]
        lm_sum, n_tok = self._lm_loss(batch, audio, audio_lengths, per_example)
        if align is None:
            return lm_sum, n_tok
        self.last_losses["lm"] = lm_sum.detach()
        # all are sums over the batch; the caller divides by the (global) answer-token count
        return lm_weight * lm_sum + align, n_tok

    def _lm_loss(self, batch: Batch, audio: torch.Tensor, audio_lengths: torch.Tensor, per_example: bool) -> tuple[torch.Tensor, torch.Tensor]:
        emb, mask, labels = self.splice(batch, audio, audio_lengths)  # [B, L, H], [B, L], [B, L]
        hidden = self.decoder(inputs_embeds=emb, attention_mask=mask).last_hidden_state  # [B, L, H]
        nxt = labels[:, 1:]  # [B, L-1] token each position predicts
        pick = nxt != IGNORE  # [B, L-1]
        logits = self.causal_lm.get_output_embeddings()(hidden[:, :-1][pick])  # [Y_total, V]
        if not per_example:
            loss = nn.functional.cross_entropy(logits.float(), nxt[pick], reduction="sum")
            return loss, pick.sum()
        token_loss = nn.functional.cross_entropy(logits.float(), nxt[pick], reduction="none")  # [Y_total]
        row = torch.arange(nxt.shape[0], device=nxt.device)[:, None].expand_as(nxt)[pick]  # [Y_total] example of each token
        per_row = token_loss.new_zeros(nxt.shape[0]).index_add(0, row, token_loss)  # [B] summed loss per example
        count = pick.sum(dim=1)  # [B] answer tokens per example
        has = count > 0
        return (per_row[has] / count[has]).sum(), has.sum()

    # ---- inference ---------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, waves: list[torch.Tensor], prompts: list[PromptIds], max_new_tokens: int = 64, num_beams: int = 1,
                 transcript: bool = False) -> list[str]:
        """Greedy (num_beams=1) or beam search with the LLM's KV cache; returns decoded answers. ``transcript``: the
        answers are transcripts, so ``ctc_length_budget`` caps each one by its clip's greedy CTC length."""
        from transformers import LogitsProcessorList

        batch = Batch(ids=[str(i) for i in range(len(waves))], waves=waves, prompts=prompts)
        audio, audio_lengths, caps, scorer = self.encode_for_decoding(waves, [transcript] * len(waves), num_beams)
        emb, mask, _ = self.splice(batch, audio, audio_lengths, left_pad=True)  # left padding for generation
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        processors = LogitsProcessorList([scorer] if scorer is not None else [])
        if any(c is not None for c in caps):
            cap = torch.tensor([c if c is not None else max_new_tokens for c in caps], device=emb.device)  # [B]
            processors.append(EndTurnAtCap(cap.repeat_interleave(num_beams), self.eos_id))  # beams of a clip are adjacent rows
            max_new_tokens = min(max_new_tokens, int(cap.max()) + 1)  # + the end of turn
        out = self.causal_lm.generate(
            inputs_embeds=emb, attention_mask=mask, max_new_tokens=max_new_tokens, num_beams=num_beams,
            do_sample=False, eos_token_id=self.eos_id, pad_token_id=pad_id, logits_processor=processors,
        )  # [B, <=max_new_tokens]: only new tokens when generating from embeddings
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    @torch.no_grad()
    def classify(self, waves: list[torch.Tensor], prompts: list[PromptIds], labels: list[str]) -> list[str]:
        """Constrained decoding for closed-set tasks (SpeechVerse): score log p(label + end-of-turn | prompt,
        audio) for every allowed label and return the best one per clip. The audio is encoded once."""
        audio, audio_lengths = self.encode_audio(waves)  # [B, A, H], [B]
        label_ids = [self.target_ids(lab) for lab in labels]
        n = len(labels)
        rep = torch.arange(len(waves), device=audio.device).repeat_interleave(n)  # [B*n] clip of each row
        batch = Batch(ids=[str(int(i)) for i in rep], waves=[], prompts=[prompts[int(i)] for i in rep],
                      targets=[label_ids[j % n] for j in range(len(rep))])
        emb, mask, tgt = self.splice(batch, audio[rep], audio_lengths[rep])  # [B*n, L, H], [B*n, L], [B*n, L]
        hidden = self.decoder(inputs_embeds=emb, attention_mask=mask).last_hidden_state  # [B*n, L, H]
        nxt = tgt[:, 1:]  # [B*n, L-1]
        pick = nxt != IGNORE
        logp = torch.log_softmax(self.causal_lm.get_output_embeddings()(hidden[:, :-1][pick]).float(), dim=-1)  # [Y, V]
        token_lp = logp.gather(1, nxt[pick][:, None])[:, 0]  # [Y]
        row = torch.arange(len(rep), device=audio.device)[:, None].expand_as(nxt)[pick]  # [Y] row of each token
        scores = torch.zeros(len(rep), device=audio.device).index_add_(0, row, token_lp).view(len(waves), n)  # [B, n]
        return [labels[int(j)] for j in scores.argmax(dim=1)]

    @torch.no_grad()
    def ctc_transcribe(self, waves: list[torch.Tensor], frames: list[torch.Tensor] | None = None) -> list[str]:
        """The greedy CTC transcript of each clip: what the adapter alone hears, with no LLM forward."""
        from speechlm.model.ctc import greedy_decode

        if self.ctc is None:
            raise ValueError("a greedy CTC transcript needs a model with a CTC head (model.ctc_head=true)")
        audio, lengths = self.adapt(waves, frames)  # [B, A, H], [B]
        return [self.tokenizer.decode(self.ctc.to_tokens(toks)).strip()
                for toks in greedy_decode(self.ctc(audio), lengths, self.ctc.blank_id)]

    # ---- trainable state ---------------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trained weights (adapter, LoRA, unfrozen encoder layers) and the CTC head's vocabulary:
        what a checkpoint stores."""
        keep = self.trainable_names | ({"ctc.vocab"} if self.ctc is not None and len(self.ctc.vocab) else set())
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k in keep}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        if "ctc.vocab" in state:
            if self.ctc is None:
                raise KeyError("checkpoint has a CTC vocabulary but the model has no CTC head")
            self.ctc.set_vocab(state.pop("ctc.vocab").tolist())
        own = dict(self.named_parameters())
        missing = self.trainable_names - set(state)
        unknown = set(state) - set(own)
        if missing or unknown:
            raise KeyError(f"checkpoint does not fit the model: missing {sorted(missing)[:5]}, unexpected {sorted(unknown)[:5]}")
        with torch.no_grad():
            for k, v in state.items():
                own[k].copy_(v)

    def num_params(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable}
