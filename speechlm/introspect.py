"""Read a verb's signature and a registry's entries from source, without importing the module.

The CLI is built from the verbs' signatures, and ``speechlm ls`` lists registries whose modules import torch
and transformers (seconds). Parsing the source with :mod:`ast` takes milliseconds, so ``speechlm --help`` and
``speechlm ls`` stay fast; the verb's module is imported only when the verb runs. ``tests/test_cli.py`` checks
that what is read here matches :func:`inspect.signature` of the imported function, so the two cannot drift.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMPTY = object()
"""Default of a parameter that has none (a positional argument)."""


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    """A Python literal, or :data:`EMPTY`."""
    annotation: str
    """The annotation as written (``"list[str]"``, ``"int"``, ...)."""

    @property
    def is_list(self) -> bool:
        return self.annotation.replace(" ", "").startswith(("list[", "List[", "list"))


@dataclass(frozen=True)
class Signature:
    params: tuple[Param, ...]
    doc: str
    positional: tuple[str, ...]
    """Optional positionals, from a module-level ``fn.cli_positional = (...)`` (e.g. prepare's CORPUS SRC OUT)."""


@functools.lru_cache(maxsize=None)
def _module_ast(module: str) -> ast.Module:
    spec = importlib.util.find_spec(module)  # imports parent packages only (kept light on purpose)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no module named {module!r}")
    return ast.parse(Path(spec.origin).read_text(encoding="utf-8"), filename=spec.origin)


def _defs(tree: ast.Module) -> dict[str, ast.AST]:
    return {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def read_signature(module: str, function: str) -> Signature:
    """The parameters, docstring and ``cli_positional`` of ``module.function``, read from its source."""
    tree = _module_ast(module)
    fn = _defs(tree).get(function)
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise AttributeError(f"{module} has no function {function!r}")
    args = fn.args.args
    defaults = [EMPTY] * (len(args) - len(fn.args.defaults)) + [ast.literal_eval(d) for d in fn.args.defaults]
    params = tuple(Param(a.arg, d, ast.unparse(a.annotation) if a.annotation else "str") for a, d in zip(args, defaults))
    positional: tuple[str, ...] = ()
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Attribute)
                and isinstance(node.targets[0].value, ast.Name) and node.targets[0].value.id == function
                and node.targets[0].attr == "cli_positional"):
            positional = tuple(ast.literal_eval(node.value))
    return Signature(params, ast.get_docstring(fn) or "", positional)


def _first_line(text: str | None) -> str:
    return text.strip().splitlines()[0] if text and text.strip() else ""


def read_registry(module: str, name: str) -> dict[str, str]:
    """``{key: one-line description}`` of a module-level dict literal ``name = {"key": value, ...}``.

    A string value is its own description; a class or function defined in the module gives its docstring's
    first line; a call (``ModelConfig(encoder=..., llm=...)``) is shown as its keyword arguments.
    """
    tree = _module_ast(module)
    node = next((n for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                 and any(isinstance(t, ast.Name) and t.id == name for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))), None)
    if node is None or not isinstance(node.value, ast.Dict):
        raise AttributeError(f"{module} has no dict literal {name!r}")
    defs = _defs(tree)
    imported = {a.asname or a.name: n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module
                for a in n.names}  # a class imported from a sibling module is read from that module's source
    out: dict[str, str] = {}
    for k, v in zip(node.value.keys, node.value.values):
        key = ast.literal_eval(k)
        if isinstance(v, ast.Constant) and isinstance(v.value, str):
            out[key] = v.value
        elif isinstance(v, ast.Name):
            if v.id not in defs and v.id in imported:
                defs = {**defs, **{d: n for d, n in _defs(_module_ast(imported[v.id])).items() if d == v.id}}
            out[key] = _first_line(ast.get_docstring(defs[v.id])) if v.id in defs else v.id
        elif isinstance(v, ast.Call):
            out[key] = ", ".join(f"{kw.arg}={ast.literal_eval(kw.value)}" for kw in v.keywords)
        else:
            out[key] = ast.unparse(v)
    return out
