"""CTC alignment on the LLM's own embeddings (speechlm.model.ctc) and its training stages.

* the loss against a brute-force sum over every alignment and against ``F.ctc_loss``, on tiny inputs;
* greedy decoding, blank dropping and run merging on hand-made posteriors;
* the head holds no copy of E, and the adapter's output RMS starts at E's RMS;
* a stage table CTC-only -> LM + CTC: the CTC stage skips the LLM, resume across the boundary is exact, and
  the training log carries the CTC loss, greedy-CTC WER and audio reliance.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from speechlm.config import load_recipe
from speechlm.model.builders import speechlm_tiny
from speechlm.model.ctc import compress, ctc_loss, greedy_decode, infeasible_share
from speechlm.tasks.mixture import parse_stages
from speechlm.training.loop import train


def _collapse(path, blank):
    out = [t for t, _ in itertools.groupby(path)]
    return [t for t in out if t != blank]


def test_ctc_loss_matches_brute_force_and_torch():
    torch.manual_seed(0)
    v1, blank = 4, 3  # tokens 0..2, blank 3
    logits = torch.randn(2, 5, v1)  # [B, A, V+1]
    lengths = torch.tensor([5, 4])
    targets = [[0, 1, 1], [2, 0]]
    got, n = ctc_loss(logits, lengths, targets, blank)
    assert n == 5
    logp = torch.log_softmax(logits, -1)
    brute = 0.0
    for b, tgt in enumerate(targets):
        total = 0.0
        for path in itertools.product(range(v1), repeat=int(lengths[b])):
            if _collapse(path, blank) == tgt:
                total += math.exp(sum(float(logp[b, t, k]) for t, k in enumerate(path)))
        brute += -math.log(total)
    assert abs(float(got) - brute) < 1e-4
    ref = torch.nn.functional.ctc_loss(logp.transpose(0, 1), torch.tensor([0, 1, 1, 2, 0]), lengths, torch.tensor([3, 2]),
                                       blank=blank, reduction="sum")
    assert torch.allclose(got, ref)
    # a clip with no transcript is skipped; an impossible one (more tokens than frames) adds nothing, not inf
    got2, n2 = ctc_loss(logits, torch.tensor([5, 1]), [[0, 1, 1], [2, 0]], blank)
    assert math.isfinite(float(got2)) and n2 == 5
    assert ctc_loss(logits, lengths, [[], []], blank)[1] == 0
    assert infeasible_share([5, 1, 3], [[0, 1, 1], [2, 0], [1, 1, 1]]) == pytest.approx(2 / 3)


def test_greedy_decode_and_compress_drop_blanks_and_merge_runs():
    blank = 3
    best = torch.tensor([[0, 0, 3, 1, 1, 3, 1, 2], [3, 3, 3, 3, 3, 3, 3, 3]])  # [B, A]
    logits = torch.nn.functional.one_hot(best, 4).float() * 5  # [B, A, V+1]
    logits[1, 5, blank] = 4.0  # clip 2 is all blank; frame 5 is the least blank
    lengths = torch.tensor([8, 8])
    assert greedy_decode(logits, lengths, blank) == [[0, 1, 1, 2], []]
    frames = torch.arange(2 * 8, dtype=torch.float32).view(2, 8, 1).repeat(1, 1, 3)  # [B, A, H], value = position
    out, out_len = compress(frames, logits, lengths, blank)
    assert out_len.tolist() == [4, 1]
    # runs: frames 0-1 (token 0), 3-4 (token 1), 6 (token 1 again after a blank), 7 (token 2)
    assert out[0, :, 0].tolist() == [0.5, 3.5, 6.0, 7.0]
    assert out[1, 0, 0].item() == 8 + 5
    # lengths are respected: frames past a clip's end never count
    out, out_len = compress(frames, logits, torch.tensor([2, 8]), blank)
    assert out_len.tolist() == [1, 1] and out[0, 0, 0].item() == 0.5


def test_head_scores_against_the_llm_embeddings_without_copying_them():
    model = speechlm_tiny(ctc_head=True, adapter_out_norm=True)
    head = model.ctc
    emb = model.causal_lm.get_input_embeddings()
    assert set(head.state_dict()) == {"blank", "log_scale", "vocab"} and head.vocab.numel() == 0
    assert head.blank_id == emb.weight.shape[0]
    x = emb.weight[:3][None].detach()  # [1, 3, H]: frames that ARE token embeddings 0, 1, 2
    logits = head(x)
    assert logits.shape == (1, 3, emb.weight.shape[0] + 1)
    assert logits[0].argmax(-1).tolist() == [0, 1, 2]
    rms = float(emb.weight.pow(2).mean().sqrt())
    assert float(model.adapter.out_norm.weight.detach().mean()) == pytest.approx(rms)
    audio, _ = model.adapt([torch.randn(16000)])
    assert float(audio.pow(2).mean().sqrt()) == pytest.approx(rms, rel=0.05)
    assert {"ctc.blank", "ctc.log_scale"} <= model.trainable_names


def test_stage_table_takes_loss_weights():
    st = parse_stages([{"steps": 2, "tasks": ["asr"], "trainable": "adapter", "lm": 0, "ctc": 1},
                       {"steps": 3, "tasks": ["asr"], "ctc": 0.3}], 5)
    assert (st[0].lm, st[0].ctc, st[1].lm, st[1].ctc) == (0.0, 1.0, 1.0, 0.3)
    with pytest.raises(ValueError, match=r"\[0\]: lm is 0"):
        parse_stages([{"steps": 5, "tasks": ["asr"], "lm": 0}], 5)
    with pytest.raises(ValueError, match=r"\[0\].ctc: expected a loss weight"):
        parse_stages([{"steps": 5, "tasks": ["asr"], "ctc": -1}], 5)


STAGES = '[{"steps": 3, "tasks": ["asr"], "trainable": "adapter", "lm": 0, "ctc": 1}, {"steps": 4, "tasks": ["asr"], "ctc": 0.3}]'


def _log(run):
    return [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]


def test_ctc_stage_then_lm_resumes_exactly_and_logs_diagnostics(tone_manifest, tmp_path, monkeypatch):
    common = [f"data.train_manifest={tone_manifest}", f"data.val_manifest={tone_manifest}", "model.ctc_head=true",
              "model.adapter_out_norm=true", "train.max_steps=7", "train.save_every=2", "train.log_every=1",
              "train.eval_every=3", f"train.stages={STAGES}"]
    full = tmp_path / "full"
    calls = {"decoder": 0}
    model_cls = type(speechlm_tiny())
    original = model_cls._lm_loss

    def counting(self, *a, **k):
        calls["decoder"] += 1
        return original(self, *a, **k)

    monkeypatch.setattr(model_cls, "_lm_loss", counting)
    train(load_recipe("tiny", common + [f"train.out_dir={full}"]), progress=False)
    log = _log(full)
    tr = {r["step"]: r for r in log if r["split"] == "train"}
    assert [tr[s]["stage"] for s in range(1, 8)] == [0, 0, 0, 1, 1, 1, 1]
    assert all("ctc_loss" in tr[s] for s in range(1, 8))
    # CTC-only steps: the loss IS the CTC loss per transcript token; LM+CTC steps: it differs
    assert all(abs(tr[s]["loss"] - tr[s]["ctc_loss"]) < 1e-6 for s in (1, 2, 3))
    val = [r for r in log if r["split"] == "val"]
    assert val and {"loss", "loss_shuffled", "audio_reliance", "ctc_wer"} <= set(val[-1])
    # resume from inside the CTC stage and at the boundary: the same losses as the uninterrupted run
    n_train_calls = calls["decoder"]
    assert n_train_calls > 0
    for ckpt in ("step-000002", "step-000003"):
        run = tmp_path / f"resume-{ckpt}"
        train(load_recipe("tiny", common + [f"train.out_dir={run}"]), resume=str(full / "checkpoints" / ckpt), progress=False)
        got = {r["step"]: r for r in _log(run) if r["split"] == "train"}
        for step, rec in got.items():
            assert abs(rec["loss"] - tr[step]["loss"]) < 1e-5, (ckpt, step)


def test_ctc_only_stage_never_runs_the_llm(tone_manifest, tmp_path, monkeypatch):
    model_cls = type(speechlm_tiny())

    def boom(self, *a, **k):
        raise AssertionError("the LLM ran in a CTC-only stage")

    monkeypatch.setattr(model_cls, "_lm_loss", boom)
    stages = '[{"steps": 3, "tasks": ["asr"], "trainable": "adapter", "lm": 0, "ctc": 1}]'
    train(load_recipe("tiny", [f"data.train_manifest={tone_manifest}", "model.ctc_head=true", "train.max_steps=3",
                               f"train.out_dir={tmp_path / 'r'}", f"train.stages={stages}"]), progress=False)


def test_compressed_audio_trains_and_transcribes(tone_manifest, tmp_path):
    from speechlm.checkpoint import load_checkpoint
    from speechlm.inference.transcribe import Transcriber
    from speechlm.tasks import get_task

    run = tmp_path / "c"
    train(load_recipe("tiny", [f"data.train_manifest={tone_manifest}", "model.ctc_head=true", "model.compress_audio=true",
                               "train.ctc_weight=0.3", "train.max_steps=3", f"train.out_dir={run}"]), progress=False)
    model, cfg, _ = load_checkpoint(run)
    assert model.compress_audio and model.ctc is not None
    out = Transcriber(model, get_task("asr"), max_new_tokens=4)([torch.randn(8000), torch.randn(16000)])
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    with pytest.raises(ValueError, match="needs model.ctc_head"):
        train(load_recipe("tiny", [f"data.train_manifest={tone_manifest}", "train.ctc_weight=0.3", "train.max_steps=1",
                                   f"train.out_dir={tmp_path / 'x'}"]), progress=False)


def test_restricted_vocabulary_scores_only_training_tokens_and_is_saved(tone_manifest, tmp_path):
    from speechlm.checkpoint import load_checkpoint
    from speechlm.inference.transcribe import CTCTranscriber

    model = speechlm_tiny(ctc_head=True)
    head = model.ctc
    head.set_vocab([7, 3, 3, 11])
    assert head.vocab.tolist() == [3, 7, 11] and head.blank_id == 3
    assert head.to_classes([11, 3]) == [2, 0] and head.to_tokens([2, 0]) == [11, 3]
    with pytest.raises(ValueError, match="outside the head's vocabulary"):
        head.to_classes([5])
    emb = model.causal_lm.get_input_embeddings().weight.detach()
    logits = head(emb[[11, 3]][None])  # frames that are token embeddings 11 and 3
    assert logits.shape == (1, 2, 4) and logits[0].argmax(-1).tolist() == [2, 0]
    run = tmp_path / "v"
    train(load_recipe("tiny", [f"data.train_manifest={tone_manifest}", "model.ctc_head=true", "train.ctc_weight=1",
                               "train.max_steps=2", f"train.out_dir={run}"]), progress=False)
    loaded, _, _ = load_checkpoint(run)
    words = ["zero", "one", "two", "three", "four", "five"]
    expected = sorted({t for w in words for t in loaded.formatter.ctc_ids(w)})
    assert loaded.ctc.vocab.tolist() == expected
    assert len(CTCTranscriber(loaded)([torch.randn(8000).numpy()])) == 1


def test_stage_schedule_restarts_warmup_and_cosine_per_stage():
    from speechlm.training.loop import lr_lambda

    f = lr_lambda(2, 10, floor=0.1, stage_steps=[4, 6])
    assert [f(i) for i in (0, 1, 4, 5)] == [0.5, 1.0, 0.5, 1.0]  # stage 2 starts its own warm-up at step 4
    assert f(9) < f(6) and f(9) >= 0.1
    g = lr_lambda(2, 10, floor=0.1)
    assert g(4) < 1.0 and g(5) < g(4)  # one schedule: no restart


def test_ctc_demo_path_at_tiny_size(tmp_path):
    """`speechlm demo --recipe tiny-ctc`: the shipped demo's code path (broad augmented text, cached features,
    CTC-only stage, LM + CTC, joint CTC/LLM decoding, the greedy-CTC and LLM-alone systems beside the others) with
    random tiny models."""
    from speechlm.cli import main
    from speechlm.corpora.synth import available_voices

    try:
        available_voices()
    except RuntimeError:
        pytest.skip("espeak-ng/flite not installed")
    out = tmp_path / "demo"
    assert main(["demo", "--recipe", "tiny-ctc", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"speechlm (trained)", "speechlm greedy CTC (no LLM)", "whisper tiny.en decoder",
            "speechlm (trained), LLM alone (ctc_decode_weight 0)"} <= set(summary["by_system"])
    demo = json.loads((out / "demo.json").read_text())
    assert {"data_min", "features_min", "train_min", "eval_min"} <= set(demo)
    train_lines = [json.loads(x) for x in (out / "data" / "features" / "manifest.jsonl").read_text().splitlines()]
    assert train_lines and all("features" in x for x in train_lines)
    log = _log(out)
    assert {r["stage"] for r in log if r["split"] == "train"} == {0, 1}
    assert any("ctc_wer" in r for r in log if r["split"] == "val")


def test_posterior_input_feeds_the_llm_mixtures_of_its_own_embeddings(tone_manifest, tmp_path):
    model = speechlm_tiny(ctc_head=True, posterior_input=True)
    emb = model.causal_lm.get_input_embeddings().weight.detach()
    model.ctc.log_scale.data.fill_(8.0)  # a sharp posterior: each frame is close to its nearest token embedding
    audio = emb[[5, 9]][None]  # [1, 2, H]: frames that are token embeddings 5 and 9
    out, lengths = model.llm_audio(audio, torch.tensor([2]))
    assert lengths.tolist() == [2]
    probs = torch.softmax(model.ctc(audio)[..., :-1], -1)
    torch.testing.assert_close(out, probs @ emb)
    assert torch.allclose(out[0, 0], emb[5], atol=1e-2) and torch.allclose(out[0, 1], emb[9], atol=1e-2)
    run = tmp_path / "p"
    train(load_recipe("tiny", [f"data.train_manifest={tone_manifest}", "model.ctc_head=true", "model.posterior_input=true",
                               "model.compress_audio=true", "train.ctc_weight=0.3", "train.max_steps=2",
                               f"train.out_dir={run}"]), progress=False)
    from speechlm.checkpoint import load_checkpoint

    loaded, _, _ = load_checkpoint(run)
    assert loaded.posterior_input and loaded.compress_audio


def test_ctc_length_budget_caps_transcripts_only():
    """model.ctc_length_budget: a transcript ends its turn at budget x its clip's greedy CTC token count + 1 (at least
    2), in generate (greedy and beam search) and in the server's stream_generate; other answers are never capped,
    and the logits processor lets a capped row only end its turn."""
    from speechlm.inference.transcribe import stream_generate
    from speechlm.model.speechlm import EndTurnAtCap
    from speechlm.tasks import get_task

    scores = torch.zeros(3, 10)
    out = EndTurnAtCap(torch.tensor([1, 2, 5]), eos_id=7)(torch.zeros(3, 2, dtype=torch.long), scores)
    assert out[:2].argmax(-1).tolist() == [7, 7] and torch.isinf(out[:2]).sum() == 18 and torch.equal(out[2], scores[2])

    torch.manual_seed(0)
    model = speechlm_tiny(ctc_head=True, ctc_length_budget=0.5).eval()
    with torch.no_grad():  # an EOS the random LLM never picks, so every uncapped answer runs to its limit
        model.causal_lm.get_output_embeddings().weight[model.eos_id].fill_(0.0)
        model.ctc.log_scale.fill_(3.0)
    waves = [torch.randn(16000 * s) for s in (1, 2, 3)]
    asr, ser = get_task("asr"), get_task("ser")
    prompts = [model.prompt_ids(asr.user_message(asr.instructions[0], model.audio_token))] * 3
    with torch.no_grad():
        _, _, caps = model.encode_for_answers(waves, [True, True, False])
        n_ctc = [len(t) for t in greedy_decode(model.ctc(model.adapt(waves)[0]), model.adapt(waves)[1], model.ctc.blank_id)]
    assert caps[:2] == [max(2, math.ceil(0.5 * n) + 1) for n in n_ctc[:2]] and caps[2] is None
    assert max(caps[:2]) < 20, "the test needs caps below the plain limit"

    plain_generate, seen = model.causal_lm.generate, []

    def spy(**kw):  # the generated ids: answer tokens before the first end of turn, per row
        out = plain_generate(**kw)
        seen.append([next((i for i, t in enumerate(row) if t == model.eos_id), len(row)) for row in out.tolist()])
        return out

    model.causal_lm.generate = spy
    all_caps = caps[:2] + [max(2, math.ceil(0.5 * n_ctc[2]) + 1)]
    with torch.no_grad():
        for beams in (1, 2):
            model.generate(waves, prompts, max_new_tokens=20, num_beams=beams, transcript=True)
            assert all(n <= c for n, c in zip(seen[-1], all_caps)), (seen[-1], all_caps)
        plain = model.generate(waves, prompts, max_new_tokens=20, transcript=False)
        assert seen[-1] == [20, 20, 20]  # uncapped: runs to the limit
        model.ctc_length_budget = 0.0
        assert model.generate(waves, prompts, max_new_tokens=20, transcript=True) == plain  # 0: off
        model.ctc_length_budget = 0.5
        toks = stream_generate(model, waves, prompts, [20, 20, 20], transcript=[True, True, False])
    assert [len(t) for t in toks[:2]] == caps[:2] and len(toks[2]) == 20
    assert ser.target != "text"


def test_head_scores_scaled_cosine_and_leaves_E_without_gradient():
    """logits = scale x cos(frame, [E rows of the vocabulary; blank]); the blank, the scale and the frames get the
    gradients of that formula, and E (frozen, scored apart from the blank to save a [C+1, H] gradient) gets none."""
    from speechlm.model.ctc import EmbeddingCTCHead

    torch.manual_seed(0)
    emb = torch.nn.Embedding(30, 8)
    head = EmbeddingCTCHead(emb)
    head.set_vocab([3, 7, 11, 29])
    x = torch.randn(2, 5, 8, requires_grad=True)
    logits = head(x)  # [B, A, C+1]
    table = torch.cat([emb.weight[[3, 7, 11, 29]].detach(), head.blank[None]])  # [C+1, H]
    ref = head.log_scale.exp() * torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(table, dim=-1).T
    assert logits.shape == (2, 5, 5)
    torch.testing.assert_close(logits, ref)
    w = torch.randn_like(logits)
    got = torch.autograd.grad((logits * w).sum(), [x, head.blank, head.log_scale])
    want = torch.autograd.grad((ref * w).sum(), [x, head.blank, head.log_scale])
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r)
    (head(x).sum()).backward()
    assert emb.weight.grad is None


def test_frequent_vocabulary_spells_the_other_tokens_with_its_pieces():
    """`model.ctc_vocab_size`: the N most frequent training tokens plus one-character tokens; a target token outside
    them becomes its pieces (longest first), whose strings join to the token's own, and decoding them gives the text."""
    from speechlm.backbones.llm import build_tiny_tokenizer
    from speechlm.model.ctc import EmbeddingCTCHead, frequent_vocab

    tok = build_tiny_tokenizer(600)
    texts = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat the log the cat"]
    targets = [tok(t, add_special_tokens=False).input_ids for t in texts]
    vocab = frequent_vocab(targets, 4, tok)
    singles = {i for p, i in tok.get_vocab().items() if len(p) == 1}
    assert singles <= vocab and len(vocab - singles) <= 4  # 4 frequent tokens (some may be single characters)
    head = EmbeddingCTCHead(torch.nn.Embedding(len(tok), 8), tokenizer=tok)
    head.set_vocab(vocab)
    for text, ids in zip(texts, targets):
        classes = head.to_classes(ids)
        assert len(classes) >= len(ids) and max(classes) < head.vocab_size
        pieces = head.to_tokens(classes)
        assert tok.decode(pieces) == text  # the spelling says the same thing
        for t in ids:  # each token's spelling is longest-match over the vocabulary and spells its string
            spelled = [t] if t in vocab else head.spell(t)
            assert "".join(tok.convert_ids_to_tokens(spelled)) == tok.convert_ids_to_tokens(t)
    assert head.spell(tok.eos_token_id) is None  # special tokens (the end of turn) are never spelled
    without = EmbeddingCTCHead(torch.nn.Embedding(len(tok), 8))  # no tokenizer: a token outside still fails, named
    without.set_vocab(vocab)
    outside = next(t for ids in targets for t in ids if t not in vocab)
    with pytest.raises(ValueError, match=f"token {outside} is outside the head's vocabulary"):
        without.to_classes([outside])


