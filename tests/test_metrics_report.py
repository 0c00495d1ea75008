"""Tests for speechlm.evaluation.metrics and speechlm.evaluation.report (pure CPU, no model downloads, a few seconds)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from speechlm.evaluation import wer as metrics
from speechlm.evaluation.metrics import (
    METRICS,
    accuracy,
    cer,
    cer_details,
    compute_metric,
    normalize_english,
    utterance_wer,
    wer_details,
)
from speechlm.evaluation.report import (
    comparison_table,
    markdown_table,
    print_comparison,
    summarize_rows,
    write_eval_outputs,
)
from speechlm.training.loss_plot import plot_loss_curve, read_loss_log

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WHISPER = metrics.NORMALIZER_NAME.startswith("whisper_normalizer")


# ------------------------------------------------------------------------------------------------
# Normalizer
# ------------------------------------------------------------------------------------------------


def test_normalizer_basic_cases():
    assert normalize_english("Hello,   World!") == "hello world"
    assert normalize_english("") == ""
    assert normalize_english(None) == ""
    assert normalize_english("  \n\t ") == ""
    out = normalize_english("Mr. Smith's 42 cats!")
    assert "42" in out and "cats" in out and "smith" in out
    assert "!" not in out and "." not in out and out == out.lower()


@pytest.mark.skipif(not WHISPER, reason="Whisper-specific conventions need whisper_normalizer")
def test_whisper_conventions():
    assert normalize_english("Mr. Smith's 42 cats!") == "mister smith is 42 cats"
    assert normalize_english("colour") == "color"
    assert normalize_english("twenty one") == "21"
    assert normalize_english("don't") == "do not"
    assert normalize_english("[noise] hello (laughs) there") == "hello there"


def test_zero_is_consistent_between_ref_and_hyp():
    # Whatever the normalizer does with "zero", both spellings must land on the same string.
    assert normalize_english("zero") == normalize_english("0")
    assert normalize_english("I have zero apples") == normalize_english("i have 0 apples")
    assert utterance_wer("I have zero apples.", "i have 0 apples") == 0.0


# ------------------------------------------------------------------------------------------------
# WER / CER / accuracy
# ------------------------------------------------------------------------------------------------


def test_wer_hand_computed():
    # ref: the cat sat on the mat (6)   hyp: a cat sat the mat today
    # the->a (S), cat, sat, "on" deleted (D), the, mat, + today (I) => 3 errors / 6, hits 4
    # (the only minimum-cost alignment: substituting on/the/mat instead would cost 4)
    d = wer_details(["the cat sat on the mat"], ["a cat sat the mat today"])
    assert (d["substitutions"], d["deletions"], d["insertions"]) == (1, 1, 1)
    assert d["ref_words"] == 6 and d["n"] == 1 and d["hits"] == 4
    assert d["wer"] == pytest.approx(3 / 6)


def test_wer_is_corpus_level():
    # 1 error over 2 words + 0 errors over 8 words = 1/10, not the mean of 0.5 and 0.
    d = wer_details(["a b", "c d e f g h i j"], ["a x", "c d e f g h i j"])
    assert d["wer"] == pytest.approx(0.1)
    assert d["n"] == 2 and d["ref_words"] == 10


def test_wer_empty_hyp_counts_deletions():
    d = wer_details(["hello world again"], [""])
    assert (d["substitutions"], d["deletions"], d["insertions"]) == (0, 3, 0)
    assert d["wer"] == 1.0
    assert utterance_wer("hello world", None) == 1.0


def test_wer_empty_ref_counts_insertions():
    d = wer_details([""], ["some extra words"])
    assert (d["substitutions"], d["deletions"], d["insertions"]) == (0, 0, 3)
    assert d["ref_words"] == 0 and d["wer"] == 1.0  # capped, never inf
    assert wer_details([""], [""])["wer"] == 0.0
    # Reference that is empty only *after* normalization (punctuation only).
    assert wer_details(["?!"], ["yes"])["insertions"] == 1
    # Mixed: empty ref's words are insertions against the other utterances' reference words.
    d = wer_details(["", "a b"], ["x y", "a b"])
    assert d["insertions"] == 2 and d["ref_words"] == 2 and d["wer"] == pytest.approx(1.0)


def test_wer_normalize_flag():
    assert wer_details(["Hello, world!"], ["hello world"])["wer"] == 0.0
    raw = wer_details(["Hello, world!"], ["hello world"], normalize=False)
    assert raw["substitutions"] == 2 and raw["wer"] == 1.0


def test_wer_input_validation():
    with pytest.raises(ValueError):
        wer_details(["a"], ["a", "b"])
    with pytest.raises(TypeError):
        wer_details("a b", "a b")  # type: ignore[arg-type]
    assert wer_details([], [])["wer"] == 0.0


def test_cer_hand_computed():
    # "abcd" vs "abxd": 1 substitution over 4 characters.
    assert cer(["abcd"], ["abxd"], normalize=False) == pytest.approx(0.25)
    d = cer_details(["ab cd"], ["ab cd e"], normalize=False)  # spaces count: +" e" = 2 insertions
    assert d["insertions"] == 2 and d["ref_chars"] == 5
    assert cer([""], ["ab"]) == 1.0 and cer(["ab"], [""]) == 1.0


def test_accuracy_and_registry():
    a = accuracy(["Happy", "sad", "angry"], ["happy.", "angry", "Angry!"])
    assert a == {"accuracy": pytest.approx(2 / 3), "correct": 2, "n": 3}
    assert set(METRICS) >= {"wer", "cer", "accuracy"}
    for name in ("wer", "cer", "accuracy"):
        out = METRICS[name](["a b"], ["a b"])
        assert name in out and out["n"] == 1
    assert compute_metric("wer", ["a b"], ["a c"])["wer"] == 0.5
    with pytest.raises(KeyError, match="known"):
        compute_metric("bleu", ["a"], ["a"])


# ------------------------------------------------------------------------------------------------
# Report outputs
# ------------------------------------------------------------------------------------------------

ROWS = [
    {"id": "u1", "system": "speechlm (trained)", "subset": "clean", "ref": "the cat sat", "hyp": "the cat sat"},
    {"id": "u2", "system": "speechlm (trained)", "subset": "other", "ref": "a b c d", "hyp": "a b x d"},
    {"id": "u1", "system": "speechlm (untrained)", "subset": "clean", "ref": "the cat sat", "hyp": "dog"},
    {"id": "u2", "system": "speechlm (untrained)", "subset": "other", "ref": "a b c d", "hyp": ""},
]


def test_summarize_rows():
    s = summarize_rows(ROWS)
    assert list(s) == ["speechlm (trained)", "speechlm (untrained)"]
    t = s["speechlm (trained)"]
    assert list(t) == ["clean", "other", "all"]
    assert t["clean"]["wer"] == 0.0 and t["other"]["wer"] == 0.25
    assert t["all"]["wer"] == pytest.approx(1 / 7) and t["all"]["n"] == 2
    assert s["speechlm (untrained)"]["other"]["deletions"] == 4


def test_write_eval_outputs(tmp_path: Path):
    summary = {"asr": {"wer": 0.1429, "n": 2}}
    paths = write_eval_outputs(tmp_path / "eval", ROWS, summary)
    assert set(paths) == {"results", "summary", "report"}
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())

    lines = [json.loads(x) for x in paths["results"].read_text().splitlines()]
    assert len(lines) == 4
    assert list(lines[0])[:6] == ["id", "system", "subset", "ref", "hyp", "wer"]
    assert lines[1]["wer"] == 0.25 and lines[3]["wer"] == 1.0

    s = json.loads(paths["summary"].read_text())
    assert s["asr"]["wer"] == 0.1429
    assert s["by_system"]["speechlm (untrained)"]["clean"]["wer"] == 1.0
    assert s["normalizer"] == metrics.NORMALIZER_NAME

    md = paths["report"].read_text()
    assert md.startswith("# Evaluation report")
    assert "| speechlm (trained) | 0.0 | 25.0 | 14.3 | 2 |" in md
    assert "| speechlm (untrained) | 100.0 | 100.0 | 100.0 | 2 |" in md
    assert "Worst" in md and "asr" in md
    # No temp files left behind by the atomic writes.
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["report.md", "results.jsonl", "summary.json"]


def test_write_eval_outputs_keeps_given_by_system_and_nan(tmp_path: Path):
    given = {"by_system": {"sys": {"test": {"wer": float("nan"), "n": 0}}}}
    paths = write_eval_outputs(tmp_path, [], given)
    s = json.loads(paths["summary"].read_text())  # NaN would make this invalid JSON
    assert s["by_system"]["sys"]["test"]["wer"] is None
    assert "| sys | - | 0 |" in paths["report"].read_text()
    assert paths["results"].read_text() == ""


def test_markdown_table():
    md = markdown_table(["Name", "Score"], [["a|b", 1.5], ["c", "2"]])
    lines = md.splitlines()
    assert lines[0] == "| Name | Score |"
    assert lines[1] == "| :--- | ---: |"
    assert lines[2] == "| a\\|b | 1.5 |"
    assert len(lines) == 4
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["only one"]])


def test_comparison_table():
    by_system = {
        "speechlm (trained)": {"test-clean": {"wer": 0.1234, "n": 100}, "test-other": {"wer": 0.25, "n": 50}},
        "whisper tiny.en decoder": {"test-clean": {"wer": 0.056, "n": 100}},
    }
    md = comparison_table(by_system)
    lines = md.splitlines()
    assert lines[0] == "| System (WER %) | test-clean | test-other | Utts |"
    assert lines[2] == "| speechlm (trained) | 12.3 | 25.0 | 150 |"
    assert lines[3] == "| whisper tiny.en decoder | 5.6 | - | 100 |"


def test_print_comparison():
    from rich.console import Console

    buf = io.StringIO()
    by_system = {"a": {"s": {"wer": 0.5, "n": 2}}, "b [x]": {"s": {"wer": 0.25, "n": 2}}}
    table = print_comparison(by_system, console=Console(file=buf, width=100, color_system=None))
    out = buf.getvalue()
    assert "50.0" in out and "25.0" in out and "b [x]" in out
    assert table.row_count == 2


# ------------------------------------------------------------------------------------------------
# Loss plot
# ------------------------------------------------------------------------------------------------


def _write_log(path: Path, records: list[dict], extra: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + extra)
    return path


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 100 and data[:8] == PNG_MAGIC


def test_plot_loss_curve(tmp_path: Path):
    recs = [{"step": s, "loss": 3.0 / (1 + s / 20), "lr": 1e-4, "samples_per_s": 5.1, "split": "train"} for s in range(0, 200, 2)]
    recs += [{"step": s, "split": "val", "loss": 2.0 / (1 + s / 40)} for s in (50, 100, 150)]
    recs += [{"step": 10, "event": "checkpoint"}, {"step": 12, "loss": float("nan")}]
    log = _write_log(tmp_path / "train_log.jsonl", recs, extra='{"step": 999, "loss": 1.')  # torn last line
    series = read_loss_log(log)
    assert len(series["train"]) == 100 and len(series["val"]) == 3
    png = plot_loss_curve(log, tmp_path / "plots" / "loss.png")
    assert png == tmp_path / "plots" / "loss.png"
    _assert_png(png)


def test_plot_loss_curve_one_point_and_none(tmp_path: Path):
    one = _write_log(tmp_path / "one.jsonl", [{"step": 1, "loss": 2.3}])
    _assert_png(plot_loss_curve(one, tmp_path / "one.png"))
    empty = _write_log(tmp_path / "empty.jsonl", [])
    _assert_png(plot_loss_curve(empty, tmp_path / "empty.png"))
    with pytest.raises(FileNotFoundError, match="training log not found"):
        plot_loss_curve(tmp_path / "missing.jsonl", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_resumed_log_keeps_latest_duplicate_step(tmp_path: Path):
    log = _write_log(tmp_path / "r.jsonl", [{"step": 5, "loss": 9.0}, {"step": 3, "loss": 1.0}, {"step": 5, "loss": 2.0}])
    assert read_loss_log(log) == {"train": [(3.0, 1.0), (5.0, 2.0)]}
    assert not math.isnan(read_loss_log(log)["train"][0][1])
