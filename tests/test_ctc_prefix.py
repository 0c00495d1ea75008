"""Joint CTC/LLM decoding (speechlm.model.ctc_prefix, model.ctc_decode_weight).

* the prefix and end scores against a brute-force sum over every CTC path, padded rows included;
* weight 1 with every token a candidate spells exactly what a peaked CTC posterior says, whatever the random LLM
  would write, in generate (greedy and beam search) and in the server's stream_generate;
* rows that are not transcripts pass through; weight 0 leaves generate as it was; bad settings are refused.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from speechlm.model.builders import speechlm_tiny
from speechlm.model.ctc_prefix import CTCPrefixScorer, token_classes


def _collapse(path, blank):
    return tuple(t for t, _ in itertools.groupby(path) if t != blank)


def _brute(logp: torch.Tensor, n: int, blank: int):
    """{labelling: probability} over every path through the first n frames of logp [A, C+1]."""
    probs: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(logp.shape[1]), repeat=n):
        p = math.exp(sum(float(logp[t, k]) for t, k in enumerate(path)))
        lab = _collapse(path, blank)
        probs[lab] = probs.get(lab, 0.0) + p
    return probs


def test_prefix_and_end_scores_match_brute_force():
    torch.manual_seed(0)
    a, c = 5, 3  # 3 tokens + blank
    logp = torch.log_softmax(torch.randn(2, a, c + 1), dim=-1)  # [R, A, C+1]
    lengths = torch.tensor([5, 3])  # the second row is padded past frame 3
    # LLM ids 0..3: id 3 is the end of turn (no CTC class), ids 0-2 are classes 0-2
    scorer = CTCPrefixScorer(logp, lengths, torch.tensor([0, 1, 2, -1]), eos_id=3, weight=0.5)
    for row in range(2):
        labellings = _brute(logp[row], int(lengths[row]), blank=c)
        for prefix in [(), (0,), (1,), (0, 0), (0, 1), (2, 1, 2), (1, 1, 1)]:
            starts = sum(p for lab, p in labellings.items() if lab[:len(prefix)] == prefix)
            exact = labellings.get(prefix, 0.0)
            assert math.exp(scorer.prefix_score(row, prefix)) == pytest.approx(starts, rel=1e-4, abs=1e-9), (row, prefix)
            assert math.exp(scorer.end_score(row, prefix)) == pytest.approx(exact, rel=1e-4, abs=1e-9), (row, prefix)


def test_a_spelled_token_scores_as_its_pieces():
    """With a head of frequent pieces (model.ctc_vocab_size), an LLM token outside its vocabulary extends the prefix
    by its pieces' classes one after the other: its scores equal those of the pieces' prefix, by brute force too."""
    torch.manual_seed(1)
    a, c = 5, 3
    logp = torch.log_softmax(torch.randn(1, a, c + 1), dim=-1)  # [R, A, C+1]
    spellings = {4: [0, 1], 5: [2, 2]}  # LLM ids 4 and 5 are spelled; 5 repeats a class (a blank must separate them)
    scorer = CTCPrefixScorer(logp, torch.tensor([5]), torch.tensor([0, 1, 2, -1, -1, -1, -1]), eos_id=3, weight=0.5,
                             spell=spellings.get)
    plain = CTCPrefixScorer(logp, torch.tensor([5]), torch.tensor([0, 1, 2, -1]), eos_id=3, weight=0.5)
    labellings = _brute(logp[0], 5, blank=c)
    for spelled, pieces in [((4,), (0, 1)), ((5,), (2, 2)), ((1, 4), (1, 0, 1)), ((4, 1), (0, 1, 1)), ((4, 5), (0, 1, 2, 2))]:
        assert scorer.prefix_score(0, spelled) == pytest.approx(plain.prefix_score(0, pieces), abs=1e-5)
        assert scorer.end_score(0, spelled) == pytest.approx(plain.end_score(0, pieces), abs=1e-5)
        exact = labellings.get(pieces, 0.0)
        assert math.exp(scorer.end_score(0, spelled)) == pytest.approx(exact, rel=1e-4, abs=1e-9)
    assert scorer.prefix_score(0, (6,)) == -math.inf  # no spelling: unsayable
    out = scorer.score([()], torch.zeros(1, 7))  # a spelled token is a candidate like any other (all 7 in the top 8)
    assert out[0, 4] > -math.inf and out[0, 6] == -math.inf


def test_token_classes_map_llm_ids_to_the_heads_vocabulary():
    assert token_classes(torch.tensor([2, 5, 7]), 9).tolist() == [-1, -1, 0, -1, -1, 1, -1, 2, -1]
    assert token_classes(torch.zeros(0, dtype=torch.long), 4).tolist() == [0, 1, 2, 3]


def _peaked_model(words: list[int], weight: float):
    """A tiny model whose CTC head says ``words`` (LLM ids) for every clip, at its own frame count; the random
    LLM never ends its turn by itself."""
    torch.manual_seed(0)
    model = speechlm_tiny(ctc_head=True, ctc_decode_weight=weight, ctc_decode_candidates=10_000).eval()
    with torch.no_grad():
        model.causal_lm.get_output_embeddings().weight[model.eos_id].fill_(0.0)
    v = model.ctc.vocab_size

    def head(x):  # [B, A, H] -> [B, A, V+1]: blank everywhere except one frame per word
        out = torch.full((*x.shape[:2], v + 1), -20.0)
        out[..., v] = 0.0
        for j, w in enumerate(words):
            out[:, 1 + 2 * j, v], out[:, 1 + 2 * j, w] = -20.0, 0.0
        return out

    model.ctc.forward = head
    return model


def test_weight_one_spells_what_the_ctc_says_in_every_decoder():
    from speechlm.inference.transcribe import stream_generate
    from speechlm.tasks import get_task

    words = [5, 9, 9, 17]  # a repeat on purpose: the CTC needs the blank between the two 9s
    model = _peaked_model(words, weight=1.0)
    waves = [torch.randn(16000 * s) for s in (1, 2)]
    asr = get_task("asr")
    prompts = [model.prompt_ids(asr.user_message(asr.instructions[0], model.audio_token))] * 2
    want = model.tokenizer.decode(words).strip()
    with torch.no_grad():
        plain_llm = model.generate(waves, prompts, max_new_tokens=12, transcript=False)  # not a transcript: no CTC
        assert all(t != want for t in plain_llm)
        for beams in (1, 3):
            assert model.generate(waves, prompts, max_new_tokens=12, num_beams=beams, transcript=True) == [want, want]
        toks = stream_generate(model, waves, prompts, [12, 12], transcript=[True, False])
    assert toks[0] == words and len(toks[1]) == 12  # the non-transcript row runs to its limit


def test_weight_zero_is_plain_decoding_and_bad_settings_are_refused():
    torch.manual_seed(0)
    model = speechlm_tiny(ctc_head=True).eval()
    waves = [torch.randn(16000)]
    with torch.no_grad():
        assert model.encode_for_decoding(waves, [True])[3] is None
        model.ctc_decode_weight = 0.3
        scorer = model.encode_for_decoding(waves, [True], num_beams=2)[3]
    assert scorer is not None and scorer.logp.shape[0] == 1 and scorer.beams == 2 and scorer.active.tolist() == [True]
    with pytest.raises(ValueError, match="needs a CTC head"):
        speechlm_tiny(ctc_decode_weight=0.3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        speechlm_tiny(ctc_head=True, ctc_decode_weight=1.5)
    with pytest.raises(ValueError, match="candidate"):
        CTCPrefixScorer(torch.zeros(1, 2, 3), torch.tensor([2]), torch.tensor([0, 1]), eos_id=1, weight=0.5, candidates=0)


def test_transcribe_and_eval_can_switch_joint_decoding_on_a_checkpoint():
    """`speechlm transcribe/eval --ctc-decode-weight W` sets it on the loaded model; -1 keeps the checkpoint's; a model
    without a CTC head refuses a weight above 0 with the flag's name."""
    from speechlm.inference.transcribe import Transcriber
    from speechlm.tasks import get_task

    tr = Transcriber(speechlm_tiny(ctc_head=True, ctc_decode_weight=0.2), get_task("asr"))
    tr.set_ctc_decode_weight(-1.0)
    assert tr.model.ctc_decode_weight == 0.2
    tr.set_ctc_decode_weight(0.6)
    assert tr.model.ctc_decode_weight == 0.6
    with pytest.raises(ValueError, match=r"--ctc-decode-weight must lie in \[0, 1\]"):
        tr.set_ctc_decode_weight(2.0)
    plain = Transcriber(speechlm_tiny(), get_task("asr"))
    plain.set_ctc_decode_weight(0.0)
    with pytest.raises(ValueError, match="--ctc-decode-weight above 0 needs a checkpoint trained with a CTC head"):
        plain.set_ctc_decode_weight(0.5)


def test_the_audio_proposes_words_the_llm_does_not_expect():
    """With one LLM candidate per step, weight 1 still spells a peaked CTC exactly: every token the CTC ranks first
    at some frame (or gives 0.05 there) is a candidate too, so the turn cannot end early for lack of the right word."""
    from speechlm.tasks import get_task

    words = [5, 9, 17]
    model = _peaked_model(words, weight=1.0)
    model.ctc_decode_candidates = 1
    asr = get_task("asr")
    waves = [torch.randn(16000)]
    prompts = [model.prompt_ids(asr.user_message(asr.instructions[0], model.audio_token))]
    with torch.no_grad():
        assert model.generate(waves, prompts, max_new_tokens=12, transcript=True) == [model.tokenizer.decode(words).strip()]
        scorer = model.encode_for_decoding(waves, [True])[3]
    assert set(words) <= set(scorer.audio_tokens[0])
