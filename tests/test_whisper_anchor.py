"""The ``whisper-decoder`` anchor adapter: batched greedy decoding against the decoder run without a cache, the
Whisper -> LLM token map, the step-0 identity, the builder's refusals, training and reloading through the CLI."""

from __future__ import annotations

import pytest
import torch

from speechlm.backbones.llm import build_tiny_tokenizer
from speechlm.checkpoint import load_checkpoint
from speechlm.config import ModelConfig, load_recipe
from speechlm.model.builders import SIZES, build_speechlm, load_encoder_decoder
from speechlm.model.encoder import SpeechEncoder
from speechlm.model.whisper_anchor import (MAX_PIECES, WhisperDecoderAdapter, build_whisper_decoder_adapter,
                                           whisper_to_llm_tokens)
from speechlm.training.loop import train


def _window_frames(n: int, seed: int = 0) -> tuple[SpeechEncoder, torch.Tensor]:
    """The tiny Whisper's encoder output over whole 30-s windows of ``n`` random clips [n, 1500, 64]."""
    enc, _, _, _ = load_encoder_decoder("tiny-whisper", decoder=False)
    speech = SpeechEncoder(enc, pad_to_30s=True, keep_window=True)
    g = torch.Generator().manual_seed(seed)
    waves = [0.1 * torch.randn(8000 * (i + 1), generator=g) for i in range(n)]
    with torch.no_grad():
        frames, lengths = speech(waves)
    # the whole window, silence included; the lengths still say where each clip's speech ends (0.5 s a clip more)
    assert frames.shape == (n, 1500, 64) and lengths.tolist() == [25 * (i + 1) for i in range(n)]
    return speech, frames


def _adapter(max_tokens: int = 12, **kw) -> WhisperDecoderAdapter:
    _, dec, gc, _ = load_encoder_decoder("tiny-whisper")
    adapter = build_whisper_decoder_adapter(dec, gc, out_dim=32, hidden=48, **kw)
    adapter.max_tokens = max_tokens
    return adapter.eval()


def test_batched_greedy_decoding_matches_the_uncached_decoder():
    adapter = _adapter()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a random decoder at init repeats one token; larger weights and frames make clips differ
        for w in adapter.decoder.parameters():
            w.copy_(0.3 * torch.randn(w.shape, generator=g))
    frames = 2 * torch.randn(3, 1500, 64, generator=g)  # [B, F, D]
    first, _, _ = adapter.decode(frames)
    adapter.eos_id = first[0][2]  # a token clip 0 picks third: clips now end at different steps, some not at all
    texts, states, lengths = adapter.decode(frames)  # [B, Y+1, D]
    assert len(set(lengths.tolist())) > 1 and len({tuple(t) for t in texts}) == 3
    dec, p = adapter.decoder, len(adapter.prompt)
    for i, toks in enumerate(texts):
        ids = torch.tensor([adapter.prompt + toks])  # the whole sequence at once, no cache
        with torch.no_grad():
            ref = dec(input_ids=ids, encoder_hidden_states=frames[i : i + 1], use_cache=False).last_hidden_state[0]
        n = int(lengths[i])
        assert n == len(toks) + 1
        torch.testing.assert_close(states[i, :n], ref[p - 1 :], atol=1e-4, rtol=1e-4)  # state t predicts token t
        logits = (ref[p - 1 : -1] @ dec.embed_tokens.weight.T).masked_fill(adapter.suppressed, float("-inf"))
        assert logits.argmax(-1).tolist() == toks  # greedy: each token is the argmax of the state before it
        assert states[i, n:].abs().sum() == 0  # past the end: zeros
        alone = adapter.decode(frames[i : i + 1])  # a clip decoded alone gives the same tokens and states
        assert alone[0][0] == toks
        torch.testing.assert_close(alone[1][0, :n], states[i, :n], atol=1e-5, rtol=1e-5)


def test_token_cap_follows_the_speech_length():
    adapter = _adapter(max_tokens=40)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for w in adapter.decoder.parameters():
            w.copy_(0.3 * torch.randn(w.shape, generator=g))
    frames = 2 * torch.randn(3, 1500, 64, generator=g)  # [B, F, D]
    free, free_states, _ = adapter.decode(frames)  # no lengths: up to max_tokens each
    speech = torch.tensor([50, 1500, 100])  # 1 s, 30 s, 2 s of speech
    caps = adapter.caps(speech, 3)
    assert caps.tolist() == [16, 40, 22]  # 6 tokens a second + 10, at most max_tokens
    texts, states, lengths = adapter.decode(frames, speech)
    for i in range(3):
        n = min(len(free[i]), int(caps[i]))
        assert texts[i] == free[i][:n] and int(lengths[i]) == n + 1  # the same tokens, cut at the cap
        torch.testing.assert_close(states[i, : n + 1], free_states[i, : n + 1], atol=1e-5, rtol=1e-5)


