"""The ``whisper-decoder`` anchor adapter: Whisper's own decoder states, projected into the LLM.

Legend: B batch, F encoder frames (1500: Whisper's whole 30-s window), D Whisper width, P Whisper prompt tokens
(start of transcript, no timestamps), Y generated Whisper tokens (+1: the state that predicts the end), V Whisper
vocabulary, H LLM width.

SALSA (Mittal et al. 2024, arXiv 2408.16542) couples an LLM to Whisper's decoder rather than to its encoder: the
decoder already turns the audio into text-like states, so a small projection is all the LLM needs. Here the frozen
decoder decodes greedily, and the last-layer state at each step (the one Whisper's own head reads to pick the next
token) becomes one LLM input frame: the LLM's own embedding of the token Whisper picks there (Whisper's byte-level
BPE token looked up in the LLM's vocabulary, or split by the LLM's BPE; the mean of the pieces), plus a trainable
LayerNorm-MLP of the state (as ``StackingProjector``) whose last layer starts at zero. At step 0 the LLM thus reads
its own embeddings of Whisper's transcript (LegoSLM's idea of reading the LLM's own input embeddings, arXiv
2505.11352), and training adds what the states know beyond the argmax. The anchor answers
"how far is the learned adapter from what Whisper's decoder already knows": it is registered like the other
adapters (``model.adapter: whisper-decoder``, recipe ``whisper-anchor``) and its output length is the number of
decoded tokens, so ``forward`` returns (frames, lengths).

Whisper's decoder needs Whisper's input: the encoder's output over the whole 30-s window, silence included. On the
real-length frames the rest of the toolkit uses, tiny.en's decoder loops on short clips (25 ``asr_en`` clips:
658% WER real-length, 453% cut back to the speech, 3.0% on the whole window; benchmarks/whisper_window_probe.py),
so the builder sets the encoder to keep the window (``SpeechEncoder.keep_window``), and all clips then share
F = 1500 frames: the batch decodes together with no cross-attention mask.
"""

from __future__ import annotations

import torch
from torch import nn


def whisper_decoding_ids(generation_config, vocab_size: int) -> tuple[list[int], int, list[int]]:
    """(prompt, end-of-text id, suppressed ids) for greedy English transcription without timestamps, from a Whisper
    ``GenerationConfig``: the prompt is the start-of-transcript token (+ no-timestamps when the model has one); every
    id past the end-of-text token is special in Whisper's vocabulary (languages, tasks, timestamps) and is
    suppressed, as are the config's ``suppress_tokens``. A config without ``no_timestamps_token_id`` (a random test
    model) suppresses only its start token."""
    gc = generation_config
    start = gc.decoder_start_token_id
    eos = gc.eos_token_id if isinstance(gc.eos_token_id, int) else gc.eos_token_id[0]
    nts = getattr(gc, "no_timestamps_token_id", None)
    if nts is None:
        return [start], eos, [start]
    suppressed = sorted(set(range(eos + 1, vocab_size)) | set(gc.suppress_tokens or []))
    return [start, nts], eos, suppressed


TOKENS_PER_SECOND = 6
"""Cap on Whisper tokens per second of speech (read English runs 2.5-4; LibriSpeech averages ~3.5 BPE tokens/s)."""
SLACK_TOKENS = 10
"""Tokens allowed beyond that, for short clips and punctuation."""
MAX_PIECES = 4
"""LLM tokens kept per Whisper token in the token map (a Whisper token the LLM splits further is rare)."""


