"""The discrete speech LM at tiny size: the vocabulary layout (bit-identical text logits, JSON round trip, loud
mismatch, LoRA + trainable rows), stream patterns, the multi-stream loss, constrained decoding and memorisation."""

from __future__ import annotations

import warnings

import pytest
import torch

from speechlm.backbones.llm import build_tiny_llm
from speechlm.model.discrete import DiscreteSpeechLM, Sampling, StreamBatch, sample_token
from speechlm.model.streams import delay, from_pattern, to_pattern, undelay
from speechlm.model.vocab import LayoutMismatch, VocabLayout, check_layout, extend_llm, trainable_rows_config
from speechlm.tasks.render import EOSP, SOS_EOS, SOSP


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (conftest.one_thread)."""


def _extended(n_units=16, tasks=("audiolm",), codec_levels=0, codebook_size=0, seed=0, family="llama"):
    llm, tok = build_tiny_llm(family, seed=seed)
    lay = VocabLayout.for_llm(tok, n_units, tasks=tasks, codec_levels=codec_levels, codebook_size=codebook_size,
                              tokenizer_hash="test-units")
    extend_llm(llm, tok, lay)
    return llm, tok, lay


# ---- vocabulary ------------------------------------------------------------------------------------
def test_text_logits_bit_identical_after_extension():
    llm, tok = build_tiny_llm("llama")
    ids = tok("transcribe the audio. hello world", return_tensors="pt").input_ids
    with torch.no_grad():
        before = llm(ids).logits  # [1, P, V]
    lay = VocabLayout.for_llm(tok, 50, tasks=("asr", "tts"), codec_levels=2, codebook_size=16)
    extend_llm(llm, tok, lay)
    with torch.no_grad():
        after = llm(ids).logits  # [1, P, V']
    assert after.shape[-1] == lay.lm_vocab
    assert torch.equal(before, after[..., : lay.text_vocab])
    # the new spellings are single tokens with the layout's ids
    assert tok("<|sosp|><|u3|><|u49|><|eosp|>", add_special_tokens=False).input_ids == [
        lay.marker_id(SOSP), lay.unit_id(3), lay.unit_id(49), lay.marker_id(EOSP)]
    assert tok.convert_tokens_to_ids("<|task:tts|>") == lay.task_id("tts")


def test_new_rows_are_seeded():
    a, _, lay = _extended()
    b, _, _ = _extended()
    assert torch.equal(a.get_input_embeddings().weight, b.get_input_embeddings().weight)
    w = a.get_input_embeddings().weight[lay.text_vocab:]
    assert w.std(0).mean() > 0  # noise, not one repeated row


def test_centroid_init_keeps_text_rows_and_unit_similarity():
    from speechlm.model.vocab import init_unit_rows

    llm, tok, lay = _extended(n_units=16)
    before = llm.get_input_embeddings().weight.detach().clone()
    g = torch.Generator().manual_seed(1)
    base = torch.randn(8, 96, generator=g)
    centroids = torch.cat([base, base + 0.05 * torch.randn(8, 96, generator=g)])  # unit i and i+8 sound alike
    init_unit_rows(llm, lay, centroids, seed=3)
    w = llm.get_input_embeddings().weight.detach()
    assert torch.equal(w[: lay.text_vocab], before[: lay.text_vocab])  # text rows untouched
    assert torch.equal(w[lay.marker_start:], before[lay.marker_start:])  # markers too
    units = w[lay.unit_start:lay.marker_start] - before[: lay.text_vocab].mean(0)  # [16, H]
    cos = torch.nn.functional.cosine_similarity(units[:, None], units[None], dim=-1)  # [16, 16]
    alike = cos[torch.arange(8), torch.arange(8) + 8]
    others = cos[torch.arange(8), (torch.arange(8) + 1) % 8]
    assert alike.min() > 0.9 and others.abs().max() < 0.6
    llm2, _, lay2 = _extended(n_units=16)
    init_unit_rows(llm2, lay2, centroids, seed=3)
    assert torch.equal(llm2.get_input_embeddings().weight, w)  # seeded
    with pytest.raises(LayoutMismatch, match="12 centroids"):
        init_unit_rows(llm2, lay2, centroids[:12])


def test_layout_json_round_trip_and_ranges(tmp_path):
    _, _, lay = _extended(codec_levels=3, codebook_size=8)
    assert VocabLayout.from_json(lay.to_json()) == lay
    lay.save(tmp_path)
    assert VocabLayout.load(tmp_path) == lay
    r = lay.ranges()
    assert r["text"][1] == r["unit"][0] and r["unit"][1] == r["special"][0] and r["special"][1] == r["codec"][0]
    assert lay.codec_id(1, 0) - lay.codec_id(0, 0) == 8  # ESPnet: offset = codebook_index x codebook_size
    assert lay.nq == 4 and lay.size == lay.codec_start + 24


def test_layout_mismatch_names_the_field_and_folder(tmp_path):
    _, _, lay = _extended()
    other = VocabLayout.from_json(lay.to_json().replace('"n_units": 16', '"n_units": 17'))
    with pytest.raises(LayoutMismatch, match=r"n_units: saved 17 != expected 16") as err:
        check_layout(other, lay, tmp_path)
    assert str(tmp_path) in str(err.value) and "saved layout" in str(err.value)
    check_layout(lay, VocabLayout.from_json(lay.to_json()), tmp_path)  # equal: silent
    llm, tok = build_tiny_llm("llama")
    tok.add_tokens(["<|oops|>"])
    with pytest.raises(LayoutMismatch, match="before extension"):
        extend_llm(llm, tok, lay)


def test_lora_with_trainable_rows_keeps_text_rows_frozen():
    from peft import get_peft_model

    llm, tok, lay = _extended()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = get_peft_model(llm, trainable_rows_config(lay, r=4, alpha=8))
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    all_ids = torch.arange(lay.lm_vocab)
    h = torch.randn(1, 3, llm.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        e0, l0 = emb(all_ids).clone(), head(h).clone()  # [V', H], [1, 3, V']
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.tensor([[5, lay.marker_id(SOSP), lay.unit_id(3), lay.unit_id(4), lay.marker_id(EOSP), 7]])
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    with torch.no_grad():
        e1, l1 = emb(all_ids), head(h)
    v = lay.text_vocab
    assert torch.equal(e0[:v], e1[:v]) and torch.equal(l0[..., :v], l1[..., :v])  # text rows (tied) untouched
    assert (e0[v:] - e1[v:]).abs().amax(1).gt(0).any()  # the new rows train
    assert not torch.equal(l0[..., v:], l1[..., v:])


# ---- streams ---------------------------------------------------------------------------------------
def test_delay_worked_example():
    x = torch.tensor([[1, 11, 21], [2, 12, 22], [3, 13, 23], [4, 14, 24]])  # [T=4, nq=3]
    y = delay(x, pad=0)
    assert y.tolist() == [[1, 0, 0], [2, 11, 0], [3, 12, 21], [4, 13, 22], [0, 14, 23], [0, 0, 24]]


def test_delay_inverse_property():
    g = torch.Generator().manual_seed(0)
    for t in range(0, 12):
        for nq in range(1, 6):
            x = torch.randint(1, 100, (t, nq), generator=g)
            assert torch.equal(undelay(delay(x, pad=0)), x)
            assert delay(x, pad=-1).shape == (t + nq - 1, nq)
            xb = torch.randint(1, 100, (3, t, nq), generator=g)
            assert torch.equal(from_pattern(to_pattern(xb, "delay", 0), "delay"), xb)
            assert torch.equal(from_pattern(to_pattern(xb, "parallel", 0), "parallel"), xb)
    assert torch.equal(to_pattern(torch.ones(4, 1), "flat", 0), torch.ones(4, 1))
    with pytest.raises(ValueError):
        to_pattern(torch.ones(4, 2), "flat", 0)


# ---- the multi-stream LM ---------------------------------------------------------------------------
def _speech_example(lay, units, codes=None, task="audiolm"):
    """[<|sos_eos|>, <|task|>, <|sosp|>, units..., <|eosp|>, <|sos_eos|>] with codes in streams >= 1 on unit frames."""
    s0 = [lay.marker_id(SOS_EOS), lay.task_id(task), lay.marker_id(SOSP)] + [lay.unit_id(u) for u in units] + \
         [lay.marker_id(EOSP), lay.marker_id(SOS_EOS)]
    f = torch.full((len(s0), lay.nq), lay.pad_id)  # [T, nq]
    f[:, 0] = torch.tensor(s0)
    for k in range(1, lay.nq):
        f[3:3 + len(units), k] = torch.tensor([lay.codec_id(k - 1, int(c)) for c in codes[:, k - 1]])
    mask = torch.zeros(len(s0), dtype=torch.bool)
    mask[3:] = True  # loss on the speech and the end (the prompt is sos, task, sosp)
    return f, mask


@pytest.mark.parametrize("pattern,levels,family", [("flat", 0, "llama"), ("parallel", 2, "llama"), ("delay", 2, "llama"),
                                                   ("delay", 1, "qwen2")])
def test_teacher_forced_loss_equals_training_loss(pattern, levels, family):
    llm, tok, lay = _extended(codec_levels=levels, codebook_size=8 if levels else 0, family=family)
    model = DiscreteSpeechLM(llm, lay, pattern=pattern, weights={"unit": 0.5, "special": 2.0}).eval()
    g = torch.Generator().manual_seed(1)
    exs = [_speech_example(lay, torch.randint(0, 16, (t,), generator=g).tolist(),
                           torch.randint(0, 8, (t, levels), generator=g)) for t in (5, 9, 3)]
    batch = StreamBatch.collate([e[0] for e in exs], [e[1] for e in exs], lay.pad_id)
    with torch.no_grad():
        train_sum, frames = model(batch)
    tf_sum, tf_frames = model.teacher_force(batch)
    assert int(frames) == int(tf_frames) == sum(int(e[1].sum()) for e in exs)
    torch.testing.assert_close(train_sum, tf_sum, rtol=1e-5, atol=1e-4)
    # the weights count: units at 0.5 make the sum smaller than with unit weight 1
    heavier = DiscreteSpeechLM(llm, lay, pattern=pattern, weights={"unit": 1.0, "special": 2.0}).eval()
    with torch.no_grad():
        assert heavier(batch)[0] > train_sum


def _units_only_outside_spans(s0, lay, in_speech=False):
    for tok in s0:
        if lay.unit_of(tok) is not None and not in_speech:
            return False
        if in_speech and lay.unit_of(tok) is None and tok != lay.marker_id(EOSP):
            return False
        in_speech = tok == lay.marker_id(SOSP) or (in_speech and tok != lay.marker_id(EOSP))
    return True


def test_constrained_decoding_keeps_units_inside_speech_spans():
    llm, tok, lay = _extended(codec_levels=1, codebook_size=8)
    model = DiscreteSpeechLM(llm, lay, pattern="delay").eval()
    # bias the random head towards units and the span markers, so an unconstrained sampler would break the rule
    bias = torch.zeros(lay.lm_vocab)
    bias[lay.unit_start:lay.marker_start] = 4.0
    bias[[lay.marker_id(SOSP), lay.marker_id(EOSP)]] = 3.0
    model.causal_lm.get_output_embeddings().register_forward_hook(lambda m, i, o: o + bias)
    g = torch.Generator().manual_seed(0)
    text_prompt = torch.tensor([[lay.marker_id(SOS_EOS), lay.pad_id], [5, lay.pad_id]])  # [2, nq]
    speech_prompt = torch.tensor([[lay.marker_id(SOS_EOS), lay.pad_id], [lay.marker_id(SOSP), lay.pad_id]])
    unconstrained_broke = False
    for i in range(24):
        prompt = speech_prompt if i % 2 else text_prompt
        opts = Sampling(("sample", "topk", "topp")[i % 3], temperature=1.5, top_k=20, top_p=0.95)
        out = model.generate(prompt, max_frames=20, sampling=opts, generator=g)  # [T, 2]
        s0 = prompt[:, 0].tolist() + out[:, 0].tolist()
        assert _units_only_outside_spans(s0, lay)
        for f in range(out.shape[0]):  # codec codes exactly on unit frames
            assert (lay.unit_of(int(out[f, 0])) is not None) == (int(out[f, 1]) != lay.pad_id)
        free = model.generate(prompt, max_frames=20, sampling=opts, generator=g, constrained=False)
        unconstrained_broke |= not _units_only_outside_spans(prompt[:, 0].tolist() + free[:, 0].tolist(), lay)
    assert unconstrained_broke  # the test would catch a missing mask


def test_no_repeat_units_never_repeats_a_unit_inside_a_span():
    llm, tok, lay = _extended()
    model = DiscreteSpeechLM(llm, lay).eval()
    bias = torch.zeros(lay.lm_vocab)
    bias[lay.unit_start + 3] = 8.0  # one unit dominates: greedy decoding repeats it without the rule
    model.causal_lm.get_output_embeddings().register_forward_hook(lambda m, i, o: o + bias)
    prompt = torch.tensor([lay.marker_id(SOS_EOS), lay.marker_id(SOSP)])
    plain = model.generate(prompt, max_frames=12).tolist()
    assert plain.count(lay.unit_start + 3) == 12
    ruled = model.generate(prompt, max_frames=12, no_repeat_units=True).tolist()
    assert all(a != b for a, b in zip(ruled, ruled[1:]) if lay.unit_of(a) is not None)
    assert ruled[::2] == [lay.unit_start + 3] * 6  # still the favourite whenever it is allowed


def test_sampling_never_draws_a_disallowed_id():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=g)
    allowed = torch.zeros(50, dtype=torch.bool)
    allowed[[3, 7, 9]] = True
    logits[[3, 7, 9]] -= 10  # the allowed ids are the unlikely ones
    for s in ("greedy", "sample", "topk", "topp"):
        for _ in range(20):
            assert sample_token(logits, allowed, Sampling(s, top_k=2, top_p=0.5), g) in (3, 7, 9)


def test_two_layer_lm_memorises_eight_unit_sequences():
    """SpeechGPT's flat case: prompt <|sos_eos|> <digit i> <|sosp|>, target units <|eosp|> <|sos_eos|>."""
    llm, tok, lay = _extended(n_units=32, seed=3)
    model = DiscreteSpeechLM(llm, lay)  # flat
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 32, (int(n),), generator=g).tolist() for n in torch.randint(6, 12, (8,), generator=g)]
    digit = [tok.convert_tokens_to_ids(str(i)) for i in range(8)]
    frames, masks = [], []
    for i, units in enumerate(seqs):
        s0 = [lay.marker_id(SOS_EOS), digit[i], lay.marker_id(SOSP)] + [lay.unit_id(u) for u in units] + \
             [lay.marker_id(EOSP), lay.marker_id(SOS_EOS)]
        frames.append(torch.tensor(s0))
        masks.append(torch.arange(len(s0)) >= 3)
    batch = StreamBatch.collate(frames, masks, lay.pad_id)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(300):
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.05
    model.eval()
    for i, units in enumerate(seqs):
        out = model.generate(frames[i][:3], max_frames=20, stop_ids=(lay.marker_id(SOS_EOS),)).tolist()
        assert out == frames[i][3:].tolist(), (i, out)