def test_training_with_frequent_pieces_saves_them_and_decodes_with_spellings(tone_manifest, tmp_path):
    """`model.ctc_vocab_size`: the loop keeps the N most frequent transcript tokens plus one-character ones, the
    checkpoint holds that vocabulary, and a reloaded model spells in joint decoding (greedy CTC reads the pieces)."""
    from speechlm.checkpoint import load_checkpoint
    from speechlm.config import load_recipe
    from speechlm.inference.transcribe import CTCTranscriber, Transcriber
    from speechlm.tasks import get_task
    from speechlm.training.loop import train

    cfg = load_recipe("tiny-ctc", [f"data.train_manifest={tone_manifest}", f"train.out_dir={tmp_path / 'run'}",
                                   "model.ctc_vocab_size=2", "model.train_encoder_layers=0",
                                   "train.stages=[{steps: 2, tasks: [asr], trainable: adapter, lm: 0, ctc: 1}, "
                                   "{steps: 1, tasks: [asr], trainable: [adapter, lora], ctc: 0.3}]", "train.max_steps=3"])
    ckpt = train(cfg, progress=False)
    model, _, _ = load_checkpoint(ckpt)
    from speechlm.export.hf import ExportError, check_checkpoint

    with pytest.raises(ExportError, match="ctc_vocab_size=2"):  # the exported decoder does not spell yet: refused
        check_checkpoint(ckpt)
    tok = model.tokenizer
    singles = {i for p, i in tok.get_vocab().items() if len(p) == 1}
    vocab = set(model.ctc.vocab.tolist())
    assert singles <= vocab and len(vocab - singles) <= 2 and model.ctc.spells
    words = {"zero", "one", "two", "three", "four", "five"}
    spelled = [t for w in words for t in tok(w, add_special_tokens=False).input_ids if t not in vocab]
    assert spelled and all(model.ctc.spell_classes(t) for t in spelled)  # what training spelled, decoding can too
    waves = [0.1 * torch.randn(8000).numpy()]
    assert isinstance(CTCTranscriber(model)(waves)[0], str)
    assert isinstance(Transcriber(model, get_task("asr"), max_new_tokens=4)(waves)[0], str)  # joint, with spellings
