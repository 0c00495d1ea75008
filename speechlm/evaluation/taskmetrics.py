"""Metrics for multi-task evaluation: closed-set labels, timestamped ASR, and free-text answers.

Every entry of :data:`TASK_METRICS` has the same shape as :data:`speechlm.evaluation.metrics.METRICS`:
``fn(refs, hyps, normalize=True, **kw) -> dict``, where the dict always holds

* the registry key itself, as the *headline* number (so report tables keyed by metric name work), and
* ``"n"``, the number of (ref, hyp) pairs,

plus the breakdown. Most values are plain numbers; ``accuracy_f1`` also returns its label order,
per-class scores and confusion matrix as nested lists/dicts (JSON-able; report tables skip them).
A value that is undefined (e.g. a timestamp error with no matched word) is ``None``, never NaN.

=================  ========================================================  ===============
key                headline value                                            higher better?
=================  ========================================================  ===============
``accuracy_f1``    macro-F1 over the label set (``accuracy`` also returned)  yes
``timestamps``     mean word-boundary error in ms (``wer`` also returned)     no
``token_f1``       SQuAD-style token F1, mean over pairs                     yes
``rouge_l``        ROUGE-L F1 (LCS-based), mean over pairs                   yes
``keyword_f1``     set F1 over comma-separated keywords, mean over pairs     yes
=================  ========================================================  ===============

Timestamp format
----------------
Word-timestamped transcripts (targets and model outputs) are written as whitespace-separated
``word<start,end>`` tokens, times in seconds with 2 decimals (:func:`format_timestamps`)::

    hello<0.10,0.42> world<0.50,0.91>

:func:`parse_timestamps` is lenient with model output: spaces around ``<``, ``,`` and ``>`` are
allowed, a word without a (valid) stamp is kept with ``None`` times (it still counts for WER, not for
the boundary error), and a stray stamp without a word is dropped.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Sequence

import jiwer

from speechlm.evaluation.wer import normalize_english as _normalize_english



def normalize_english(text: Any) -> str:
    """Whisper's English normalizer (:func:`speechlm.evaluation.wer.normalize_english`)."""
    return _normalize_english(text)

__all__ = [
    "OTHER",
    "TASK_METRICS",
    "TASK_HIGHER_IS_BETTER",
    "normalize_label",
    "accuracy_f1",
    "format_timestamps",
    "parse_timestamps",
    "timestamps",
    "token_f1",
    "rouge_l",
    "keyword_f1",
    "lcs_length",
]

OTHER = "(other)"
"""Column name in ``accuracy_f1``'s confusion matrix for hypotheses outside the label set (parenthesised
so it cannot collide with a real label called "other")."""


def _check_pairs(refs: Sequence[Any], hyps: Sequence[Any]) -> None:
    if isinstance(refs, str) or isinstance(hyps, str):
        raise TypeError("refs and hyps must be sequences of strings, not a single string")
    if len(refs) != len(hyps):
        raise ValueError(f"refs and hyps differ in length: {len(refs)} vs {len(hyps)}")


# --------------------------------------------------------------------------------------------------
# Closed-set labels: accuracy, macro-F1, confusion
# --------------------------------------------------------------------------------------------------

# Punctuation an LLM tends to wrap a label in ("Happy.", '"neutral"'); stripped only at the edges.
_EDGE_PUNCT = ".,;:!?\"'`()[]{}<>*"


def normalize_label(text: Any, normalize: bool = True) -> str:
    """Label comparison key: whitespace collapsed, case-folded; with ``normalize`` also edge punctuation
    stripped (``" Happy. "`` -> ``"happy"``). ``None`` -> ``""``."""
    s = " ".join(str(text if text is not None else "").split()).casefold()
    if normalize:
        s = " ".join(s.strip(_EDGE_PUNCT + " ").split())
    return s


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f


