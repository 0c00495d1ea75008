"""Speaker-disjoint multi-task train/test manifests from every labelled part of the shared real data.

:func:`speechlm.corpora.real.prepare_real_splits` makes ASR splits from the parts with English transcripts;
this module covers *all* parts of ``shared/data/real`` (see its README) and writes the labels under the
field names the task records read (:mod:`speechlm.tasks.library`), so ``speechlm.tasks.mixture.eligible`` finds,
for each task, the lines that serve it:

=====================  ======================================================================================
field                  where it comes from
=====================  ======================================================================================
``text``               English transcripts only (ravdess, fsdd, asr_en, the English asr_multi clips), so the
                       ASR task stays English. Other languages go to ``text_<language>`` (EmoDB's German
                       sentences to ``text_de``); ``language`` is kept on every line that has it.
``emotion``            as given (ravdess; emodb's ``anger`` / ``happiness`` ... are mapped by the ``ser``
                       task's aliases, so they are left as published).
``emotion_intensity``  ravdess (``normal`` / ``strong``) -> task ``ssr-intensity``.
``gender``             ravdess, librispeech, emodb, fsdd (all male), the asr_en clips that have it. The
                       infant cries' gender is kept as ``infant_gender`` instead (``cry_gender=True`` puts it in
                       ``gender``): infants' cries carry no reliable cue to sex, so as ``sgc`` examples they
                       would be label noise in training and chance-level rows in the test scores.
``age_group``          emodb: from ``age`` in years (:func:`age_group_from_years`; its speakers are 21-35 ->
                       ``adult``); ravdess: ``adult`` (the actors were 21-33, Livingstone & Russo 2018);
                       donateacry: ``infant`` from ``age_bucket``, except ``>2y`` -> ``child``
                       (:data:`CRY_AGE_GROUPS`). fsdd / librispeech / asr_en: unknown, left out.
``event``              donateacry -> ``baby_cry``; events/ as given (laughter, dog, car_horn, thunderstorm).
``digit``              fsdd, as a string ``"0"`` .. ``"9"`` (the ``digits`` task's labels).
=====================  ======================================================================================

Every line also gets ``corpus`` (the part) and ``split_unit`` (what it was split by, below). Other published
fields (``speaker``, ``age``, ``cry_reason``, ``age_bucket``, ``segments``, ``label_quality``, ``source``,
``license``, ...) are kept as they are; the real manifest's ``tasks`` list (names of *its* label kinds, which
are not the toolkit's task names) is dropped. Audio paths are absolute; the audio is never copied.

Splitting
---------
Each part is split on its own into *units* that never straddle train and test:

* the ``speaker`` label where a clip has one (ravdess, fsdd, librispeech, emodb, some asr_en);
* donateacry: the donor's device id (the UUID that starts each file name): one family's phone records
  one baby (or siblings), so a device's cries stay on one side;
* asr_en clips without a speaker from one LibriVox chapter or one pocketsphinx test set
  (:data:`SAME_SPEAKER_FOLDERS`): that folder;
* otherwise the clip itself (events, asr_multi, the remaining asr_en clips): a deterministic split by
  clip id, which ``splits.json`` states per part (``unit``).

About ``test_fraction_speakers`` of a part's units go to test (at least one when the part has two or
more, never all of them). They are drawn round-robin over *strata*: the unit's gender for parts that
label it (so a test set of two or more speakers holds both genders when the part has them), the event
for ``events``, the language for ``asr_multi``. A stratum gives a unit to test only while it keeps one in
train (so no event class or gender is test-only), unless the part has too few units to allow that
(emodb: two speakers, one of each gender; one goes to test). Everything is a function of ``seed`` and
the part name, so adding a part does not reshuffle the others.
"""

from __future__ import annotations

import os
import re
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from speechlm.data.manifest import Cut, iter_manifest, write_manifest
from speechlm.utils import real_data_root, write_json

__all__ = [
    "ADULT_SOURCES",
    "CRY_AGE_GROUPS",
    "SAME_SPEAKER_FOLDERS",
    "TASK_FIELDS",
    "age_group_from_years",
    "map_labels",
    "prepare_real_multitask",
    "split_unit",
    "task_counts",
]

ADULT_SOURCES = {"ravdess": "RAVDESS actors were 21-33 years old (Livingstone & Russo 2018, PLoS ONE 13(5))"}
"""Parts whose speakers are all adults by their documentation, so ``age_group`` is ``adult``."""

CRY_AGE_GROUPS = {"0-4w": "infant", "4-8w": "infant", "2-6m": "infant", "7m-2y": "infant", ">2y": "child"}
"""donateacry ``age_bucket`` -> ``age_group``."""

SAME_SPEAKER_FOLDERS = ("asr_en/pocketsphinx_librivox", "asr_en/pocketsphinx_cards")
"""Folders of speaker-less clips that hold one speaker each (one LibriVox chapter; one test-set reader)."""

