"""Start-up time of the CLI: ``speechlm --help`` and ``speechlm ls`` against ``python -c pass``.

    python benchmarks/bench_cli.py            # ~1 min on 2 cores -> results/cli_startup.json

Each command runs as a fresh process (what a user waits for), ``--repeats`` times, interleaved so a slow
moment of a shared VM hits every command alike; the median is reported, and the ratio to the interpreter's
own start-up. For comparison it also times ``python -c "import torch, transformers"``: what the CLI paid
before its parser was read from source (:mod:`speechlm.introspect`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _time(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cli_startup.json"))
    args = ap.parse_args()
    exe = shutil.which("speechlm")
    py = sys.executable
    commands = {
        "python -c pass": [py, "-c", "pass"],
        "speechlm --help": [exe, "--help"] if exe else [py, "-m", "speechlm.cli", "--help"],
        "speechlm ls": [exe, "ls"] if exe else [py, "-m", "speechlm.cli", "ls"],
        "speechlm train --help": [exe, "train", "--help"] if exe else [py, "-m", "speechlm.cli", "train", "--help"],
        "python -c 'import torch, transformers'": [py, "-c", "import torch, transformers"],
    }
    for cmd in commands.values():  # warm the page cache once
        _time(cmd)
    times: dict[str, list[float]] = {k: [] for k in commands}
    for r in range(args.repeats):
        order = list(commands)[r % len(commands):] + list(commands)[: r % len(commands)]
        for name in order:
            times[name].append(_time(commands[name]))
    base = statistics.median(times["python -c pass"])
    result = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "repeats": args.repeats,
        "median_s": {k: round(statistics.median(v), 4) for k, v in times.items()},
        "ratio_to_python_pass": {k: round(statistics.median(v) / base, 2) for k, v in times.items()},
        "all_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for k in commands:
        print(f"{k:<42} {result['median_s'][k]:.3f} s  ({result['ratio_to_python_pass'][k]:.1f}x python -c pass)")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
