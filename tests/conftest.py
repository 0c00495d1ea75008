"""Shared fixtures: a tiny training manifest of tone clips, and the repo's test factories on the path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tone_manifest(tmp_path: Path) -> Path:
    """12 clips of 0.5-1.5 s whose pitch encodes one of six words: a task a tiny model can learn."""
    import json

    import numpy as np
    import soundfile as sf

    words = ["zero", "one", "two", "three", "four", "five"]
    (tmp_path / "wav").mkdir()
    lines = []
    for i in range(12):
        t = np.arange(int((0.5 + (i % 3) * 0.5) * 16000)) / 16000
        sf.write(tmp_path / "wav" / f"{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 80 * (i % 6)) * t)).astype("float32"), 16000)
        lines.append(json.dumps({"id": f"u{i}", "audio": f"wav/{i}.wav", "text": words[i % 6], "speaker": f"s{i % 2}"}))
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one torch thread, and other test files may share the two cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
