"""Small shared helpers: atomic file writes, cache folder, logging to the console."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    A crash or exception half-way leaves the old file (or no file) in place, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the final file should look like any other
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (a report is never left half-written)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Atomically write one JSON object per line; returns the number of lines."""
    n = 0
    with atomic_open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename the finished folder ``src`` to ``dst``; an existing ``dst`` is moved aside first and removed after, so
    ``dst`` names either the old folder or the new one, never a half-written one."""
    src, dst = Path(src), Path(dst)
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (old one removed after)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cache_root() -> Path:
    """Where converted backbones are cached: $SPEECHLM_CACHE, else $XDG_CACHE_HOME/speechlm, else ~/.cache/speechlm."""
    if os.environ.get("SPEECHLM_CACHE"):
        return Path(os.environ["SPEECHLM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "speechlm"


def real_data_root() -> Path | None:
    """The shared real-speech folder (``../shared/data/real`` beside the checkout) or $SPEECHLM_REAL_DATA; None if absent."""
    env = os.environ.get("SPEECHLM_REAL_DATA")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent.parent
    candidates += [here.parent / "shared" / "data" / "real", here / "shared" / "data" / "real", Path.cwd().parent / "shared" / "data" / "real"]
    for c in candidates:
        if (c / "manifest.jsonl").exists():
            return c
    return None


def _md_cell(value: Any) -> str:
    # Pipes would end the cell and newlines the row, so escape/flatten them.
    return " ".join(str(value).split()).replace("|", "\\|") if value is not None else ""


def markdown_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """GitHub-flavoured Markdown table; ``align`` per column is "l", "r" or "c" (default: first
    column left, columns whose every cell looks numeric right-aligned). Cells are str()-ed."""
    ncol = len(headers)
    for i, row in enumerate(rows):
        if len(row) != ncol:
            raise ValueError(f"row {i} has {len(row)} cells, expected {ncol}")
    if align is None:
        align = ["l"] + ["r" if rows and all(looks_numeric(row[c]) for row in rows) else "l" for c in range(1, ncol)]
    if len(align) != ncol:
        raise ValueError(f"align has {len(align)} entries, expected {ncol}")
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(_md_cell(h) for h in headers) + " |",
        "| " + " | ".join(rule[a] for a in align) + " |",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def looks_numeric(value: Any) -> bool:
    if isinstance(value, (int, float)):
        return True
    s = str(value).strip().rstrip("%")
    if s in ("-", ""):
        return True
    try:
        float(s)
        return True
    except ValueError:
        return False