TASK_FIELDS = {"asr": "text", "ser": "emotion", "sgc": "gender", "sap": "age_group",
               "ssr-intensity": "emotion_intensity", "ved": "event", "digits": "digit"}
"""The tasks these manifests serve and the field each reads (``splits.json`` counts lines per task)."""

_DROP = ("tasks", "path", "sr")  # real-manifest bookkeeping that is no label
_UUID = re.compile(r"^([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})-")


def age_group_from_years(age: Any) -> str | None:
    """Age in years -> ``infant`` (< 2), ``child`` (2-12), ``adult`` (13-64), ``senior`` (65+); None if unknown."""
    try:
        years = float(age)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(years) or years < 0:
        return None
    return "infant" if years < 2 else "child" if years < 13 else "adult" if years < 65 else "senior"


def _corpus(cut_id: str) -> str:
    return cut_id.split("/", 1)[0]


def split_unit(cut: Cut) -> tuple[str, str]:
    """``(unit, kind)``: the group a clip is split with, and what kind of group it is (see module doc)."""
    src = _corpus(cut.id)
    if cut.speaker:
        return f"speaker:{cut.speaker}", "speaker"
    name = cut.id.rsplit("/", 1)[-1]
    if src == "donateacry":
        m = _UUID.match(name)
        if m:
            return f"device:{m.group(1).lower()}", "device"
    folder = cut.id.rsplit("/", 1)[0]
    if folder in SAME_SPEAKER_FOLDERS:
        return f"folder:{folder}", "folder"
    return f"clip:{cut.id}", "clip"


def map_labels(cut: Cut, cry_gender: bool = False) -> Cut:
    """A copy of a real-manifest cut with its labels under the task fields (module doc, table)."""
    src = _corpus(cut.id)
    labels = {k: v for k, v in cut.labels.items() if k not in _DROP}
    labels["corpus"] = src
    text = cut.text.strip()
    lang = labels.get("language")
    if text and lang not in (None, "en"):
        labels[f"text_{lang}"] = text
        text = ""
    if "digit" in labels and labels["digit"] is not None:
        labels["digit"] = str(labels["digit"])
    if src == "donateacry":
        labels.setdefault("event", "baby_cry")
        group = CRY_AGE_GROUPS.get(str(labels.get("age_bucket")), "infant")
        labels["age_group"] = group
        if not cry_gender and "gender" in labels:
            labels["infant_gender"] = labels.pop("gender")
    elif src in ADULT_SOURCES:
        labels["age_group"] = "adult"
    elif labels.get("age") is not None:
        group = age_group_from_years(labels["age"])
        if group is not None:
            labels["age_group"] = group
    labels["split_unit"] = split_unit(cut)[0]
    return Cut(id=cut.id, audio=cut.audio, start=cut.start, duration=cut.duration, text=text, labels=labels)


def _stratum(src: str, cuts: list[Cut]) -> str:
    """The stratum of a unit: its (majority) gender, event or language, by part."""
    key = {"events": "event", "asr_multi": "language"}.get(src, "gender")
    if src == "donateacry" and key == "gender":
        values = Counter(str(c.labels.get("gender", c.labels.get("infant_gender"))) for c in cuts)
    else:
        values = Counter(str(c.labels.get(key)) for c in cuts)
    top = values.most_common()
    if len(top) > 1 and top[0][1] == top[1][1]:
        return "mixed"
    return top[0][0] if top else "None"


def _pick_test_units(strata: dict[str, str], k: int, rng: np.random.Generator) -> list[str]:
    """``k`` units drawn round-robin over strata; a stratum gives only while it keeps one unit in train,
    then (if ``k`` is not reached) round-robin without that rule."""
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for unit in sorted(strata):
        by_stratum[strata[unit]].append(unit)
    queues = {s: [u[j] for j in rng.permutation(len(u))] for s, u in sorted(by_stratum.items())}
    order = sorted(queues)
    order = [order[j] for j in rng.permutation(len(order))]
    picked: list[str] = []
    for keep in (1, 0):
        while len(picked) < k:
            progress = False
            for s in order:
                if len(picked) < k and len(queues[s]) > keep:
                    picked.append(queues[s].pop(0))
                    progress = True
            if not progress:
                break
    return sorted(picked)


def task_counts(cuts: list[Cut]) -> dict[str, int]:
    """Lines per task of :data:`TASK_FIELDS` (by ``speechlm.tasks.mixture.eligible``, which raises on an invalid label)."""
    from speechlm.tasks.mixture import eligible
    from speechlm.tasks import get_task

    return {name: len(eligible(cuts, get_task(name))) for name in TASK_FIELDS}


