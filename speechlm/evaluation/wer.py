"""Text metrics for evaluating speech LMs: Whisper-normalized WER, CER and exact-match accuracy.

Both references and hypotheses always go through the *same* normalizer, so conventions such as
"zero" -> "0" or "Mr." -> "mister" cancel out instead of being counted as errors.

Each function takes ``(refs, hyps, normalize=True)`` and returns a flat ``dict`` of JSON-serializable numbers;
:mod:`speechlm.evaluation.metrics` registers them by key beside the per-task metrics.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Callable, Sequence

import jiwer

__all__ = [
    "NORMALIZER_NAME",
    "normalizer_name",
    "normalize_english",
    "wer_details",
    "utterance_wer",
    "cer",
    "cer_details",
    "accuracy",
]

MetricFn = Callable[..., dict[str, float | int]]


# --------------------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------------------


def _basic_normalize(text: str) -> str:
    """Last-resort normalizer: lowercase, drop punctuation/symbols, collapse whitespace.

    Only used when neither Whisper normalizer implementation can be imported; it does *not* expand
    contractions, spell numbers or apply British->American spelling, so WERs are not comparable to
    published Whisper-normalized numbers.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    # Keep apostrophes inside words ("don't") but drop every other punctuation/symbol character.
    text = "".join(" " if unicodedata.category(c)[0] in "PS" and c != "'" else c for c in text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def _load_normalizer() -> tuple[str, Callable[[str], str]]:
    """Pick the best English normalizer available offline, in order of fidelity to OpenAI Whisper."""
    try:
        # A verbatim port of openai/whisper's normalizer, shipping its British->American spelling map.
        from whisper_normalizer.english import EnglishTextNormalizer

        return "whisper_normalizer.EnglishTextNormalizer", EnglishTextNormalizer()
    except ImportError:
        pass
    try:
        # transformers ships the same code, but the spelling map normally comes from a Whisper
        # tokenizer's normalizer.json (a download); offline we run it with an empty map, so only
        # "colour"/"color"-style spelling differences are left un-normalized.
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer as HFNorm

        return "transformers.EnglishTextNormalizer(no spelling map)", HFNorm({})
    except ImportError:
        pass
    return "basic(lowercase, strip punctuation)", _basic_normalize


@functools.lru_cache(maxsize=1)
def _normalizer() -> tuple[str, Callable[[str], str]]:
    # Cached: building the Whisper normalizer reads a JSON spelling map and compiles many regexes.
    return _load_normalizer()


def normalizer_name() -> str:
    """Which normalizer :func:`normalize_english` uses (recorded in summaries so numbers are traceable)."""
    return _normalizer()[0]


NORMALIZER_NAME: str = normalizer_name()


def normalize_english(text: str | None) -> str:
    """Whisper's English text normalizer: lowercase, expand contractions/abbreviations, digits for
    spelled-out numbers ("zero" -> "0", "twenty one" -> "21"), drop fillers/bracketed noise tags,
    American spelling, single spaces.  ``None`` is treated as an empty string.
    """
    if not text:
        return ""
    return " ".join(_normalizer()[1](str(text)).split())


# --------------------------------------------------------------------------------------------------
# Word / character error rates
# --------------------------------------------------------------------------------------------------


def _prepare(refs: Sequence[str | None], hyps: Sequence[str | None], normalize: bool) -> tuple[list[str], list[str]]:
    """Validate lengths, map ``None`` to "", optionally normalize and collapse whitespace."""
    if isinstance(refs, str) or isinstance(hyps, str):
        # A bare string would be iterated per character and give silently wrong numbers.
        raise TypeError("refs and hyps must be sequences of strings, not a single string")
    if len(refs) != len(hyps):
        raise ValueError(f"refs and hyps differ in length: {len(refs)} vs {len(hyps)}")
    fn = normalize_english if normalize else (lambda s: " ".join((s or "").split()))
    return [fn(r) for r in refs], [fn(h) for h in hyps]


def _rate(errors: int, n_ref: int) -> float:
    """errors / reference length; with an empty reference, 0.0 if nothing was inserted else 1.0.

    Dividing insertions by zero would give inf and poison any average, so an all-empty reference
    set is reported like jiwer does (capped at 1.0); the raw ``insertions`` count stays exact.
    """
    if n_ref > 0:
        return errors / n_ref
    return 0.0 if errors == 0 else 1.0


def _edit_counts(
    refs: list[str], hyps: list[str], process: Callable, length: Callable[[str], int]
) -> dict[str, int]:
    """Sum S/D/I/hits over already-normalized pairs, handling empty sides ourselves.

    jiwer 3 raises on empty reference strings (jiwer 4 accepts them), so pairs with an empty side are
    counted here directly: an empty reference makes every hypothesis token an insertion, an empty
    hypothesis makes every reference token a deletion. Only non-empty pairs are aligned by jiwer.
    ``length`` counts tokens (words or characters) in a string.
    """
    s = d = i = h = 0
    full_refs: list[str] = []
    full_hyps: list[str] = []
    for r, y in zip(refs, hyps):
        if not r:
            i += length(y)
        elif not y:
            d += length(r)
        else:
            full_refs.append(r)
            full_hyps.append(y)
    if full_refs:
        out = process(full_refs, full_hyps)
        s += out.substitutions
        d += out.deletions
        i += out.insertions
        h += out.hits
    return {"substitutions": s, "deletions": d, "insertions": i, "hits": h}


def _n_words(text: str) -> int:
    return len(text.split())


def wer_details(
    refs: Sequence[str | None], hyps: Sequence[str | None], normalize: bool = True
) -> dict[str, float | int]:
    """Corpus-level WER (total errors / total reference words) with its error breakdown.

    Returns ``{"wer", "substitutions", "deletions", "insertions", "hits", "ref_words", "n"}`` where
    ``n`` is the number of utterances. Empty references (after normalization) are allowed: their
    hypothesis words count as insertions.
    """
    r_norm, h_norm = _prepare(refs, hyps, normalize)
    counts = _edit_counts(r_norm, h_norm, jiwer.process_words, _n_words)
    ref_words = sum(_n_words(r) for r in r_norm)
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    return {"wer": _rate(errors, ref_words), **counts, "ref_words": ref_words, "n": len(r_norm)}


def utterance_wer(ref: str | None, hyp: str | None, normalize: bool = True) -> float:
    """WER of a single utterance (see :func:`wer_details` for the empty-reference convention)."""
    return float(wer_details([ref], [hyp], normalize=normalize)["wer"])


def cer_details(
    refs: Sequence[str | None], hyps: Sequence[str | None], normalize: bool = True
) -> dict[str, float | int]:
    """Corpus-level character error rate (spaces count as characters, as in jiwer) with counts.

    Returns ``{"cer", "substitutions", "deletions", "insertions", "hits", "ref_chars", "n"}``.
    """
    r_norm, h_norm = _prepare(refs, hyps, normalize)
    counts = _edit_counts(r_norm, h_norm, jiwer.process_characters, len)
    ref_chars = sum(len(r) for r in r_norm)
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    return {"cer": _rate(errors, ref_chars), **counts, "ref_chars": ref_chars, "n": len(r_norm)}


def cer(refs: Sequence[str | None], hyps: Sequence[str | None], normalize: bool = True) -> float:
    """Corpus-level character error rate as a float (see :func:`cer_details`)."""
    return float(cer_details(refs, hyps, normalize=normalize)["cer"])


def accuracy(
    refs: Sequence[str | None], hyps: Sequence[str | None], normalize: bool = True
) -> dict[str, float | int]:
    """Exact-match accuracy after normalization (for label-style tasks, e.g. intent or emotion).

    Returns ``{"accuracy", "correct", "n"}``; accuracy of an empty list is 0.0.
    """
    r_norm, h_norm = _prepare(refs, hyps, normalize)
    correct = sum(r == h for r, h in zip(r_norm, h_norm))
    n = len(r_norm)
    return {"accuracy": correct / n if n else 0.0, "correct": correct, "n": n}