def whisper_to_llm_tokens(whisper_tokenizer, llm_tokenizer, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Whisper token id -> the LLM token ids of the same bytes: (ids [V, MAX_PIECES], counts [V]). Both are byte-level
    BPEs over GPT-2's byte alphabet, so a Whisper token string is looked up in the LLM's vocabulary as it is, else
    split by the LLM's own BPE model; special tokens (past the end-of-text) and bytes the LLM lacks map to nothing."""
    vocab = llm_tokenizer.get_vocab()
    bpe = getattr(getattr(llm_tokenizer, "backend_tokenizer", None), "model", None)
    ids = torch.zeros(vocab_size, MAX_PIECES, dtype=torch.long)
    counts = torch.zeros(vocab_size, dtype=torch.long)
    special = set(getattr(whisper_tokenizer, "all_special_ids", []))
    for v, piece in enumerate(whisper_tokenizer.convert_ids_to_tokens(list(range(vocab_size)))):
        if piece is None or v in special:
            continue
        if piece in vocab:
            pieces = [vocab[piece]]
        elif bpe is not None:
            pieces = [t.id for t in bpe.tokenize(piece)][:MAX_PIECES]
        else:
            pieces = llm_tokenizer(whisper_tokenizer.convert_tokens_to_string([piece]), add_special_tokens=False).input_ids[:MAX_PIECES]
        ids[v, : len(pieces)] = torch.tensor(pieces, dtype=torch.long)
        counts[v] = len(pieces)
    return ids, counts


class WhisperDecoderAdapter(nn.Module):
    """Anchor (SALSA): Whisper's frozen decoder decodes greedily; one LLM frame per step (token embedding + MLP of state).

    States [B, Y+1, D] -> the LLM's embedding of each picked token (with a token map) + LayerNorm, Linear-GELU-Linear
    of the state -> [B, Y+1, H]."""

    def __init__(self, decoder: nn.Module, prompt: list[int], eos_id: int, suppressed: list[int], out_dim: int,
                 hidden: int = 1024, out_norm: bool = False, max_tokens: int = 128,
                 token_map: tuple[torch.Tensor, torch.Tensor] | None = None, llm_embedding: nn.Module | None = None):
        super().__init__()
        dim = decoder.config.d_model
        # trained parts first: ``SpeechLM.adapt`` reads the adapter's first parameter for the frames' device and dtype
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.out_norm = nn.RMSNorm(out_dim) if out_norm else None
        self.decoder = decoder.requires_grad_(False)
        self.k = 1  # no frame stacking: one LLM frame per decoded token
        self.prompt, self.eos_id, self.max_tokens = list(prompt), int(eos_id), int(max_tokens)
        vocab = decoder.embed_tokens.weight.shape[0]
        mask = torch.zeros(vocab, dtype=torch.bool)
        mask[list(suppressed)] = True
        self.register_buffer("suppressed", mask, persistent=False)  # [V]
        if (token_map is None) != (llm_embedding is None):
            raise ValueError("whisper-decoder: a token map needs the LLM's input embedding, and the reverse")
        if token_map is not None:
            self.register_buffer("map_ids", token_map[0], persistent=False)  # [V, MAX_PIECES]
            self.register_buffer("map_counts", token_map[1], persistent=False)  # [V]
            nn.init.zeros_(self.proj[-1].weight)  # step 0: exactly the LLM's embeddings of Whisper's tokens
            nn.init.zeros_(self.proj[-1].bias)
        # the LLM's embedding, held by reference and not registered: it belongs to the LLM (frozen, moved with it)
        object.__setattr__(self, "_llm_embedding", llm_embedding)

    def train(self, mode: bool = True) -> WhisperDecoderAdapter:
        super().train(mode)
        self.decoder.eval()  # frozen: no dropout, whatever the stage
        return self

    def caps(self, lengths: torch.Tensor | None, b: int) -> torch.Tensor:
        """Tokens each clip may decode [B]: ``TOKENS_PER_SECOND`` x its speech seconds + ``SLACK_TOKENS`` (frames at
        50/s), at most ``max_tokens``; without lengths, ``max_tokens``. A looping clip then costs the batch little."""
        if lengths is None:
            return torch.full((b,), self.max_tokens, dtype=torch.long)
        cap = (lengths.float() / 50 * TOKENS_PER_SECOND).ceil().long() + SLACK_TOKENS
        return cap.clamp(max=self.max_tokens).cpu()

    @torch.no_grad()
    def decode(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
        """Greedy decoding of the whole batch. frames [B, F, D] (Whisper's encoder output over the window), lengths
        [B] the speech's frames (for each clip's token cap; None: ``max_tokens``) -> tokens per clip (no end), states
        [B, Y+1, D] (state t predicts token t, the last one the end, or the cap) and lengths [B] = Y_i + 1."""
        dec = self.decoder
        b = frames.shape[0]
        caps = self.caps(lengths, b).to(frames.device)  # [B]
        frames = frames.to(dec.embed_tokens.weight.dtype)
        ids = torch.tensor([self.prompt] * b, device=frames.device)  # [B, P]
        out = dec(input_ids=ids, encoder_hidden_states=frames, use_cache=True)
        states = [out.last_hidden_state[:, -1]]  # each [B, D]
        cache = out.cache if hasattr(out, "cache") else out.past_key_values  # transformers 5 / 4 name
        weight = dec.embed_tokens.weight  # [V, D]: Whisper's head is tied to its token embeddings
        done = torch.zeros(b, dtype=torch.bool, device=frames.device)  # [B]
        lengths = caps + 1  # [B]: a clip that reaches its cap keeps cap tokens and the state after them
        tokens: list[torch.Tensor] = []
        for t in range(int(caps.max()) + 1):
            logits = (states[-1] @ weight.T).float().masked_fill(self.suppressed, float("-inf"))  # [B, V]
            nxt = logits.argmax(-1)  # [B]
            ended = (nxt == self.eos_id) & ~done
            lengths[ended] = t + 1
            done |= ended | (caps <= t)
            if bool(done.all()):
                break
            tokens.append(torch.where(done, self.eos_id, nxt))  # finished rows feed the end token (ignored)
            kwargs = {"cache" if hasattr(out, "cache") else "past_key_values": cache}
            out = dec(input_ids=tokens[-1][:, None], encoder_hidden_states=frames, use_cache=True, **kwargs)
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            states.append(out.last_hidden_state[:, -1])
        seq = torch.stack(tokens, 1) if tokens else torch.zeros(b, 0, dtype=torch.long, device=frames.device)  # [B, Y]
        texts = [seq[i, : int(lengths[i]) - 1].tolist() for i in range(b)]
        h = torch.stack(states, 1)  # [B, Y+1, D]
        keep = torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]  # [B, Y+1]
        return texts, h * keep[..., None], lengths

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        raise TypeError("whisper-decoder: the output length is the decoded token count; forward returns it")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, F, D]: Whisper's encoder output over the whole window -> ([B, Y+1, H], lengths [B])."""
        texts, states, out_lengths = self.decode(x, lengths)  # [B, Y+1, D], [B]
        y = self.proj(self.norm(states.float()))  # [B, Y+1, H]
        if self._llm_embedding is not None:
            picked = torch.full(states.shape[:2], self.eos_id, dtype=torch.long, device=y.device)  # [B, Y+1]
            for i, t in enumerate(texts):
                picked[i, : len(t)] = torch.tensor(t, dtype=torch.long, device=y.device)
            pieces, n = self.map_ids[picked], self.map_counts[picked]  # [B, Y+1, P], [B, Y+1]
            with torch.no_grad():
                emb = self._llm_embedding(pieces).float()  # [B, Y+1, P, H]
            keep = torch.arange(pieces.shape[-1], device=y.device) < n[..., None]  # [B, Y+1, P]
            base = (emb * keep[..., None]).sum(2) / n.clamp(min=1)[..., None]  # [B, Y+1, H]; the end maps to zero
            y = y + base
        if self.out_norm is not None:
            y = self.out_norm(y)
        keep = torch.arange(y.shape[1], device=y.device)[None, :] < out_lengths[:, None]  # [B, Y+1]
        return y * keep[..., None], out_lengths.cpu()


def build_whisper_decoder_adapter(whisper_decoder: nn.Module, generation_config, out_dim: int, hidden: int = 1024,
                                  out_norm: bool = False, whisper_tokenizer=None, llm_tokenizer=None,
                                  llm_embedding: nn.Module | None = None) -> WhisperDecoderAdapter:
    """The anchor adapter over a loaded Whisper decoder and its generation config (the builder calls this). With
    both tokenizers and the LLM's input embedding it starts from the LLM's embeddings of Whisper's tokens; without
    (a random test Whisper has no tokenizer) from the projection alone."""
    vocab = whisper_decoder.embed_tokens.weight.shape[0]
    prompt, eos, suppressed = whisper_decoding_ids(generation_config, vocab)
    token_map = None
    if whisper_tokenizer is not None and llm_tokenizer is not None and llm_embedding is not None:
        token_map = whisper_to_llm_tokens(whisper_tokenizer, llm_tokenizer, vocab)
    return WhisperDecoderAdapter(whisper_decoder, prompt, eos, suppressed, out_dim, hidden=hidden, out_norm=out_norm,
                                 token_map=token_map, llm_embedding=llm_embedding if token_map is not None else None)