def test_token_map_keeps_the_bytes():
    whisper_tok, llm_tok = build_tiny_tokenizer(600), build_tiny_tokenizer(300)  # the LLM splits what Whisper merged
    ids, counts = whisper_to_llm_tokens(whisper_tok, llm_tok, len(whisper_tok))
    assert counts.max() <= MAX_PIECES and (counts > 1).any()  # some Whisper tokens need several LLM tokens
    pieces = whisper_tok.convert_ids_to_tokens(list(range(len(whisper_tok))))
    for v in range(len(whisper_tok)):
        if v in whisper_tok.all_special_ids:
            assert counts[v] == 0
            continue
        n = int(counts[v])
        assert n > 0, pieces[v]
        if n < MAX_PIECES:  # the LLM's pieces spell the same byte-level string
            assert "".join(llm_tok.convert_ids_to_tokens(ids[v, :n].tolist())) == pieces[v]


def test_step_zero_reads_the_llm_embeddings_of_whisper_tokens():
    _, frames = _window_frames(2, seed=1)
    embedding = torch.nn.Embedding(50, 32)
    g = torch.Generator().manual_seed(0)
    token_map = (torch.randint(0, 50, (128, MAX_PIECES), generator=g), torch.randint(0, MAX_PIECES + 1, (128,), generator=g))
    _, dec, gc, _ = load_encoder_decoder("tiny-whisper")
    from speechlm.model.whisper_anchor import whisper_decoding_ids

    prompt, eos, suppressed = whisper_decoding_ids(gc, 128)
    adapter = WhisperDecoderAdapter(dec, prompt, eos, suppressed, out_dim=32, hidden=48, max_tokens=6,
                                    token_map=token_map, llm_embedding=embedding).eval()
    with torch.no_grad():
        out, lengths = adapter(frames)  # [B, Y+1, 32]
    texts, _, _ = adapter.decode(frames)
    for i, toks in enumerate(texts):
        for t, tok in enumerate(toks + ([eos] if len(toks) < 6 else [])):
            n = int(token_map[1][tok])
            want = embedding.weight[token_map[0][tok, :n]].mean(0) if n else torch.zeros(32)
            torch.testing.assert_close(out[i, t], want, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="token map needs"):
        WhisperDecoderAdapter(dec, prompt, eos, suppressed, out_dim=32, token_map=token_map)


def test_builder_refuses_what_the_anchor_cannot_read():
    tiny = {**SIZES["tiny"].__dict__, "adapter": "whisper-decoder"}
    with pytest.raises(ValueError, match="pad_audio_to_30s"):
        build_speechlm(ModelConfig(**tiny))
    with pytest.raises(ValueError, match="ctc_head=false"):
        build_speechlm(ModelConfig(**{**tiny, "pad_audio_to_30s": True, "ctc_head": True}))
    with pytest.raises(ValueError, match="keep_window needs pad_to_30s"):
        SpeechEncoder(load_encoder_decoder("tiny-whisper", decoder=False)[0], keep_window=True)


def test_anchor_trains_only_its_projection_and_lora_and_reloads(tone_manifest, tmp_path):
    out = tmp_path / "run"
    cfg = load_recipe("tiny", [f"data.train_manifest={tone_manifest}", f"train.out_dir={out}", "train.max_steps=2",
                               "train.save_every=2", "model.adapter=whisper-decoder", "model.pad_audio_to_30s=true"])
    model = build_speechlm(cfg.model)
    decoder_before = {n: p.clone() for n, p in model.adapter.decoder.named_parameters()}
    assert not any(n.startswith("adapter.decoder.") for n in model.trainable_names)
    assert {n.split(".")[1] for n in model.trainable_names if n.startswith("adapter.")} == {"norm", "proj"}
    ckpt = train(cfg, progress=False)
    loaded, _, _ = load_checkpoint(ckpt)
    for n, p in loaded.adapter.decoder.named_parameters():  # the decoder came back from the backbone, untouched
        torch.testing.assert_close(p, decoder_before[n])
    trained = loaded.trainable_state_dict()
    assert any(not torch.equal(v, model.trainable_state_dict()[k]) for k, v in trained.items() if k.startswith("adapter."))
    waves = [0.1 * torch.randn(12000)]
    prompt = loaded.prompt_ids("Transcribe: <|audio|>")
    a, lengths = loaded.adapt(waves)
    assert a.shape[0] == 1 and int(lengths[0]) <= loaded.adapter.max_tokens + 1
    assert isinstance(loaded.generate(waves, [prompt], max_new_tokens=3)[0], str)
    with pytest.raises(ValueError, match="whole 30-s window: train it from audio"):  # cached features are real-length
        loaded.adapt([], frames=[torch.zeros(10, 64)])