def test_delay_with_three_streams_trains_and_decodes_to_shape():
    llm, tok, lay = _extended(codec_levels=2, codebook_size=8)
    model = DiscreteSpeechLM(llm, lay)  # nq=3: delay by default
    assert model.pattern == "delay" and model.nq == 3
    g = torch.Generator().manual_seed(0)
    units = torch.randint(0, 16, (6,), generator=g).tolist()
    f, m = _speech_example(lay, units, torch.randint(0, 8, (6, 2), generator=g))
    batch = StreamBatch.collate([f], [m], lay.pad_id)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = model.loss(batch)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first / 4
    model.eval()
    out = model.generate(f[:3], max_frames=30, stop_ids=(lay.marker_id(SOS_EOS),))  # [T_new, 3]
    assert out.dim() == 2 and out.shape[1] == 3
    assert out.shape[0] <= 30 and int(out[-1, 0]) == lay.marker_id(SOS_EOS)
    assert torch.equal(out, f[3:])  # one memorised example comes back, codes and all


def test_units_rendering_trains_the_flat_lm():
    """render_units -> StreamBatch.from_labels -> the loss covers exactly the answer tokens."""
    from speechlm.tasks import get_task
    from speechlm.tasks.render import render_units

    llm, tok, lay = _extended()
    model = DiscreteSpeechLM(llm, lay)
    task = get_task("asr")
    rs = [render_units(task, {"text": t}, u, tok, task.instructions[0]) for t, u in (("hello", [1, 2, 3]), ("two", [4]))]
    batch = StreamBatch.from_labels([r.input_ids for r in rs], [r.labels for r in rs], lay.pad_id)
    total, frames = model(batch)
    assert int(frames) == sum(sum(x != -100 for x in r.labels) for r in rs)
    assert torch.isfinite(total) and total > 0


