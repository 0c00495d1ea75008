"""``speechlm VERB ...``: each verb is a plain function, and its signature is the command line.

Parameters without a default are positional; ``bool`` defaults become flags; ``list`` parameters take
several values. The help of each option is the ``name: text`` entry of the function's docstring (with its continuation lines).

The parser is built from the verbs' source (:mod:`speechlm.introspect`), so ``speechlm --help`` and
``speechlm ls`` never import torch or transformers; a verb's module is imported when the verb runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from speechlm.introspect import EMPTY, read_registry, read_signature

VERBS: dict[str, tuple[str, str]] = {
    "demo": ("speechlm.demos.demo", "demo"),
    "prepare": ("speechlm.corpora.prepare", "prepare"),
    "train": ("speechlm.training.discrete", "run_train"),  # continuous recipes go on to speechlm.training.loop
    "transcribe": ("speechlm.inference.transcribe", "transcribe"),
    "eval": ("speechlm.evaluation.asr", "evaluate"),
    "serve": ("speechlm.serving.app", "serve"),
    "resynth": ("speechlm.evaluation.resynthesis", "resynth"),
    "speak": ("speechlm.inference.speak", "speak"),
    "chat": ("speechlm.inference.speak", "chat"),
    "export": ("speechlm.export.hf", "export"),
    "ls": ("speechlm.cli", "ls"),
}
"""Verb -> (module, function). The function's signature is the verb's command line."""

REGISTRIES: dict[str, tuple[str, str]] = {
    "encoders": ("speechlm.model.builders", "ENCODERS"),
    "adapters": ("speechlm.model.adapter", "ADAPTERS"),
    "llms": ("speechlm.backbones.llm", "LLMS"),
    "sizes": ("speechlm.model.builders", "SIZES"),
    "tokenizers": ("speechlm.tokenizers.registry", "TOKENIZERS"),
    "vocoders": ("speechlm.vocoders.registry", "VOCODERS"),
}
"""Registries listed by ``speechlm ls`` that live in torch modules: read from their source (dict literals)."""


def ls(what: str = "all") -> dict[str, dict[str, str]]:
    """List what is registered: encoders, adapters, llms, tasks, recipes, sizes, corpora, tokenizers, vocoders (or all).

    what: one of encoders, adapters, llms, tasks, recipes, sizes, corpora, tokenizers, vocoders, all.
    """
    from speechlm.config import list_recipes, recipe_path
    from speechlm.tasks import TASKS

    def first_line(text: str | None) -> str:
        return (text or "").strip().splitlines()[0] if text else ""

    tables = {
        "encoders": lambda: read_registry(*REGISTRIES["encoders"]),
        "adapters": lambda: read_registry(*REGISTRIES["adapters"]),
        "llms": lambda: read_registry(*REGISTRIES["llms"]),
        "tasks": lambda: {k: f"{t.description} [metric: {t.metric}; {len(t.instructions)}+{len(t.eval_instructions)} instructions]"
                          for k, t in TASKS.items()},
        "recipes": lambda: {k: first_line(recipe_path(k).read_text().lstrip("# ")) for k in list_recipes()},
        "sizes": lambda: read_registry(*REGISTRIES["sizes"]),
        "tokenizers": lambda: read_registry(*REGISTRIES["tokenizers"]),
        "vocoders": lambda: read_registry(*REGISTRIES["vocoders"]),
        "corpora": _corpora_docs,
    }
    if what != "all" and what not in tables:
        raise ValueError(f"unknown registry {what!r}; choose from {', '.join(tables)} or all")
    chosen = {k: f() for k, f in tables.items() if what in ("all", k)}
    for name, entries in chosen.items():
        print(f"{name}:")
        for k, v in entries.items():
            print(f"  {k:<24} {v}")
    return chosen


ls.cli_positional = ("what",)  # `speechlm ls tasks`


def _corpora_docs() -> dict[str, str]:
    from speechlm.corpora import CORPUS_DOCS
    from speechlm.corpora.prepare import GENERATED_DOCS, corpora

    return {k: {**GENERATED_DOCS, **CORPUS_DOCS}.get(k, "") for k in corpora()}


def _param_help(doc: str) -> dict[str, str]:
    """``name: text`` lines of a docstring; a following line that starts no entry of its own continues the text
    (until a blank line)."""
    helps: dict[str, str] = {}
    last = None
    for line in doc.splitlines():
        name, sep, text = line.strip().partition(":")
        if sep and name.isidentifier():
            helps[name], last = text.strip(), name
        elif last and line.strip():
            helps[last] += " " + line.strip()
        else:
            last = None
    return helps


def _add_verb(sub, name: str, module: str, function: str) -> None:
    sig = read_signature(module, function)
    doc = sig.doc
    p = sub.add_parser(name, help=doc.splitlines()[0] if doc else name, description=doc.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    helps = _param_help(doc)
    for param in sig.params:
        pname, default = param.name, param.default
        flag = "--" + pname.replace("_", "-")
        h = helps.get(pname, "")
        if default is EMPTY:
            p.add_argument(pname, nargs="+" if param.is_list else None, help=h)
        elif pname in sig.positional:
            p.add_argument(pname, nargs="?", default=default, help=h)
        elif isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=h)
        elif param.is_list:
            p.add_argument(flag, dest=pname, nargs="+", action="extend", default=None, help=h)
        else:
            typ = type(default) if default is not None else str
            p.add_argument(flag, dest=pname, type=typ, default=default, help=h)
    p.set_defaults(_target=(module, function))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechlm", description="Build, train, evaluate and serve speech language models.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (module, function) in VERBS.items():
        _add_verb(sub, name, module, function)
    return parser


def _quiet_libraries() -> None:
    """Our own progress bars and messages say what happens; transformers' per-load bars and notices are noise."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    module, function = args.pop("_target")
    verb = args.pop("verb")
    args = {k: (v if v is not None else []) for k, v in args.items()}
    if verb != "ls":
        _quiet_libraries()
    fn = getattr(importlib.import_module(module), function)
    try:
        code = fn(**args)
    except BrokenPipeError:  # `speechlm ls | head`: the reader left; stop quietly (Python docs, signal handling)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as e:
        if os.environ.get("SPEECHLM_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"speechlm {verb}: error: {msg}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
