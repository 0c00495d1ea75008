"""Broad-vocabulary training text that a language model cannot guess, for synthetic speech corpora.

What this module owns: the *text* side of :func:`speechlm.corpora.synth.build_synthetic_corpus` with
``text_source="mixed"`` (the old hand-written sentences and templates stay in
:mod:`speechlm.corpora.synth`), the number spelling and character clean-up that keep a transcript
equal to what espeak-ng / flite say, and :func:`text_coverage`, which measures how much of a dev set's
vocabulary a training text list covers.

Text kinds (each utterance gets one, drawn from its own random stream):

* ``"words"`` - 4 to 12 distinct words from the top :data:`TOP_N_WORDS` English words of
  ``wordfreq`` (Speer 2022, wordfreq 3.x ``top_n_list``), drawn independently with a flattened Zipf
  weighting (:data:`RANK_EXPONENT`): no grammar, so the only way to get them right is to listen.
* ``"facts"`` - short grammatical sentences whose slots are filled by ``faker`` (``en_US``): first and
  last names, jobs, companies, cities, countries, US states, street names, colours, months, weekdays,
  catch phrases, business jargon, plus spelled-out numbers, years, times, prices and phone digits.
* ``"lorem"`` - ``faker``'s English ``sentence()`` / ``text()`` (random sentences from its ~1,000-word
  ``en_US`` lorem list).
* ``"everyday"`` - supplied by the caller (the synthetic builder passes its fixed sentences and
  templates), so grammatical, natural-prosody speech stays in the mix.

Every piece of text passes :func:`clean_for_tts`: digits become words (``num2words``), ``&``/``%``/``$``
become words, accents are folded to ASCII, and characters the engines read aloud or stumble on
(brackets, slashes, quotes, emoji...) are dropped. Output depends on ``(seed, index)`` only, and on the
installed faker / wordfreq versions (their word lists change between releases; the synthetic builder
names audio files by a hash of the text, so a changed text never reuses stale audio).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "DEFAULT_SENTENCE_MIX",
    "RANK_EXPONENT",
    "TEXT_KINDS",
    "TOP_N_WORDS",
    "clean_for_tts",
    "english_words",
    "fact_sentence",
    "lorem_sentence",
    "make_text",
    "pick_text_kind",
    "random_word_string",
    "spell_numbers",
    "text_coverage",
    "words_of",
]

TEXT_KINDS = ("words", "facts", "lorem", "everyday")
TOP_N_WORDS = 20_000
"""Vocabulary size for random word strings: the brief's "top ~20k English words"; wordfreq's English
list stays mostly real words to this depth (past ~30k it is names, brands and misspellings)."""
WORDS_PER_STRING = (4, 12)
"""Inclusive word-count range of a random word string (about 1.5-6 s of speech at 2.7 words/s)."""
RANK_EXPONENT = 0.5
"""Random words are drawn with probability proportional to rank**-RANK_EXPONENT: 0 is uniform over the
list, 1 is Zipf (like running text). Measured here on 1,200 mixed texts (random_word_share 0.3, seeds
0-2): running-word coverage of the shared asr_en transcripts 75.8% (0) / 78.4% (0.5) / 78.0% (0.7) /
77.2% (1.0), of 251 pseudo-labelled LibriSpeech transcripts 72.3 / 73.6 / 74.3 / 73.1%; 0.5 keeps
rare words frequent enough while covering more of the common ones. Words stay independent of each
other, so a string is no easier to guess."""
DEFAULT_SENTENCE_MIX: Mapping[str, float] = {"facts": 0.4, "lorem": 0.3, "everyday": 0.3}
"""How the non-random-word share is split (a guess: most of it unguessable, some natural sentences)."""

# ---------------------------------------------------------------------------------------------
# Cleaning: what the TTS engines are given must be exactly the transcript.
# ---------------------------------------------------------------------------------------------

# Characters with a spoken form; everything else outside the allowed set is dropped.
_SYMBOL_WORDS = {"&": " and ", "+": " plus ", "@": " at ", "=": " equals "}
_PUNCT_MAP = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": " ", "\u2014": " ",
                            "\u2026": "."})
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "\u00a3": ("pound", "pounds", "penny", "pence"),
             "\u20ac": ("euro", "euros", "cent", "cents")}


def _n2w(n: int, **kw: Any) -> str:
    from num2words import num2words

    # num2words writes "twenty-one" and "one hundred and five,"; engines and transcripts need neither
    # the hyphen nor the comma.
    return num2words(n, lang="en", **kw).replace("-", " ").replace(",", "")


def _digits(s: str) -> str:
    return " ".join(_n2w(int(d)) for d in s)


def _money(m: re.Match) -> str:
    unit, units, sub, subs = _CURRENCY[m.group(1)]
    whole = int(m.group(2).replace(",", ""))
    out = f"{_n2w(whole)} {unit if whole == 1 else units}"
    if m.group(3) and int(m.group(3)):
        c = int(m.group(3))
        out += f" and {_n2w(c)} {sub if c == 1 else subs}"
    return out


def _integer(m: re.Match) -> str:
    s = m.group(0).replace(",", "")
    # Codes, phone numbers and anything with a leading zero are read digit by digit.
    if len(s) > 6 or (len(s) > 1 and s[0] == "0"):
        return _digits(s)
    # An ungrouped four-digit number from 1100 to 2099 is most often a year: "eighteen sixty five".
    if "," not in m.group(0) and len(s) == 4 and 1100 <= int(s) <= 2099:
        return _n2w(int(s), to="year")
    return _n2w(int(s))


def _clock(m: re.Match) -> str:
    h, mins = int(m.group(1)), int(m.group(2))
    if mins == 0:
        return f"{_n2w(h)} o'clock"
    return f"{_n2w(h)} {_n2w(mins) if mins >= 10 else 'oh ' + _n2w(mins)}"


def spell_numbers(text: str) -> str:
    """Write every number in ``text`` as words, the way the engines would have to say it.

    Handles money (``$5.50`` -> "five dollars and fifty cents", also pounds and euros), percentages,
    ordinals (``21st``), clock times (``3:05`` -> "three oh five"), decimals (``3.14`` -> "three point
    one four"), grouped integers (``12,000``), years (ungrouped 1100-2099: ``1865`` -> "eighteen
    sixty five") and plain integers; integers over six digits or with a leading zero are read digit by
    digit.
    """
    text = re.sub(r"\b(\d{1,2}):(\d{2})\b", _clock, text)
    text = re.sub(r"([$\u00a3\u20ac])\s?(\d[\d,]*)(?:\.(\d{2}))?\b", _money, text)
    text = re.sub(r"(\d[\d,]*(?:\.\d+)?)\s?%", r"\1 percent", text)
    text = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", lambda m: _n2w(int(m.group(1)), to="ordinal"), text)
    text = re.sub(r"\b(\d+)\.(\d+)\b", lambda m: f"{_n2w(int(m.group(1)))} point {_digits(m.group(2))}", text)
    text = re.sub(r"\b\d{1,3}(?:,\d{3})+\b|\d+", _integer, text)
    return text


def clean_for_tts(text: str) -> str:
    """``text`` reduced to what espeak-ng and flite say as written: words, spaces and ``. , ? ! ' -``.

    Numbers are spelled out (:func:`spell_numbers`), accents folded to ASCII (``café`` -> ``cafe``),
    ``& + @ =`` written as words, apostrophes and hyphens kept only inside words, every other
    character (brackets, quotes, slashes, ``#``, emoji...) replaced by a space. CamelCase is not
    split here (see the faker helpers). Returns "" if nothing speakable is left.
    """
    if not isinstance(text, str):
        raise TypeError(f"clean_for_tts expects a string, got {type(text).__name__}")
    text = text.translate(_PUNCT_MAP)
    text = spell_numbers(text)
    for sym, word in _SYMBOL_WORDS.items():
        text = text.replace(sym, word)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z.,?!' -]", " ", text)
    text = re.sub(r"(?<![A-Za-z])['-]|['-](?![A-Za-z])", " ", text)  # apostrophes/hyphens inside words only
    text = re.sub(r"\s+([.,?!])", r"\1", text)  # no space before punctuation
    text = re.sub(r"([.,?!])[.,?!]+", r"\1", text)  # one mark at a time
    text = re.sub(r"^[\s.,?!]+", "", text)
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# Random word strings (wordfreq)
# ---------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)?")
_VOWEL_RE = re.compile(r"[aeiouy]")
# Two-letter entries of wordfreq's list are mostly abbreviations and fragments ("de", "gi", "ny"): keep
# only these real English words (chosen by hand from the top 20k).
_TWO_LETTER = frozenset("to of in is it on be as at he by my or we an so me if up do no us go am oh ok hi ah "
                        "ha uh um eh ex ox ye yo".split())


@functools.lru_cache(maxsize=4)
def english_words(n: int = TOP_N_WORDS) -> tuple[str, ...]:
    """The ``n`` most frequent usable English words of ``wordfreq``, most frequent first.

    Usable: letters with at most one inner apostrophe (``don't``), at least one vowel (drops most
    letter-by-letter acronyms such as ``nbc``), and either three or more letters, a real two-letter
    word (``to``, ``up``...; not ``de``, ``ny``), ``a`` or ``i``. Needs no download: wordfreq ships its
    frequency lists in the wheel.
    """
    from wordfreq import top_n_list

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out: list[str] = []
    ask = int(n * 1.1) + 100  # ~3.5% of the raw list is dropped (the top 20,699 give 20k words, wordfreq 3.1.1)
    while True:
        raw = top_n_list("en", ask)
        out = [w for w in raw if _WORD_RE.fullmatch(w) and _VOWEL_RE.search(w) and (len(w) > 2 or w in _TWO_LETTER or w in ("a", "i"))]
        if len(out) >= n or len(raw) < ask:
            return tuple(out[:n])
        ask *= 2


def _written(word: str) -> str:
    """How a lowercase list word is written in a transcript: the pronoun ``I`` (and ``I'm``...) capitalised."""
    return "I" + word[1:] if word == "i" or word.startswith("i'") else word


@functools.lru_cache(maxsize=8)
def _rank_weights(n: int, exponent: float) -> np.ndarray:
    w = (np.arange(n) + 1.0) ** -exponent  # (n,)
    return w / w.sum()


def random_word_string(rng: np.random.Generator, n_words: tuple[int, int] = WORDS_PER_STRING,
                       vocab: Sequence[str] | None = None, rank_exponent: float = RANK_EXPONENT) -> str:
    """``n_words[0]..n_words[1]`` distinct words from ``vocab`` (default :func:`english_words`, most
    frequent first), drawn with probability proportional to ``rank ** -rank_exponent`` (0: uniform),
    lowercase apart from ``I``, space-separated, no punctuation."""
    vocab = english_words() if vocab is None else vocab
    lo, hi = n_words
    if not 1 <= lo <= hi:
        raise ValueError(f"n_words must be (lo, hi) with 1 <= lo <= hi, got {n_words}")
    if len(vocab) < hi:
        raise ValueError(f"vocabulary of {len(vocab)} words is smaller than the {hi} words asked for")
    if not 0.0 <= rank_exponent <= 2.0:
        raise ValueError(f"rank_exponent must be in [0, 2], got {rank_exponent}")
    k = int(rng.integers(lo, hi + 1))
    p = _rank_weights(len(vocab), float(rank_exponent)) if rank_exponent else None  # (len(vocab),)
    idx = rng.choice(len(vocab), size=k, replace=False, p=p)  # (k,)
    return " ".join(_written(vocab[j]) for j in idx)


# ---------------------------------------------------------------------------------------------
# faker sentences
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _faker():
    from faker import Faker

    return Faker("en_US")


def _seeded_faker(rng: np.random.Generator):
    """The shared en_US Faker, re-seeded from ``rng``, so its output depends only on ``rng``'s state."""
    fake = _faker()
    fake.seed_instance(int(rng.integers(2**62)))
    return fake


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s[1:2].islower() or len(s) == 1 else s


def _no_brackets(s: str) -> str:
    return " ".join(re.sub(r"\([^)]*\)", " ", s).split())


def _job(fake) -> str:
    """faker's "Engineer, civil (contracting)" -> "civil engineer"."""
    j = _no_brackets(fake.job())
    if ", " in j:
        head, mod = j.split(", ", 1)
        j = f"{mod} {_lower_first(head)}"
    return _lower_first(j)


def _colour(fake) -> str:
    """CSS colour names ("DarkKhaki") as words ("dark khaki")."""
    return " ".join(re.findall(r"[A-Z][a-z]*|[a-z]+", fake.color_name())).lower()


def _company(fake) -> str:
    c = fake.company()
    return re.sub(r"\bLtd\b", "Limited", re.sub(r"\bInc\b", "Incorporated", c)).replace("-", " and ")


def _an(phrase: str) -> str:
    """``a``/``an`` by the first letter (a spelling rule of thumb: wrong for "an hour", "a unit")."""
    return f"an {phrase}" if phrase[:1].lower() in "aeiou" else f"a {phrase}"


def _time(rng: np.random.Generator) -> str:
    return spell_numbers(f"{int(rng.integers(1, 13))}:{int(rng.choice([0, 5, 10, 15, 20, 30, 40, 45, 50])):02d}")


def _slots(fake, rng: np.random.Generator) -> dict[str, str]:
    n = int(rng.integers(2, 100))
    cents = int(rng.integers(0, 100))
    return {
        "first": fake.first_name(), "first2": fake.first_name(), "last": fake.last_name(),
        "job": _job(fake), "company": _company(fake), "city": fake.city(), "city2": fake.city(),
        "country": _no_brackets(fake.country()), "state": fake.state(), "street": fake.street_name(),
        "colour": _colour(fake), "month": fake.month_name(), "day": fake.day_of_week(),
        "catch": _lower_first(fake.catch_phrase()), "bs": fake.bs(),
        "word": fake.word(), "rare": english_words()[int(rng.integers(2000, TOP_N_WORDS))],
        "num": _n2w(n), "big": _n2w(int(rng.integers(100, 1_000_000))), "small": _n2w(int(rng.integers(2, 13))),
        "ordinal": _n2w(int(rng.integers(1, 32)), to="ordinal"), "year": _n2w(int(rng.integers(1890, 2031)), to="year"),
        "house": _n2w(int(rng.integers(1, 2000))), "time": _time(rng),
        "price": f"{_n2w(n)} dollars" + (f" and {_n2w(cents)} cents" if cents else ""),
        "phone": _digits("".join(str(d) for d in rng.integers(0, 10, size=7))),  # (7,) digits
        "percent": f"{_n2w(int(rng.integers(1, 100)))} percent",
    }


_FACT_TEMPLATES = (
    "{first} {last} works as {a_job} in {city}.",
    "My cousin {first} moved to {country} in {year}.",
    "The office of {company} is on {street} in {city}.",
    "{first} was born on the {ordinal} of {month}, {year}.",
    "Please send {num} copies of the report to {first} {last}.",
    "About {big} people live in {city}, {state}.",
    "Our next meeting about {bs} is on {day} at {time}.",
    "{first} painted the front door {colour} last {month}.",
    "The flight from {city} to {city2} takes {small} hours.",
    "{first} lives at {house} {street}.",
    "You can reach {first} on {phone}.",
    "The new {catch} costs {price}.",
    "{company} plans to {bs} before {month}.",
    "Sales in {state} went up by {percent} this year.",
    "Is {first} still working as {a_job}?",
    "{first} and {first2} met in {country} on a {day} in {month}.",
    "Why did {company} choose {city} for the {catch}?",
    "{first} wrote the word {rare} on the board.",
    "Ask {first} {last} to meet us at {time} on {day}.",
    "Our team in {city} has {num} engineers and {small} designers.",
    "{first} says the {catch} will be ready by the {ordinal}.",
    "The train to {city} leaves at {time} from platform {small}.",
    "After {year}, {first} {last} never went back to {state}.",
    "The {colour} car outside belongs to {_an_first_job}.",
    "The last word {first} said was {rare}.",
    "In {month} {first} learned the word {word} from {first2}.",
    "Every {day} {first} drives {small} miles to {city}.",
)


def fact_sentence(rng: np.random.Generator) -> str:
    """One grammatical sentence from :data:`_FACT_TEMPLATES` with faker-filled slots (cleaned)."""
    fake = _seeded_faker(rng)
    t = _FACT_TEMPLATES[int(rng.integers(len(_FACT_TEMPLATES)))]
    slots = _slots(fake, rng)
    slots["a_job"] = _an(slots["job"])
    slots["_an_first_job"] = f"{slots['first']}, {_an(slots['job'])}"
    s = t.format(**slots)
    return clean_for_tts(s[0].upper() + s[1:])


def lorem_sentence(rng: np.random.Generator) -> str:
    """faker's English ``sentence()`` (4-14 words) or, one time in four, a ``text()`` of up to 90
    characters (usually two short sentences); cleaned."""
    fake = _seeded_faker(rng)
    if rng.random() < 0.25:
        return clean_for_tts(fake.text(max_nb_chars=90))
    return clean_for_tts(fake.sentence(nb_words=int(rng.integers(4, 15)), variable_nb_words=False))


# ---------------------------------------------------------------------------------------------
# Choosing a kind
# ---------------------------------------------------------------------------------------------


def pick_text_kind(rng: np.random.Generator, random_word_share: float = 0.3,
                   sentence_mix: Mapping[str, float] | None = None) -> str:
    """Draw one of :data:`TEXT_KINDS`: ``"words"`` with probability ``random_word_share``, otherwise a
    kind from ``sentence_mix`` (weights over ``facts``/``lorem``/``everyday``, normalised)."""
    if not 0.0 <= random_word_share <= 1.0:
        raise ValueError(f"random_word_share must be in [0, 1], got {random_word_share}")
    mix = dict(DEFAULT_SENTENCE_MIX if sentence_mix is None else sentence_mix)
    bad = sorted(set(mix) - set(TEXT_KINDS[1:]))
    if bad:
        raise ValueError(f"sentence_mix: unknown kind(s) {bad}; choose from {list(TEXT_KINDS[1:])}")
    if any(w < 0 for w in mix.values()) or (sum(mix.values()) <= 0 and random_word_share < 1.0):
        raise ValueError(f"sentence_mix weights must be >= 0 with a positive sum, got {mix}")
    u = rng.random()  # always drawn, so the stream advances the same way whatever the shares
    if u < random_word_share:
        return "words"
    kinds = [k for k in TEXT_KINDS[1:] if mix.get(k, 0) > 0]
    w = np.array([mix[k] for k in kinds], dtype=float)  # (n_kinds,)
    return kinds[int(rng.choice(len(kinds), p=w / w.sum()))]


def make_text(kind: str, rng: np.random.Generator, everyday: Callable[[np.random.Generator], str] | None = None) -> str:
    """Text of one kind; ``everyday`` supplies the ``"everyday"`` kind (the caller's own sentences)."""
    if kind == "words":
        return random_word_string(rng)
    if kind == "facts":
        return fact_sentence(rng)
    if kind == "lorem":
        return lorem_sentence(rng)
    if kind == "everyday":
        if everyday is None:
            raise ValueError("text kind 'everyday' needs an everyday(rng) -> str source")
        return clean_for_tts(everyday(rng))
    raise ValueError(f"unknown text kind {kind!r}; choose from {list(TEXT_KINDS)}")


# ---------------------------------------------------------------------------------------------
# Coverage
# ---------------------------------------------------------------------------------------------


def words_of(text: str) -> list[str]:
    """Lowercased words of ``text`` (letters, digits and inner apostrophes; accents folded)."""
    t = unicodedata.normalize("NFKD", text.replace("\u2019", "'")).encode("ascii", "ignore").decode("ascii").lower()
    return re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", t)


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    try:
        ids = tokenizer.encode(text, add_special_tokens=False)  # Hugging Face tokenizers
    except TypeError:
        ids = tokenizer.encode(text)  # a plain tokenizers.Tokenizer or a minimal stand-in
    return list(getattr(ids, "ids", ids))


def text_coverage(dev_texts: Iterable[str], train_texts: Iterable[str], tokenizer: Any = None,
                  max_listed: int = 50) -> dict[str, Any]:
    """How much of ``dev_texts``' vocabulary occurs in ``train_texts``.

    Words are :func:`words_of` (lowercased). Token ids come from ``tokenizer.encode(text,
    add_special_tokens=False)`` on each whole text (so a word's first-in-text and mid-text forms count
    as the tokenizer makes them).

    Returns:
        ``dev_words`` / ``dev_word_types``: running words and distinct words in the dev texts;
        ``word_coverage``: share of running dev words whose word occurs in training;
        ``word_type_coverage``: share of distinct dev words that occur in training;
        ``oov_words``: up to ``max_listed`` dev words missing from training, most frequent first;
        ``train_word_types``; and with a tokenizer the same for tokens: ``dev_tokens``,
        ``dev_token_types``, ``token_coverage``, ``token_type_coverage``, ``train_token_types``.
        Shares are in [0, 1]; None when the dev side is empty.
    """
    dev_texts, train_texts = list(dev_texts), list(train_texts)
    for name, texts in (("dev_texts", dev_texts), ("train_texts", train_texts)):
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"text_coverage: {name}[{bad[0]}] is {type(texts[bad[0]]).__name__}, expected str")

    def share(hit: int, total: int) -> float | None:
        return hit / total if total else None

    dev_w = Counter(w for t in dev_texts for w in words_of(t))
    train_w = {w for t in train_texts for w in words_of(t)}
    n_dev = sum(dev_w.values())
    out: dict[str, Any] = {
        "dev_words": n_dev,
        "dev_word_types": len(dev_w),
        "train_word_types": len(train_w),
        "word_coverage": share(sum(c for w, c in dev_w.items() if w in train_w), n_dev),
        "word_type_coverage": share(sum(w in train_w for w in dev_w), len(dev_w)),
        "oov_words": [w for w, _ in sorted(dev_w.items(), key=lambda kv: (-kv[1], kv[0])) if w not in train_w][:max_listed],
    }
    if tokenizer is not None:
        dev_t = Counter(i for t in dev_texts for i in _token_ids(tokenizer, t))
        train_t = {i for t in train_texts for i in _token_ids(tokenizer, t)}
        n_tok = sum(dev_t.values())
        out.update({
            "dev_tokens": n_tok,
            "dev_token_types": len(dev_t),
            "train_token_types": len(train_t),
            "token_coverage": share(sum(c for i, c in dev_t.items() if i in train_t), n_tok),
            "token_type_coverage": share(sum(i in train_t for i in dev_t), len(dev_t)),
        })
    return out