def prepare_real_multitask(
    real_root: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "data/real_multitask",
    test_fraction_speakers: float = 0.2,
    seed: int = 0,
    max_per_source: int | None = None,
    max_test_per_source: int | None = None,
    cry_gender: bool = False,
) -> dict[str, Path]:
    """Write ``train.jsonl``, ``test.jsonl`` and ``splits.json`` into ``out_dir`` (see module doc).

    Args:
        real_root: the shared real-data folder; None means :func:`speechlm.utils.real_data_root`.
        out_dir: where the files go (created if needed).
        test_fraction_speakers: share of each part's split units (speakers, devices, clips) held out for test;
            rounded, at least one unit when a part has two or more, never all of them.
        seed: chooses the test units and the subsamples.
        max_per_source: cap on *training* clips per part, sampled deterministically (test sets are not
            capped by it, so scores stay comparable across caps).
        max_test_per_source: cap on test clips per part (None: no cap), for quick evaluations.
        cry_gender: put the infant cries' gender in ``gender`` (the ``sgc`` field) instead of ``infant_gender``.

    Returns:
        ``{"train": path, "test": path, "splits": path}``.

    Raises:
        FileNotFoundError: no real-data folder given or found.
        speechlm.data.manifest.ManifestError: a mapped label outside a task's label set (names the clip).
    """
    if not 0.0 <= test_fraction_speakers < 1.0:
        raise ValueError(f"test_fraction_speakers must be in [0, 1), got {test_fraction_speakers}")
    root = Path(real_root) if real_root is not None else real_data_root()
    if root is None or not (Path(root) / "manifest.jsonl").exists():
        raise FileNotFoundError(f"real-speech manifest not found (looked in {root}); "
                                "set SPEECHLM_REAL_DATA or pass real_root")
    root = Path(root)
    by_source: dict[str, list[Cut]] = defaultdict(list)
    missing: Counter = Counter()
    for cut in iter_manifest(root / "manifest.jsonl"):
        src = _corpus(cut.id)
        if not os.path.exists(cut.audio):
            missing[src] += 1
            continue
        by_source[src].append(map_labels(cut, cry_gender=cry_gender))

    train: list[Cut] = []
    test: list[Cut] = []
    info: dict[str, Any] = {}
    for src in sorted(by_source):
        cuts = by_source[src]
        salt = zlib.crc32(src.encode())  # per-part streams: adding a part does not reshuffle the others
        units: dict[str, list[Cut]] = defaultdict(list)
        kinds: Counter = Counter()
        for c in cuts:
            units[c.labels["split_unit"]].append(c)
            kinds[split_unit(c)[1]] += 1
        n = len(units)
        k = 0
        if n >= 2 and test_fraction_speakers > 0:
            k = min(n - 1, max(1, round(test_fraction_speakers * n)))
        strata = {u: _stratum(src, cs) for u, cs in units.items()}
        test_units = set(_pick_test_units(strata, k, np.random.default_rng([seed, salt, 0])))
        src_test = [c for c in cuts if c.labels["split_unit"] in test_units]
        src_train = [c for c in cuts if c.labels["split_unit"] not in test_units]
        for part, cap, stream in ((src_train, max_per_source, 1), (src_test, max_test_per_source, 2)):
            if cap is not None and len(part) > cap:
                keep = np.sort(np.random.default_rng([seed, salt, stream]).choice(len(part), size=cap, replace=False))
                part[:] = [part[j] for j in keep]
        train += src_train
        test += src_test
        unit_kind = "+".join(sorted(kinds)) if kinds else "none"
        info[src] = {
            "unit": unit_kind,
            "units": n,
            "strata": dict(sorted(Counter(strata.values()).items())),
            "test_units": sorted(test_units),
            "test_strata": dict(sorted(Counter(strata[u] for u in test_units).items())),
            "train_units": len({c.labels["split_unit"] for c in src_train}),
            "train_clips": len(src_train),
            "test_clips": len(src_test),
            "tasks": {"train": task_counts(src_train), "test": task_counts(src_test)},
        }
        if missing[src]:
            info[src]["missing_audio"] = missing[src]
    for src in sorted(set(missing) - set(by_source)):
        info[src] = {"missing_audio": missing[src], "train_clips": 0, "test_clips": 0}

    out = Path(out_dir)
    paths = {"train": out / "train.jsonl", "test": out / "test.jsonl", "splits": out / "splits.json"}
    write_manifest(paths["train"], train)  # atomic; Cut audio paths are absolute
    write_manifest(paths["test"], test)
    write_json(paths["splits"], {
        "real_root": str(root.resolve()), "seed": seed, "test_fraction_speakers": test_fraction_speakers,
        "max_per_source": max_per_source, "max_test_per_source": max_test_per_source, "cry_gender": cry_gender,
        "task_fields": TASK_FIELDS,
        "tasks": {"train": task_counts(train), "test": task_counts(test)},
        "clips": {"train": len(train), "test": len(test)},
        "sources": info,
    })
    return paths