def accuracy_f1(
    refs: Sequence[str | None],
    hyps: Sequence[str | None],
    normalize: bool = True,
    labels: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Closed-set classification scores.

    Labels are compared with :func:`normalize_label` (case-insensitive, stripped). The label set is
    ``labels`` in the given order (display names as given), else the sorted distinct references; a
    reference outside a given set is appended to it (counted in ``unknown_refs``). A hypothesis outside
    the set is wrong and tallied in the :data:`OTHER` column (``n_other``); so is an empty hypothesis.

    Returns ``{"accuracy_f1": macro_f1, "accuracy", "macro_f1", "correct", "n", "n_other",
    "unknown_refs", "empty_refs", "labels": [L names], "per_class": {label: {"precision", "recall", "f1", "support"}},
    "confusion": L rows (reference) x L+1 columns (hypothesis: labels..., OTHER), "confusion_labels"}``.

    Macro-F1 averages per-class F1 over the labels that occur in the references or the hypotheses
    (a label of a given set that never occurs would add an arbitrary 0 or 1). An empty reference has no
    row: it counts as wrong (``empty_refs``). An empty input gives 0.0.
    """
    _check_pairs(refs, hyps)
    labels = None if labels is None else list(labels)
    names: dict[str, str] = {}  # key -> display name, in label order
    for lab in labels or ():
        names.setdefault(normalize_label(lab, normalize), str(lab).strip())
    names.pop("", None)
    r_keys = [normalize_label(r, normalize) for r in refs]
    h_keys = [normalize_label(h, normalize) for h in hyps]
    if labels is None:
        for k in sorted(set(r_keys) - {""}):
            names[k] = k
    unknown_refs = sum(1 for k in r_keys if k and k not in names)  # references outside a given set
    for k in r_keys:
        if k and k not in names:
            names[k] = k
    keys = list(names)
    index = {k: i for i, k in enumerate(keys)}
    n_lab = len(keys)
    confusion = [[0] * (n_lab + 1) for _ in range(n_lab)]
    correct = n_other = 0
    empty_refs = 0
    for rk, hk in zip(r_keys, h_keys):
        j = index.get(hk, n_lab)
        n_other += j == n_lab
        if rk not in index:  # empty reference: no row to put it in, counts as wrong
            empty_refs += 1
            continue
        confusion[index[rk]][j] += 1
        correct += rk == hk
    per_class: dict[str, dict[str, float | int]] = {}
    f1s = []
    for i, k in enumerate(keys):
        tp = confusion[i][i]
        support = sum(confusion[i])
        predicted = sum(row[i] for row in confusion)
        p, r, f = _prf(tp, predicted, support)
        per_class[names[k]] = {"precision": p, "recall": r, "f1": f, "support": support}
        if support or predicted:
            f1s.append(f)
    n = len(r_keys)
    macro = sum(f1s) / len(f1s) if f1s else 0.0
    return {
        "accuracy_f1": macro,
        "accuracy": correct / n if n else 0.0,
        "macro_f1": macro,
        "correct": correct,
        "n": n,
        "n_other": n_other,
        "unknown_refs": unknown_refs,
        "empty_refs": empty_refs,
        "labels": [names[k] for k in keys],
        "per_class": per_class,
        "confusion": confusion,
        "confusion_labels": [names[k] for k in keys] + [OTHER],
    }


# --------------------------------------------------------------------------------------------------
# Word timestamps
# --------------------------------------------------------------------------------------------------

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
# A word (no whitespace or angle brackets) optionally followed by <...>; or a stray <...> on its own.
_TOKEN = re.compile(r"(?P<word>[^\s<>]+)(?:\s*<(?P<stamp>[^<>]*)>)?|<[^<>]*>?")
_STAMP = re.compile(rf"^\s*({_NUM})\s*,\s*({_NUM})\s*$")

WordStamp = tuple[str, "float | None", "float | None"]


def format_timestamps(words: Iterable[Any], decimals: int = 2) -> str:
    """Write words with times as ``hello<0.10,0.42> world<0.50,0.91>``.

    ``words``: ``(word, start, end)`` tuples or mappings with ``word``/``start``/``end`` (seconds; the
    shape Whisper / forced aligners give). ``<>`` are removed from a word and it is stripped (they would
    break parsing); inner whitespace becomes ``_`` (``"New York"`` -> ``New_York``); an empty word is skipped. Raises ``ValueError`` for a missing, negative,
    non-finite or reversed (end < start) time, naming the word.
    """
    out = []
    for w in words:
        if isinstance(w, Mapping):
            word, start, end = w.get("word", w.get("text")), w.get("start"), w.get("end")
        else:
            word, start, end = w
        word = re.sub(r"\s+", "_", re.sub(r"[<>]+", "", str(word or "")).strip())
        if not word:
            continue
        try:
            s, e = float(start), float(end)
        except (TypeError, ValueError):
            raise ValueError(f"word {word!r}: start/end must be numbers of seconds, got {start!r}, {end!r}") from None
        if not (math.isfinite(s) and math.isfinite(e)) or s < 0 or e < s:
            raise ValueError(f"word {word!r}: invalid times start={start!r} end={end!r} (need 0 <= start <= end)")
        out.append(f"{word}<{s:.{decimals}f},{e:.{decimals}f}>")
    return " ".join(out)


def parse_timestamps(text: str | None) -> list[WordStamp]:
    """Parse ``word<start,end>`` tokens into ``[(word, start, end), ...]`` (seconds).

    Lenient, for model output: a word without a valid stamp (missing, malformed, end < start) gets
    ``(word, None, None)``; a ``<...>`` with no word before it is ignored; ``None``/"" gives ``[]``.
    """
    out: list[WordStamp] = []
    for m in _TOKEN.finditer(text or ""):
        word = m.group("word")
        if word is None:
            continue  # stray stamp
        start = end = None
        stamp = m.group("stamp")
        if stamp is not None:
            sm = _STAMP.match(stamp)
            if sm:
                s, e = float(sm.group(1)), float(sm.group(2))
                if math.isfinite(s) and math.isfinite(e) and 0 <= s <= e:
                    start, end = s, e
        out.append((word, start, end))
    return out


def _norm_words(stamped: list[WordStamp], normalize: bool) -> list[WordStamp]:
    """Normalize word by word so each word keeps its times: Whisper-normalize each word (fillers such
    as "um" vanish, "Mr." -> "mister"); a word that becomes several tokens ("don't" -> "do not") stays one
    token, joined with "_". Without ``normalize``, words are kept verbatim."""
    if not normalize:
        return stamped
    out = []
    for w, s, e in stamped:
        toks = normalize_english(w).split()
        if toks:
            out.append(("_".join(toks), s, e))
    return out


def timestamps(refs: Sequence[str | None], hyps: Sequence[str | None], normalize: bool = True) -> dict[str, Any]:
    """WER of timestamped transcripts plus word-boundary error of the matched words.

    Both sides are parsed with :func:`parse_timestamps` and normalized word by word (see
    :func:`_norm_words`; numbers spelled over several words are therefore not merged as in
    :func:`speechlm.evaluation.metrics.wer_details`, but identically on both sides). Words are aligned with jiwer's
    minimum-edit alignment; only *matched* words (hits, not substitutions) that carry a stamp on both
    sides count for the boundary error: per word ``(|start_ref - start_hyp| + |end_ref - end_hyp|) / 2``,
    averaged over words, in milliseconds.

    Returns ``{"timestamps": boundary_error_ms, "wer", "substitutions", "deletions", "insertions", "hits",
    "ref_words", "boundary_error_ms", "start_error_ms", "end_error_ms", "n_matched",
    "unstamped_hyp_words", "n"}``; the three errors are ``None`` when ``n_matched`` is 0.
    """
    _check_pairs(refs, hyps)
    r_words = [_norm_words(parse_timestamps(r), normalize) for r in refs]
    h_words = [_norm_words(parse_timestamps(h), normalize) for h in hyps]
    sub = dele = ins = hits = 0
    pairs: list[tuple[WordStamp, WordStamp]] = []
    full: list[int] = []
    for k, (r, h) in enumerate(zip(r_words, h_words)):
        if not r:
            ins += len(h)
        elif not h:
            dele += len(r)
        else:
            full.append(k)
    if full:
        out = jiwer.process_words([" ".join(w for w, _, _ in r_words[k]) for k in full],
                                  [" ".join(w for w, _, _ in h_words[k]) for k in full])
        sub, dele, ins, hits = sub + out.substitutions, dele + out.deletions, ins + out.insertions, out.hits
        for k, chunks in zip(full, out.alignments):
            for c in chunks:
                if c.type == "equal":
                    for off in range(c.ref_end_idx - c.ref_start_idx):
                        pairs.append((r_words[k][c.ref_start_idx + off], h_words[k][c.hyp_start_idx + off]))
    ref_words = sum(len(r) for r in r_words)
    errors = sub + dele + ins
    wer = errors / ref_words if ref_words else (0.0 if errors == 0 else 1.0)
    d_start, d_end = [], []
    for (_, rs, re_), (_, hs, he) in pairs:
        if None not in (rs, re_, hs, he):
            d_start.append(abs(rs - hs))
            d_end.append(abs(re_ - he))
    m = len(d_start)
    start_ms = 1000 * sum(d_start) / m if m else None
    end_ms = 1000 * sum(d_end) / m if m else None
    boundary = (start_ms + end_ms) / 2 if m else None
    return {
        "timestamps": boundary,
        "wer": wer,
        "substitutions": sub,
        "deletions": dele,
        "insertions": ins,
        "hits": hits,
        "ref_words": ref_words,
        "boundary_error_ms": boundary,
        "start_error_ms": start_ms,
        "end_error_ms": end_ms,
        "n_matched": m,
        "unstamped_hyp_words": sum(1 for h in h_words for _, s, _ in h if s is None),
        "n": len(refs),
    }


# --------------------------------------------------------------------------------------------------
# Free-text answers: token F1, ROUGE-L, keywords
# --------------------------------------------------------------------------------------------------

_ARTICLES = frozenset({"a", "an", "the"})


def _answer_tokens(text: str | None, normalize: bool, drop_articles: bool) -> list[str]:
    if not normalize:
        return (text or "").split()
    toks = normalize_english(text).split()
    return [t for t in toks if t not in _ARTICLES] if drop_articles else toks


def _f1_counts(ref: list[str], hyp: list[str]) -> tuple[float, float, float]:
    """(precision, recall, F1) of bag-of-tokens overlap; both empty -> (1, 1, 1), one empty -> 0."""
    if not ref or not hyp:
        v = float(not ref and not hyp)
        return v, v, v
    common = sum((Counter(ref) & Counter(hyp)).values())
    return _prf(common, len(hyp), len(ref))


def token_f1(refs: Sequence[str | None], hyps: Sequence[str | None], normalize: bool = True) -> dict[str, Any]:
    """SQuAD-style token F1 and exact match, averaged over pairs.

    Normalization (``normalize=True``): Whisper English normalizer (lowercase, no punctuation, numbers as
    digits), then the articles a/an/the are dropped, as in the SQuAD evaluation script. Tokens are
    compared as bags (multiset overlap). Both sides empty scores 1, one side empty 0.
    Returns ``{"token_f1", "precision", "recall", "exact_match", "n"}`` (0.0 for no pairs).
    """
    _check_pairs(refs, hyps)
    ps, rs, fs, em = [], [], [], 0
    for r, h in zip(refs, hyps):
        rt, ht = _answer_tokens(r, normalize, True), _answer_tokens(h, normalize, True)
        p, rc, f = _f1_counts(rt, ht)
        ps.append(p), rs.append(rc), fs.append(f)
        em += rt == ht
    n = len(fs)
    mean = (lambda xs: sum(xs) / n if n else 0.0)
    return {"token_f1": mean(fs), "precision": mean(ps), "recall": mean(rs), "exact_match": em / n if n else 0.0, "n": n}


def lcs_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a)*len(b)) time, O(len(b)) memory)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else (prev[j] if prev[j] >= cur[j - 1] else cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(refs: Sequence[str | None], hyps: Sequence[str | None], normalize: bool = True) -> dict[str, Any]:
    """Sentence-level ROUGE-L, averaged over pairs.

    With LCS the longest common token subsequence: precision = LCS/len(hyp), recall = LCS/len(ref),
    F = 2PR/(P+R) (beta = 1, as Google's ``rouge-score`` package; no stemming). Tokens: Whisper-normalized
    words (articles kept) with ``normalize``, else whitespace split. Both empty scores 1, one empty 0.
    Returns ``{"rouge_l", "rouge_l_precision", "rouge_l_recall", "n"}``.
    """
    _check_pairs(refs, hyps)
    ps, rs, fs = [], [], []
    for r, h in zip(refs, hyps):
        rt, ht = _answer_tokens(r, normalize, False), _answer_tokens(h, normalize, False)
        if not rt or not ht:
            v = float(not rt and not ht)
            p = rc = f = v
        else:
            p, rc, f = _prf(lcs_length(rt, ht), len(ht), len(rt))
        ps.append(p), rs.append(rc), fs.append(f)
    n = len(fs)
    mean = (lambda xs: sum(xs) / n if n else 0.0)
    return {"rouge_l": mean(fs), "rouge_l_precision": mean(ps), "rouge_l_recall": mean(rs), "n": n}


_KW_SPLIT = re.compile(r"[,;\n]")


def _keywords(text: str | None, normalize: bool) -> set[str]:
    parts = _KW_SPLIT.split(text or "")
    fn = normalize_english if normalize else (lambda s: " ".join(s.split()).casefold())
    return {k for k in (fn(p) for p in parts) if k}


def keyword_f1(refs: Sequence[str | None], hyps: Sequence[str | None], normalize: bool = True) -> dict[str, Any]:
    """Set F1 between keyword lists separated by commas (also ``;`` or newlines).

    Each keyword is normalized as a phrase (Whisper normalizer with ``normalize``, else case-folded and
    whitespace-collapsed); duplicates and empty items are dropped. ``keyword_f1`` is the mean per-pair F1
    (both empty: 1, one empty: 0); ``micro_f1``/``precision``/``recall`` pool true/false positives over
    all pairs. Returns ``{"keyword_f1", "micro_f1", "precision", "recall", "n"}``.
    """
    _check_pairs(refs, hyps)
    fs = []
    tp = n_pred = n_true = 0
    for r, h in zip(refs, hyps):
        rk, hk = _keywords(r, normalize), _keywords(h, normalize)
        common = len(rk & hk)
        tp, n_pred, n_true = tp + common, n_pred + len(hk), n_true + len(rk)
        fs.append(float(not rk and not hk) if not rk or not hk else _prf(common, len(hk), len(rk))[2])
    n = len(fs)
    p, r, f = _prf(tp, n_pred, n_true)
    if n_pred == 0 and n_true == 0 and n:
        p = r = f = 1.0
    return {"keyword_f1": sum(fs) / n if n else 0.0, "micro_f1": f, "precision": p, "recall": r, "n": n}


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

TASK_METRICS: dict[str, Callable[..., dict[str, Any]]] = {
    "accuracy_f1": accuracy_f1,
    "timestamps": timestamps,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
    "keyword_f1": keyword_f1,
}
"""Same call shape as :data:`speechlm.evaluation.metrics.METRICS` (``fn(refs, hyps, normalize=True)``); merge with
``METRICS.update(TASK_METRICS)``. ``accuracy_f1`` also takes ``labels=`` (the task's closed label set)."""

TASK_HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy_f1": True,
    "macro_f1": True,
    "timestamps": False,
    "boundary_error_ms": False,
    "start_error_ms": False,
    "end_error_ms": False,
    "token_f1": True,
    "exact_match": True,
    "rouge_l": True,
    "keyword_f1": True,
    "micro_f1": True,
}
"""Direction of each headline / breakdown key, to merge into :data:`speechlm.evaluation.metrics.HIGHER_IS_BETTER`."""