def test_peft_wrapped_lm_trains_new_rows_only_and_round_trips(tmp_path):
    """LoRA + trainable rows under DiscreteSpeechLM: a step leaves the text rows alone, decoding runs through the
    peft wrappers, and the trainable state reloads with the saved layout checked."""
    from peft import get_peft_model

    llm, tok, lay = _extended(codec_levels=1, codebook_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        peft_llm = get_peft_model(llm, trainable_rows_config(lay, r=4, alpha=8))
    model = DiscreteSpeechLM(peft_llm, lay)
    emb = model.causal_lm.get_input_embeddings()
    ids = torch.arange(lay.lm_vocab)
    with torch.no_grad():
        e0 = emb(ids).clone()  # [V', H]
    g = torch.Generator().manual_seed(0)
    f, m = _speech_example(lay, [1, 2, 3], torch.randint(0, 8, (3, 1), generator=g))
    batch = StreamBatch.collate([f], [m], lay.pad_id)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.loss(batch).backward()
    opt.step()
    with torch.no_grad():
        e1 = emb(ids)
    assert torch.equal(e0[: lay.text_vocab], e1[: lay.text_vocab]) and not torch.equal(e0, e1)
    out = model.eval().generate(f[:3], max_frames=6, sampling=Sampling("topk", top_k=5), generator=g)
    assert out.shape[1] == 2
    state = model.trainable_state_dict()
    assert any("trainable_tokens" in k for k in state) and any("codec_emb" in k for k in state)
    lay.save(tmp_path)
    model.load_trainable_state_dict(state, VocabLayout.load(tmp_path), str(tmp_path))
    other = VocabLayout.from_json(lay.to_json().replace('"codebook_size": 8', '"codebook_size": 9'))
    with pytest.raises(LayoutMismatch, match="codebook_size"):
        model.load_trainable_state_dict(state, other, str(tmp_path))


def test_ctc_unit_rows_point_each_unit_at_the_token_it_is_heard_in():
    """Units 0-3 each spell one token; unit 4 is silence between words. After CTC, a word unit's row is nearest
    to its own token's embedding among all tokens of the transcripts."""
    from speechlm.model.unit_align import ctc_unit_rows

    g = torch.Generator().manual_seed(0)
    emb = torch.randn(40, 16, generator=g)  # [V, H]
    word = {0: 11, 1: 22, 2: 33, 3: 7}  # unit -> token
    units, tokens = [], []
    for i in range(60):
        seq = torch.randint(0, 4, (5,), generator=g).tolist()
        units.append([x for u in seq for x in (u, 4)])  # each word unit, then silence
        tokens.append([word[u] for u in seq])
    init = torch.randn(5, 16, generator=g)
    rows, report = ctc_unit_rows(units, tokens, emb, init, steps=200, lr=0.05, batch=16)
    assert rows.shape == (5, 16) and report["loss_end"] < report["loss_start"] / 2
    vocab = sorted(word.values())
    cos = torch.nn.functional.normalize(rows[:4], dim=-1) @ torch.nn.functional.normalize(emb[vocab], dim=-1).T
    assert [vocab[int(i)] for i in cos.argmax(1)] == [word[u] for u in range(4)]
    assert torch.allclose(rows.norm(dim=-1), emb.norm(dim=-1).mean().expand(5), rtol=1e-4)  # text rows' mean norm
    with pytest.raises(ValueError, match="no clip"):
        ctc_unit_rows([[1]], [[11, 22]], emb, init)  # more tokens than units: nothing CTC can learn from
