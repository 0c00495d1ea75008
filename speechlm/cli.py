"""``speechlm VERB ...``: each verb is a plain function, and its signature is the command line.

Parameters without a default are positional; ``bool`` defaults become flags; ``list`` parameters take
several values. The help of each option is the ``name: text`` line of the function's docstring.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import typing
from typing import Callable


def _verbs() -> dict[str, Callable]:
    from speechlm.demo import demo
    from speechlm.evaluate import evaluate
    from speechlm.infer import transcribe
    from speechlm.prepare import prepare
    from speechlm.train import run_train

    return {"demo": demo, "prepare": prepare, "train": run_train, "transcribe": transcribe, "eval": evaluate, "ls": ls}


def ls(what: str = "all") -> dict[str, dict[str, str]]:
    """List what is registered: encoders, adapters, llms, tasks, recipes, sizes, corpora (or all).

    what: one of encoders, adapters, llms, tasks, recipes, sizes, corpora, all.
    """
    from speechlm.backbones.llm import LLMS
    from speechlm.config import list_recipes, recipe_path
    from speechlm.model.adapter import ADAPTERS
    from speechlm.model.builders import ENCODERS, SIZES
    from speechlm.tasks import TASKS

    def first_line(text: str | None) -> str:
        return (text or "").strip().splitlines()[0] if text else ""

    tables = {
        "encoders": dict(ENCODERS),
        "adapters": {k: first_line(v.__doc__) or v.__name__ for k, v in ADAPTERS.items()},
        "llms": dict(LLMS),
        "tasks": {k: f"{t.description} [metric: {t.metric}; {len(t.instructions)}+{len(t.eval_instructions)} instructions]" for k, t in TASKS.items()},
        "recipes": {k: first_line(recipe_path(k).read_text().lstrip("# ")) for k in list_recipes()},
        "sizes": {k: f"encoder={v.encoder}, llm={v.llm}, adapter={v.adapter}" for k, v in SIZES.items()},
        "corpora": _corpora_docs(),
    }
    if what != "all" and what not in tables:
        raise ValueError(f"unknown registry {what!r}; choose from {', '.join(tables)} or all")
    chosen = tables if what == "all" else {what: tables[what]}
    for name, entries in chosen.items():
        print(f"{name}:")
        for k, v in entries.items():
            print(f"  {k:<24} {v}")
    return chosen


ls.cli_positional = ("what",)  # `speechlm ls tasks`


def _corpora_docs() -> dict[str, str]:
    from speechlm.prepare import corpora

    try:
        from speechlm.corpora import CORPUS_DOCS
    except ImportError:
        CORPUS_DOCS = {}
    own = {"synthetic": "Debian TTS voices (espeak-ng, flite), labelled gender/rate/pitch",
           "multitask": "TTS corpus for ASR+X: style classes, exact word timestamps, questions, intents, keywords",
           "real-multitask": "the shared real speech with every task label, split by speaker (device, folder or clip where no speaker)", "real": "the shared real-speech folder, split by speaker",
           "manifest": "an existing JSONL manifest (validated; then --shards / --features)"}
    return {k: {**own, **CORPUS_DOCS}.get(k, "") for k in corpora()}


def _param_help(fn: Callable) -> dict[str, str]:
    helps = {}
    for line in inspect.getdoc(fn).splitlines() if fn.__doc__ else []:
        name, sep, text = line.strip().partition(":")
        if sep and name.isidentifier():
            helps[name] = text.strip()
    return helps


def _add_verb(sub, name: str, fn: Callable) -> None:
    doc = inspect.getdoc(fn) or ""
    p = sub.add_parser(name, help=doc.splitlines()[0] if doc else name, description=doc.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    helps = _param_help(fn)
    hints = typing.get_type_hints(fn)
    optional_positionals = getattr(fn, "cli_positional", ())  # e.g. prepare's CORPUS SRC OUT, omitted with --check
    for pname, param in inspect.signature(fn).parameters.items():
        ann = hints.get(pname, str)
        is_list = typing.get_origin(ann) is list
        flag = "--" + pname.replace("_", "-")
        h = helps.get(pname, "")
        if param.default is inspect.Parameter.empty:
            p.add_argument(pname, nargs="+" if is_list else None, help=h)
        elif pname in optional_positionals:
            p.add_argument(pname, nargs="?", default=param.default, help=h)
        elif isinstance(param.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=param.default, help=h)
        elif is_list:
            p.add_argument(flag, dest=pname, nargs="+", action="extend", default=None, help=h)
        else:
            typ = type(param.default) if param.default is not None else str
            p.add_argument(flag, dest=pname, type=typ, default=param.default, help=h)
    p.set_defaults(_fn=fn)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    # our own progress bars and messages say what happens; transformers' per-load bars and notices are noise here
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    parser = argparse.ArgumentParser(prog="speechlm", description="Build, train, evaluate and serve speech language models.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, fn in _verbs().items():
        _add_verb(sub, name, fn)
    args = vars(parser.parse_args(argv))
    fn = args.pop("_fn")
    verb = args.pop("verb")
    args = {k: (v if v is not None else []) for k, v in args.items()}
    try:
        code = fn(**args)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as e:
        if os.environ.get("SPEECHLM_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"speechlm {verb}: error: {msg}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
