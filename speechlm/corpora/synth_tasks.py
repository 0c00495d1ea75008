"""A synthetic multi-task corpus (ASR + X) from espeak-ng / flite, labelled only with what it controls.

For multi-task instruction tuning in the style of OSUM ("ASR + X") and SpeechVerse: every utterance
carries a transcript plus labels that hold *by construction*, because the builder chose them and told
the synthesiser (or applied them to the waveform) itself:

* **voice** - ``speaker`` (``engine:voice``), ``gender`` (what the voice is designed to sound like),
  ``engine``, ``voice_family``, ``accent`` (see :mod:`speechlm.corpora.synth`).
* **speaking style** (for speaking-style recognition) - ``rate_class`` in ``slow / normal / fast``
  (engine speaking rate 0.7 / 1.0 / 1.4 of its default, +-4 %), ``pitch_class`` in
  ``low / normal / high`` (espeak-ng ``-p`` 18 / 50 / 82 (+-3), flite F0 target 0.8 / 1.0 / 1.25 of the
  voice's mid F0, +-3 %; *relative to the voice*, so a "high" male voice can sit below a "low" female
  one in Hz - ``f0_hz`` holds the measured median F0 for absolute use; a voice without a pitch
  control (``flite:rms``) gets no ``pitch_class``), ``loudness_class`` in ``quiet / normal / loud``
  (gain applied after synthesis towards -40 / -30 / -20 dBFS active-speech RMS, +-2 dB, peaks
  limited to -1 dBFS; ``loudness_dbfs`` and ``peak_dbfs`` are *measured* on the result), and
  ``style``, the three in words: ``"fast, high-pitched, loud"``.
* **word timestamps** (``synthesis == "words"``, a ``word_timing_fraction`` of the corpus): each word
  is synthesised on its own with the same voice/rate/pitch, cut out of the engine's silence (10 ms
  frame energy, 45 dB below the word's loudest frame; 10 ms kept each side; 5 ms fades) and
  concatenated with random 40-150 ms gaps of digital silence, so
  ``words = [{"w": "Good", "start": 0.18, "end": 0.52}, ...]`` is exact by construction:
  ``[start, end)`` is where that word's audio was placed, and nothing else is audible outside the
  spans. The echo some espeak-ng variants add (m2, f2-f5: 120-140 ms) is not counted as part of a word
  (:func:`_dry`), and stray breaths flite's diphone voices put 0.13-0.3 s before a word are cut off;
  faint (>= 40 dB down) flite breath noise right after a word can still lengthen its span by up to
  ~0.15 s. ``w`` is the word as written in ``text`` without surrounding punctuation. Words spoken
  alone have citation-form prosody, so these utterances are slower and more staccato than natural
  speech. The other utterances are synthesised whole (``synthesis == "whole"``, natural
  coarticulation, no ``words``).
* **kind** - ``"sentence"`` (:data:`speechlm.corpora.synth.SENTENCES`), ``"question"`` (a spoken
  factual question from :data:`QUESTIONS`, with its ``answer``, for speech-to-text chat) or
  ``"command"`` (SLU: ``intent`` from :data:`INTENTS`, ``slots`` ``{name: value}`` and ``keywords``,
  the slot values in spoken order; every value occurs verbatim in ``text``). ``question`` is true when
  the utterance is a question (all of kind ``"question"``, and sentences/commands ending in ``?``).

Everything is a function of the seed: utterance ``i`` depends only on ``(seed, i)`` and on the
utterances before it (class/kind balancing works in fixed blocks, texts are drawn in shuffled passes),
so a larger ``n_utterances`` extends a smaller corpus. Audio files are named by a hash of everything
that shapes them; a re-run skips utterances whose audio and sidecar (``audio/<name>.json``, holding
the measured values and word times) exist.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import soundfile as sf
import soxr

from speechlm.data.audio import write_audio
from speechlm.data.manifest import write_manifest
from speechlm.corpora.synth import (  # private helpers reused on purpose (see the module docstring of synth)
    _pick_voice,
    _ESPEAK_DEFAULT_WPM,
    _NAMES,
    _PLACES,
    SAMPLE_RATE,
    SENTENCES,
    Voice,
    _engine_audio,
    _trim,
    available_voices,
)
from speechlm.utils import write_json

__all__ = [
    "INTENTS",
    "KINDS",
    "LOUDNESS_CLASSES",
    "PITCH_CLASSES",
    "QUESTIONS",
    "RATE_CLASSES",
    "build_multitask_corpus",
]

# Bump when a change to the rendering would make old audio files wrong for a new plan.
_VERSION = 2

KINDS = ("sentence", "command", "question")
RATE_CLASSES = ("slow", "normal", "fast")
PITCH_CLASSES = ("low", "normal", "high")
LOUDNESS_CLASSES = ("quiet", "normal", "loud")
_DEFAULT_MIX = {"sentence": 0.4, "command": 0.3, "question": 0.3}

_RATE = {"slow": 0.7, "normal": 1.0, "fast": 1.4}  # factor of the engine's default rate
_RATE_JITTER = 0.04
_ESPEAK_PITCH = {"low": 18, "normal": 50, "high": 82}  # espeak-ng -p, 0-99
_ESPEAK_PITCH_JITTER = 3
_FLITE_PITCH = {"low": 0.8, "normal": 1.0, "high": 1.25}  # x the voice's mid F0 target
_FLITE_PITCH_JITTER = 0.03
_LOUDNESS = {"quiet": -40.0, "normal": -30.0, "loud": -20.0}  # active-speech RMS target, dBFS
_LOUDNESS_JITTER = 2.0
_PEAK_CEILING_DBFS = -1.0
_STYLE_WORDS = {
    "rate": {"slow": "slow", "normal": "normal speed", "fast": "fast"},
    "pitch": {"low": "low-pitched", "normal": "normal pitch", "high": "high-pitched"},
    "loudness": {"quiet": "quiet", "normal": "normal volume", "loud": "loud"},
}
_GAP_RANGE = (0.04, 0.15)  # silence between words in "words" synthesis, seconds
_EDGE_RANGE = (0.1, 0.25)  # leading / trailing silence in "words" synthesis, seconds
_WORD_PAD = 0.01  # kept around each trimmed word, seconds (inside its [start, end))
_KIND_BLOCK = 20  # kinds and synthesis modes are balanced within blocks of this many utterances

# Seeds of the independent random streams (np.random.default_rng([seed, TAG, ...])).
_TAG_UTT, _TAG_KIND, _TAG_MODE, _TAG_RATE, _TAG_PITCH, _TAG_LOUD, _TAG_SENT, _TAG_QUEST, _TAG_INTENT = range(
    101, 110)

from speechlm.corpora.synth_questions import QUESTIONS  # noqa: E402  (the embedded question list)

# ---------------------------------------------------------------------------------------------
# Commands (SLU): intents, templates and slot values. A slot option is (what is said, slot value);
# the value is always a substring of what is said ("on Monday" -> "Monday").
# ---------------------------------------------------------------------------------------------


def _opts(*values: str) -> tuple[tuple[str, str], ...]:
    return tuple((v, v) for v in values)


_ALARM_TIMES = _opts("six", "six thirty", "seven", "seven fifteen", "a quarter to eight", "half past five",
                     "eight o'clock", "nine", "ten in the morning", "noon", "five forty five")
_DAYS = (("tomorrow", "tomorrow"), ("tonight", "tonight"), ("on Monday", "Monday"), ("on Tuesday", "Tuesday"),
         ("on Wednesday", "Wednesday"), ("on Thursday", "Thursday"), ("on Friday", "Friday"),
         ("on Saturday", "Saturday"), ("on Sunday", "Sunday"))
_WEATHER_DAYS = (("today", "today"), ("tomorrow", "tomorrow"), ("tonight", "tonight"),
                 ("this weekend", "this weekend"), ("on Friday", "Friday"), ("on Sunday", "Sunday"))
_DURATIONS = _opts("five minutes", "ten minutes", "three minutes", "twenty minutes", "half an hour",
                   "forty five seconds", "one hour", "ninety seconds", "twelve minutes", "two hours")
_GENRES = _opts("jazz", "rock", "classical", "pop", "blues", "reggae", "country", "folk", "piano", "dance")
_ARTISTS = _opts("the Beatles", "Mozart", "Adele", "Bob Marley", "Queen", "Beethoven", "Miles Davis",
                 "Elvis Presley", "Johnny Cash", "Ella Fitzgerald")
_CITIES = _opts("London", "Paris", "Berlin", "Tokyo", "New York", "Madrid", "Edinburgh", "Chicago",
                "Sydney", "Dublin", "Rome", "Toronto")
_CONTACTS = _opts(*_NAMES)
_MESSAGES = _opts("I am running late", "dinner is ready", "I will be home at six", "the meeting is cancelled",
                  "I am on my way", "the train is delayed", "I left my keys at home", "we need more milk")
_ROOMS = _opts("kitchen", "living room", "bedroom", "bathroom", "hallway", "garage", "office", "dining room")
_ITEMS = _opts("milk", "eggs", "bread", "coffee", "bananas", "rice", "butter", "tomatoes", "cheese",
               "orange juice", "toothpaste", "washing powder")
_LISTS = _opts("shopping", "grocery")
_LEVELS = _opts("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twenty percent",
                "fifty percent", "eighty percent")
_DESTINATIONS = _opts(*_PLACES)
_TRANSPORT = _opts("bus", "train", "bicycle", "car")

_SLOT_OPTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "time": _ALARM_TIMES, "date": _DAYS, "weather_date": _WEATHER_DAYS, "duration": _DURATIONS,
    "genre": _GENRES, "artist": _ARTISTS, "city": _CITIES, "contact": _CONTACTS, "message": _MESSAGES,
    "room": _ROOMS, "item": _ITEMS, "list": _LISTS, "level": _LEVELS, "destination": _DESTINATIONS,
    "transport": _TRANSPORT,
}
# Slot name as stored (weather_date is a date with its own options).
_SLOT_NAME = {"weather_date": "date"}

_COMMAND_TEMPLATES: dict[str, tuple[str, ...]] = {
    "set_alarm": ("Set an alarm for {time} {date}.", "Wake me up at {time} {date}.",
                  "Please set an alarm for {time}.", "Can you set an alarm for {time} {date}?"),
    "set_timer": ("Set a timer for {duration}.", "Start a timer for {duration}.",
                  "Can you set a timer for {duration}?"),
    "play_music": ("Play some {genre} music.", "Put on some {genre}.", "Play {artist}.",
                   "I want to listen to {artist}.", "Play something by {artist} in the {room}."),
    "weather_query": ("What is the weather like in {city} {weather_date}?", "Will it rain {weather_date}?",
                      "Do I need an umbrella in {city} {weather_date}?", "How cold will it be {weather_date}?",
                      "What is the forecast for {city}?"),
    "call_contact": ("Call {contact}.", "Please phone {contact}.", "Call {contact} on speaker.",
                     "Can you ring {contact} for me?"),
    "send_message": ("Send a message to {contact} saying {message}.", "Text {contact} that {message}.",
                     "Tell {contact} {message}."),
    "turn_on_light": ("Turn on the {room} light.", "Switch on the lights in the {room}.",
                      "Turn the {room} lights on.", "Can you turn on the light in the {room}?"),
    "turn_off_light": ("Turn off the {room} light.", "Switch off the lights in the {room}.",
                       "Turn the {room} lights off.", "Can you turn off the light in the {room}?"),
    "add_to_list": ("Add {item} to my {list} list.", "Put {item} on the {list} list.",
                    "Please add {item} to the {list} list."),
    "set_volume": ("Set the volume to {level}.", "Change the volume to {level}.", "Turn the volume to {level}."),
    "get_directions": ("How do I get to {destination}?", "Give me directions to {destination}.",
                       "Navigate to {destination}.", "How do I get to {destination} by {transport}?"),
}

INTENTS: tuple[str, ...] = tuple(_COMMAND_TEMPLATES)
"""The SLU intents of kind ``"command"`` utterances."""


def _command_utterance(intent: str, rng: np.random.Generator) -> tuple[str, dict[str, str], list[str]]:
    """(text, slots, keywords) for one command of ``intent``."""
    templates = _COMMAND_TEMPLATES[intent]
    template = templates[rng.integers(len(templates))]
    fields = [f.split("}", 1)[0] for f in template.split("{")[1:]]
    surface, slots = {}, {}
    for f in fields:
        options = _SLOT_OPTIONS[f]
        said, value = options[rng.integers(len(options))]
        surface[f] = said
        slots[_SLOT_NAME.get(f, f)] = value
    text = template.format(**surface)
    text = text[0].upper() + text[1:]
    # Keywords in the order they are spoken.
    keywords = sorted(slots.values(), key=lambda v: text.find(v))
    return text, slots, keywords


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


def _quota(weights: Sequence[float], block: int) -> list[int]:
    """Largest-remainder counts of ``block`` items for ``weights`` (which sum to 1)."""
    raw = [w * block for w in weights]
    counts = [int(np.floor(r)) for r in raw]
    for j in sorted(range(len(raw)), key=lambda j: (counts[j] - raw[j], j))[: block - sum(counts)]:
        counts[j] += 1
    return counts


def _balanced(seed: int, tag: int, i: int, weights: Sequence[float], block: int) -> int:
    """Category of item ``i``: each block of ``block`` items holds the quota of every category, shuffled."""
    seq = np.repeat(np.arange(len(weights)), _quota(weights, block))
    return int(np.random.default_rng([seed, tag, i // block]).permutation(seq)[i % block])


def _word_tokens(text: str) -> list[str]:
    """The words of ``text`` without surrounding punctuation (inner apostrophes kept: o'clock)."""
    words = [t.strip(".,?!;:\"'()-") for t in text.split()]
    return [w for w in words if w]


def _mix_weights(mix: Mapping[str, float] | None) -> list[float]:
    mix = dict(_DEFAULT_MIX if mix is None else mix)
    unknown = set(mix) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown utterance kinds {sorted(unknown)}; known: {list(KINDS)}")
    w = [float(mix.get(k, 0.0)) for k in KINDS]
    if any(not np.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"kind fractions must be non-negative with a positive sum, got {mix}")
    return [x / sum(w) for x in w]


def _plan(n: int, seed: int, voices: list[Voice], mix: Mapping[str, float] | None = None,
          word_timing_fraction: float = 0.5) -> list[dict[str, Any]]:
    """Deterministic plan: utterance i depends on (seed, i) and on the utterances before it."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0.0 <= word_timing_fraction <= 1.0:
        raise ValueError(f"word_timing_fraction must be in [0, 1], got {word_timing_fraction}")
    kind_w = _mix_weights(mix)
    by_gender_engine: dict[tuple[str, str], list[Voice]] = {}
    for v in voices:
        by_gender_engine.setdefault((v.gender, v.engine), []).append(v)
    genders = sorted({v.gender for v in voices})
    thirds = [1 / 3] * 3
    order = {"sentence": [], "question": []}
    used = {"sentence": 0, "question": 0}
    n_commands = 0
    plans = []
    for i in range(n):
        rng = np.random.default_rng([seed, _TAG_UTT, i])
        kind = KINDS[_balanced(seed, _TAG_KIND, i, kind_w, _KIND_BLOCK)]
        labels: dict[str, Any] = {}
        if kind == "command":
            intent = INTENTS[_balanced(seed, _TAG_INTENT, n_commands, [1 / len(INTENTS)] * len(INTENTS),
                                       len(INTENTS))]
            n_commands += 1
            text, slots, keywords = _command_utterance(intent, rng)
            labels = {"intent": intent, "slots": slots, "keywords": keywords}
        else:
            pool_size = len(SENTENCES) if kind == "sentence" else len(QUESTIONS)
            tag = _TAG_SENT if kind == "sentence" else _TAG_QUEST
            if used[kind] >= len(order[kind]):  # next pass through the list, freshly shuffled
                order[kind] += np.random.default_rng([seed, tag, used[kind] // pool_size]).permutation(
                    pool_size).tolist()
            j = order[kind][used[kind]]
            used[kind] += 1
            if kind == "sentence":
                text = SENTENCES[j]
            else:
                text, answer = QUESTIONS[j]
                labels = {"answer": answer}
        voice = _pick_voice(rng, genders, by_gender_engine)
        rate_class = RATE_CLASSES[_balanced(seed, _TAG_RATE, i, thirds, 3)]
        pitch_class = PITCH_CLASSES[_balanced(seed, _TAG_PITCH, i, thirds, 3)]
        loud_class = LOUDNESS_CLASSES[_balanced(seed, _TAG_LOUD, i, thirds, 3)]
        rate = round(_RATE[rate_class] * float(rng.uniform(1 - _RATE_JITTER, 1 + _RATE_JITTER)), 3)
        pitch_jitter = float(rng.uniform(-1.0, 1.0))
        loud_target = round(_LOUDNESS[loud_class] + _LOUDNESS_JITTER * float(rng.uniform(-1.0, 1.0)), 2)
        if voice.pitch_range is None:
            pitch, pitch_class = None, None
        elif voice.engine == "espeak-ng":
            pitch = int(round(_ESPEAK_PITCH[pitch_class] + _ESPEAK_PITCH_JITTER * pitch_jitter))
        else:
            mid = (voice.pitch_range[0] + voice.pitch_range[1]) / 2
            pitch = round(mid * _FLITE_PITCH[pitch_class] * (1 + _FLITE_PITCH_JITTER * pitch_jitter), 1)
        words_mode = _balanced(seed, _TAG_MODE, i, [1 - word_timing_fraction, word_timing_fraction],
                               _KIND_BLOCK) == 1
        tokens = _word_tokens(text) if words_mode else None
        gaps = edges = None
        if tokens:
            gaps = [round(float(g), 3) for g in rng.uniform(*_GAP_RANGE, size=max(0, len(tokens) - 1))]
            edges = [round(float(e), 3) for e in rng.uniform(*_EDGE_RANGE, size=2)]
        plans.append({
            "index": i, "kind": kind, "text": text, "labels": labels, "voice": voice,
            "rate": rate, "rate_class": rate_class, "pitch": pitch, "pitch_class": pitch_class,
            "loudness_class": loud_class, "loudness_target": loud_target,
            "synthesis": "words" if tokens else "whole", "tokens": tokens, "gaps": gaps, "edges": edges,
        })
    return plans


def _digest(p: dict[str, Any]) -> str:
    v: Voice = p["voice"]
    key = (f"{_VERSION}|{p['text']}|{v.speaker}|{p['rate']}|{p['pitch']}|{p['loudness_target']}|"
           f"{p['synthesis']}|{p['tokens']}|{p['gaps']}|{p['edges']}|{SAMPLE_RATE}")
    return hashlib.sha1(key.encode()).hexdigest()[:10]


def _style(p: dict[str, Any]) -> str:
    parts = [_STYLE_WORDS["rate"][p["rate_class"]]]
    if p["pitch_class"] is not None:
        parts.append(_STYLE_WORDS["pitch"][p["pitch_class"]])
    parts.append(_STYLE_WORDS["loudness"][p["loudness_class"]])
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Signal measurements
# ---------------------------------------------------------------------------------------------


def _frame_power(x: np.ndarray, frame: int) -> np.ndarray:
    n = len(x) // frame
    if n == 0:
        return np.zeros(0)
    return (x[: n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(axis=1)


def active_rms_dbfs(x: np.ndarray, sr: int = SAMPLE_RATE, floor_db: float = 40.0) -> float:
    """RMS level (dBFS, full scale = 1.0) over the 20 ms frames within ``floor_db`` of the loudest frame.

    Silence between and around words is left out, so the value is the level of the speech itself.
    """
    pw = _frame_power(np.asarray(x, dtype=np.float64), int(0.02 * sr))
    if pw.size == 0 or pw.max() <= 0:
        return float("-inf")
    active = pw[pw >= pw.max() * 10 ** (-floor_db / 10)]
    return float(10 * np.log10(active.mean()))


def median_f0(x: np.ndarray, sr: int = SAMPLE_RATE, fmin: float = 55.0, fmax: float = 450.0,
              threshold: float = 0.15) -> float | None:
    """Median fundamental frequency (Hz) over voiced frames (YIN, de Cheveigne & Kawahara 2002); None if unvoiced.

    25 ms frames every 10 ms; a frame is voiced when its cumulative-mean-normalised difference dips
    below ``threshold`` (the first such dip is taken, which avoids octave-too-low errors); frames more
    than 30 dB below the loudest are skipped.
    """
    w, hop = int(0.025 * sr), int(0.01 * sr)
    tmin, tmax = max(2, int(sr / fmax)), int(np.ceil(sr / fmin))
    n = w + tmax
    x = np.asarray(x, dtype=np.float64)
    if len(x) < n:
        return None
    starts = hop * np.arange((len(x) - n) // hop + 1)
    seg = x[starts[:, None] + np.arange(n)[None, :]]
    head = seg[:, :w]
    e_head = (head ** 2).sum(axis=1)
    keep = e_head > e_head.max() * 1e-3
    seg, head, e_head = seg[keep], head[keep], e_head[keep]
    if len(seg) == 0 or e_head.max() <= 0:
        return None
    nfft = 1 << int(np.ceil(np.log2(2 * n)))
    # acf[t] = sum_{j<w} head[j] * seg[j + t]
    acf = np.fft.irfft(np.conj(np.fft.rfft(head, nfft, axis=1)) * np.fft.rfft(seg, nfft, axis=1), nfft, axis=1)
    acf = acf[:, : tmax + 1]
    c = np.concatenate([np.zeros((len(seg), 1)), np.cumsum(seg ** 2, axis=1)], axis=1)
    lags = np.arange(tmax + 1)
    e_lag = c[:, lags + w] - c[:, lags]  # sum_{j<w} seg[j + t]^2
    d = np.maximum(e_head[:, None] + e_lag - 2 * acf, 0.0)
    cm = np.cumsum(d[:, 1:], axis=1)
    cmnd = np.ones_like(d)
    cmnd[:, 1:] = d[:, 1:] * lags[None, 1:] / np.maximum(cm, 1e-12)
    f0s = []
    for row in cmnd:
        below = np.flatnonzero(row[tmin: tmax + 1] < threshold)
        if below.size == 0:
            continue
        t = tmin + int(below[0])
        while t + 1 <= tmax and row[t + 1] < row[t]:  # walk down to the bottom of the dip
            t += 1
        if 0 < t < tmax:  # parabolic interpolation of the minimum
            a, b, c2 = row[t - 1], row[t], row[t + 1]
            den = a - 2 * b + c2
            t = t + (0.5 * (a - c2) / den if den > 0 else 0.0)
        f0s.append(sr / t)
    if len(f0s) < 3:
        return None
    return float(np.median(f0s))


def _word_bounds(x: np.ndarray, sr: int, gap_before: float = 0.12, gap_after: float = 0.16) -> tuple[int, int]:
    """``[lo, hi)`` samples of the one word in ``x`` (10 ms frame energy), with ``_WORD_PAD`` kept each side.

    The threshold is 45 dB below the loudest frame, raised to 9 dB above the file's quiet-frame level
    (flite leaves faint breath noise around words), so weak sounds such as /h/, /f/ and /th/ are kept.
    The word is the run of frames above it around the loudest frame, bridging pauses shorter than
    ``gap_before`` / ``gap_after`` seconds before / after that frame (stop closures: up to ~0.14 s
    before a final release at slow rates), so a stray breath or click that flite's diphone voices
    put 0.13-0.3 s before a word is not part of it. ``(0, 0)`` when nothing is audible.
    """
    frame = int(0.01 * sr)
    pw = _frame_power(x, frame)
    if pw.size == 0 or pw.max() <= 0:
        return 0, 0
    thr = max(pw.max() * 10 ** (-4.5), 8 * float(np.percentile(pw, 10)))
    on = np.flatnonzero(pw > thr)
    if on.size == 0:
        return 0, 0
    before, after = int(round(gap_before / 0.01)), int(round(gap_after / 0.01))
    k = int(np.searchsorted(on, int(np.argmax(pw))))
    first = last = k
    while first > 0 and on[first] - on[first - 1] - 1 <= before:
        first -= 1
    while last < len(on) - 1 and on[last + 1] - on[last] - 1 <= after:
        last += 1
    pad = int(_WORD_PAD * sr)
    return max(0, int(on[first]) * frame - pad), min(len(x), (int(on[last]) + 1) * frame + pad)


@functools.lru_cache(maxsize=None)
def _espeak_echo(variant: str) -> tuple[int, int] | None:
    """``(delay_ms, amplitude/256)`` of an espeak-ng voice variant's echo setting, None if it has none.

    Several variants (m2, f2-f5) add an echo; when a word is synthesised alone its echo can trail
    the word by a whole delay (120-140 ms), which must not count as part of the word.
    """
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=30).stdout
        data = Path(out.split("Data at:", 1)[1].strip())
        lines = (data / "voices" / "!v" / variant).read_text(encoding="utf-8", errors="replace").splitlines()
    except (OSError, IndexError, subprocess.SubprocessError):
        return None
    echo = None
    for ln in lines:
        tok = ln.split("//", 1)[0].split()
        if len(tok) >= 3 and tok[0] == "echo":
            try:
                echo = (int(tok[1]), int(tok[2]))
            except ValueError:
                pass
    return echo if echo and echo[0] > 0 and echo[1] > 0 else None


def _dry(y: np.ndarray, sr: int, voice: Voice) -> np.ndarray:
    """``y`` with the espeak-ng variant's echo removed (for locating word ends), else ``y`` itself.

    espeak-ng's echo is recursive, ``y[n] = x[n] + a * y[n - d]`` with ``d = delay_ms * sr // 1000`` and
    ``a = amp / 256``, so ``x = y - a * y[n - d]`` recovers the dry signal to within rounding.
    """
    if voice.engine != "espeak-ng" or "+" not in voice.name:
        return y
    echo = _espeak_echo(voice.name.split("+", 1)[1])
    if echo is None:
        return y
    d, a = echo[0] * sr // 1000, echo[1] / 256.0
    out = y.astype(np.float64)
    if 0 < d < len(y):
        out[d:] -= a * y[:-d]
    return out.astype(np.float32)


def _fade(x: np.ndarray, sr: int, seconds: float = 0.005) -> np.ndarray:
    """Raised-cosine fade-in and fade-out, so cut words do not click."""
    n = min(int(seconds * sr), len(x) // 2)
    if n <= 0:
        return x
    ramp = (0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)).astype(np.float32)
    x = x.copy()
    x[:n] *= ramp
    x[-n:] *= ramp[::-1]
    return x


# ---------------------------------------------------------------------------------------------
# Rendering (runs in worker processes)
# ---------------------------------------------------------------------------------------------


def _resample(x: np.ndarray, sr: int) -> np.ndarray:
    if sr != SAMPLE_RATE and x.size:
        x = soxr.resample(x, sr, SAMPLE_RATE, quality="HQ")
    return np.asarray(x, dtype=np.float32)


def _render(p: dict[str, Any], audio_path: str, meta_path: str, tmp_dir: str) -> dict[str, Any]:
    """Synthesise one planned utterance, write its audio and sidecar; return the sidecar."""
    v: Voice = p["voice"]
    sr = SAMPLE_RATE
    words = None
    if p["synthesis"] == "words":
        pieces, words = [], []
        t = int(round(p["edges"][0] * sr))
        pieces.append(np.zeros(t, np.float32))
        for k, tok in enumerate(p["tokens"]):
            y, y_sr = _engine_audio(v, tok, p["rate"], p["pitch"], tmp_dir)
            lo, hi = _word_bounds(_resample(_dry(y, y_sr, v), y_sr), sr)
            seg = _fade(_resample(y, y_sr)[lo:hi], sr)
            if seg.size == 0:
                raise RuntimeError(f"{v.speaker} produced no audible speech for the word {tok!r} of {p['text']!r}")
            words.append({"w": tok, "start": round(t / sr, 4), "end": round((t + len(seg)) / sr, 4)})
            pieces.append(seg)
            t += len(seg)
            gap = int(round((p["gaps"][k] if k < len(p["gaps"]) else p["edges"][1]) * sr))
            pieces.append(np.zeros(gap, np.float32))
            t += gap
        x = np.concatenate(pieces)
    else:
        x = _trim(_resample(*_engine_audio(v, p["text"], p["rate"], p["pitch"], tmp_dir)), sr)
    f0 = median_f0(x, sr)
    level = active_rms_dbfs(x, sr)
    peak = float(np.abs(x).max()) if x.size else 0.0
    if not np.isfinite(level) or peak <= 0:
        raise RuntimeError(f"{v.speaker} produced silence for {p['text']!r}")
    gain_db = min(p["loudness_target"] - level, _PEAK_CEILING_DBFS - 20 * np.log10(peak))
    x = (x * 10 ** (gain_db / 20)).astype(np.float32)
    write_audio(audio_path, x, sr)
    # Measure what was written (16-bit quantisation included).
    y, _ = sf.read(audio_path, dtype="float32")
    meta = {
        "key": Path(audio_path).stem.rsplit("-", 1)[-1],
        "duration": round(len(y) / sr, 4),
        "loudness_dbfs": round(active_rms_dbfs(y, sr), 2),
        "peak_dbfs": round(float(20 * np.log10(max(float(np.abs(y).max()), 1e-10))), 2),
        "f0_hz": None if f0 is None else round(f0, 1),
        "words": words,
    }
    write_json(meta_path, meta)
    return meta


def _read_meta(audio_path: Path, meta_path: Path) -> dict[str, Any] | None:
    """The sidecar of a finished utterance, or None if it has to be rendered (again)."""
    if not (audio_path.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") != audio_path.stem.rsplit("-", 1)[-1]:
            return None
        sf.info(str(audio_path))
        return meta
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------


def build_multitask_corpus(
    out_dir: str | os.PathLike,
    n_utterances: int = 400,
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
    mix: Mapping[str, float] | None = None,
    word_timing_fraction: float = 0.5,
) -> Path:
    """Synthesise a labelled multi-task corpus into ``out_dir``; return the manifest path.

    Writes ``out_dir/audio/*.flac`` (16 kHz mono 16-bit) with a ``.json`` sidecar each,
    ``out_dir/manifest.jsonl`` (toolkit schema, audio paths relative to ``out_dir``; labels in the
    module docstring) and ``out_dir/corpus.json`` (settings and counts per class). Utterances whose
    audio and sidecar already exist are not rendered again.

    Args:
        out_dir: destination folder (created).
        n_utterances: how many utterances.
        seed: everything (texts, voices, classes, gaps) is determined by it (>= 0).
        workers: parallel worker processes.
        progress: show a tqdm progress bar.
        mix: fraction of each kind, ``{"sentence": .4, "command": .3, "question": .3}`` by default
            (normalised; kinds left out get none). Balanced exactly within blocks of 20 utterances.
        word_timing_fraction: share of utterances synthesised word by word with exact ``words`` times.

    Raises:
        RuntimeError: no TTS engine installed (``apt-get install espeak-ng flite``), or an engine
            failed on an utterance.
        ValueError: a bad ``mix``, ``word_timing_fraction`` or ``seed``.
    """
    out = Path(out_dir)
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    voices = available_voices()
    plans = _plan(n_utterances, seed, voices, mix, word_timing_fraction)
    paths = []
    for p in plans:
        p["id"] = f"multitask-s{seed}-{p['index']:05d}"
        stem = f"{p['id']}-{_digest(p)}"
        paths.append((audio_dir / f"{stem}.flac", audio_dir / f"{stem}.json"))
    metas: list[dict[str, Any] | None] = [_read_meta(a, m) for a, m in paths]
    todo = [j for j, m in enumerate(metas) if m is None]
    if todo:
        tmp_dir = Path(tempfile.mkdtemp(prefix=".tts-", dir=out))
        bar = None
        try:
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(plans), initial=len(plans) - len(todo), desc="synthesising", unit="utt")
            if workers <= 1 or len(todo) == 1:
                for j in todo:
                    metas[j] = _render(plans[j], str(paths[j][0]), str(paths[j][1]), str(tmp_dir))
                    if bar is not None:
                        bar.update(1)
            else:
                # forkserver: workers do not inherit the threads (torch, tokenizers) of the caller.
                method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
                with ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                                         mp_context=multiprocessing.get_context(method)) as pool:
                    futures = {pool.submit(_render, plans[j], str(paths[j][0]), str(paths[j][1]), str(tmp_dir)): j
                               for j in todo}
                    pending = set(futures)
                    while pending:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            if fut.exception() is not None:
                                for f in pending:
                                    f.cancel()
                                raise fut.exception()  # type: ignore[misc]
                            metas[futures[fut]] = fut.result()
                            if bar is not None:
                                bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            shutil.rmtree(tmp_dir, ignore_errors=True)
    records = []
    for p, (audio, _), meta in zip(plans, paths, metas):
        assert meta is not None
        v: Voice = p["voice"]
        r: dict[str, Any] = {
            "id": p["id"],
            "audio": audio.relative_to(out).as_posix(),
            "duration": meta["duration"],
            "text": p["text"],
            "language": "en",
            "kind": p["kind"],
            "question": p["kind"] == "question" or p["text"].rstrip().endswith("?"),
            **p["labels"],
            "speaker": v.speaker,
            "gender": v.gender,
            "engine": v.engine,
            "voice_family": v.family,
            "accent": v.accent,
            "rate_class": p["rate_class"],
            "rate": p["rate"],
            "rate_wpm": round(_ESPEAK_DEFAULT_WPM * p["rate"]) if v.engine == "espeak-ng" else None,
        }
        if p["pitch_class"] is not None:
            r["pitch_class"] = p["pitch_class"]
        r.update({
            "pitch": p["pitch"],
            "pitch_unit": None if p["pitch"] is None else ("espeak-0-99" if v.engine == "espeak-ng" else "hz"),
            "f0_hz": meta["f0_hz"],
            "loudness_class": p["loudness_class"],
            "loudness_dbfs": meta["loudness_dbfs"],
            "peak_dbfs": meta["peak_dbfs"],
            "style": _style(p),
            "synthesis": p["synthesis"],
        })
        if meta["words"] is not None:
            r["words"] = meta["words"]
        records.append(r)
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, records)

    def counts(key: str, values: Sequence[str]) -> dict[str, int]:
        c = {val: sum(r.get(key) == val for r in records) for val in values}
        missing = sum(key not in r for r in records)
        return {**c, "none": missing} if missing else c

    write_json(out / "corpus.json", {
        "seed": seed,
        "n_utterances": n_utterances,
        "sample_rate": SAMPLE_RATE,
        "hours": round(sum(r["duration"] for r in records) / 3600, 4),
        "mix": dict(zip(KINDS, _mix_weights(mix))),
        "word_timing_fraction": word_timing_fraction,
        "settings": {"rate": _RATE, "espeak_pitch": _ESPEAK_PITCH, "flite_pitch_factor": _FLITE_PITCH,
                     "loudness_target_dbfs": _LOUDNESS, "peak_ceiling_dbfs": _PEAK_CEILING_DBFS,
                     "word_gap_s": list(_GAP_RANGE)},
        "speakers": len({r["speaker"] for r in records}),
        "kind": counts("kind", KINDS),
        "synthesis": counts("synthesis", ("whole", "words")),
        "rate_class": counts("rate_class", RATE_CLASSES),
        "pitch_class": counts("pitch_class", PITCH_CLASSES),
        "loudness_class": counts("loudness_class", LOUDNESS_CLASSES),
        "gender": counts("gender", ("male", "female")),
        "engine": counts("engine", ("espeak-ng", "flite")),
        "intent": {k: v for k, v in counts("intent", INTENTS).items() if k != "none"},
        "questions": sum(r["question"] for r in records),
    })
    return manifest
