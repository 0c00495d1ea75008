"""The package's architecture, checked: imports flow one way between concerns, with no circles, and the CLI
builds its parser and lists registries without importing torch or transformers.

Every ``import`` counts, module-level or inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "speechlm"

LAYERS: list[tuple[str, ...]] = [
    ("utils", "config", "introspect"),
    ("data", "backbones"),
    ("tasks",),
    ("model",),
    ("tokenizers", "vocoders"),
    ("checkpoint",),
    ("training", "inference", "corpora", "export"),
    ("evaluation", "serving"),
    ("demos",),
    ("cli",),
]
"""Bottom to top. A concern may import its own modules and any lower layer; never a sibling in its layer or a
higher layer. README's layout section describes the same order."""

LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """speechlm modules that ``path`` imports anywhere in its body (``from pkg import mod`` resolves to pkg.mod)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "speechlm"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
            if base.split(".")[0] != "speechlm":
                continue
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return out


def _concern(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(p, m, set(mods)) - {m} for m, p in mods.items()}


def test_every_module_belongs_to_a_layer(graph):
    stray = sorted(m for m in graph if m != "speechlm" and _concern(m) not in LAYER_OF)
    assert not stray, f"modules outside every layer (add them to LAYERS and README's layout): {stray}"


def test_imports_flow_one_way(graph):
    bad = []
    for mod, deps in graph.items():
        if mod == "speechlm":
            continue
        here = _concern(mod)
        for dep in deps:
            there = _concern(dep)
            if dep == "speechlm" or there == here:
                continue
            if LAYER_OF[there] >= LAYER_OF[here]:
                bad.append(f"{mod} imports {dep} ({there} is {'beside' if LAYER_OF[there] == LAYER_OF[here] else 'above'} {here})")
    assert not bad, "imports against the layer order:\n  " + "\n  ".join(sorted(bad))


def test_no_import_cycles(graph):
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if d not in graph:
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_violation(tmp_path):
    """The graph builder finds lazy imports inside functions and resolves ``from pkg import module``."""
    f = tmp_path / "mod.py"
    f.write_text("def f():\n    from speechlm.training import loop\n    import speechlm.cli\n")
    known = {"speechlm.training", "speechlm.training.loop", "speechlm.cli"}
    assert _imports(f, "speechlm.data.mod", known) == {"speechlm.training.loop", "speechlm.cli"}


def test_cli_parser_and_ls_do_not_import_torch():
    code = ("import sys\nfrom speechlm.cli import build_parser, ls\nbuild_parser()\nls()\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "adapters:" in res.stdout and "stack" in res.stdout and "whisper-tiny.en" in res.stdout
