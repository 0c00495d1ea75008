"""Speech-to-text chat references: the LLM's own answer to each spoken question, asked as text.

The ``sttc`` task trains and scores the speech LM against what its LLM backbone replies when it reads the
question instead of hearing it. Closing that *modality gap* (the speech model answering a spoken question
the way the text model answers the written one) is the aim of behaviour-alignment training (BLSP, Wang et al.
2023; DeSTA2, Lu et al. 2024): the reference is in the LLM's own words, length and style, so the task
teaches listening, not a new answering style. :func:`answer_questions` fills it in:

* every line with ``question: true`` (or ``kind: "question"``) gets ``answer`` = the LLM's reply to the line's
  ``text`` (the spoken words), rendered with the tokenizer's chat template (greedy, so deterministic);
  ``answer_llm`` names the model. An ``answer`` that was there before and differs (the synthetic corpus stores
  a short factual answer) is kept under ``answer_factual``. A reply cut off by ``max_new_tokens`` is shortened
  to its last complete sentence (``trim_truncated``);
* other lines pass through unchanged (relative audio paths are made absolute only when the output lives in
  another folder, so they still point at the audio);
* replies are cached in ``chat_answers.json`` beside the output, keyed by (LLM name, generation settings,
  question), so a re-run, or the test split after the train split, generates nothing and loads no model.

The system turn follows the speech LM's ``model.system_prompt`` convention: ``""`` (the default, as in
:class:`speechlm.config.ModelConfig`) sends an empty one, ``"default"`` keeps the template's own (SmolLM2's
inserts "You are a helpful AI assistant named SmolLM ..."), any other string is sent as the system turn.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from speechlm.utils import atomic_open, write_jsonl

__all__ = ["CACHE_NAME", "answer_questions", "is_question", "load_cache"]

log = logging.getLogger(__name__)

CACHE_NAME = "chat_answers.json"
"""File name of the reply cache, written beside the output manifest."""
_CACHE_FORMAT = "speechlm-chat-answers/1"


def is_question(line: dict[str, Any]) -> bool:
    """True for a manifest line (raw JSON object) marked ``question: true`` or ``kind: "question"``."""
    nested = line.get("labels") if isinstance(line.get("labels"), dict) else {}
    for d in (line, nested):
        if d.get("question") is True or d.get("kind") == "question":
            return True
    return False


def _trim(reply: str) -> str:
    """A reply cut off by ``max_new_tokens``, shortened to its last complete sentence (if it has one)."""
    ends = [reply.rfind(c) for c in (". ", "! ", "? ", ".\n", "!\n", "?\n")] + \
           [len(reply) - 1 if reply.endswith((".", "!", "?")) else -1]
    cut = max(ends)
    return reply[:cut + 1].strip() if cut > 0 else reply


def _key(llm: str, max_new_tokens: int, system_prompt: str, question: str) -> str:
    return json.dumps([llm, int(max_new_tokens), system_prompt, question], ensure_ascii=False)


def load_cache(path: str | os.PathLike) -> dict[str, tuple[str, bool]]:
    """The cached replies ``{key: (reply, truncated)}`` (empty if the file is missing); keys are JSON lists
    ``[llm, max_new_tokens, system_prompt, question]``; ``truncated``: generation stopped at ``max_new_tokens``."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if data.get("format") != _CACHE_FORMAT:
        raise ValueError(f"{path}: not a chat-answer cache (format {data.get('format')!r}, expected {_CACHE_FORMAT!r})")
    return {_key(e["llm"], e["max_new_tokens"], e["system_prompt"], e["question"]): (e["answer"], bool(e.get("truncated")))
            for e in data["entries"]}


def _save_cache(path: Path, cache: dict[str, tuple[str, bool]]) -> None:
    """Merge with what is on disk (another process may have added replies) and write atomically."""
    try:
        merged = {**load_cache(path), **cache}
    except (ValueError, json.JSONDecodeError, KeyError):
        merged = dict(cache)
    entries = []
    for key in sorted(merged):
        llm, n, system, question = json.loads(key)
        answer, truncated = merged[key]
        entries.append({"llm": llm, "max_new_tokens": n, "system_prompt": system, "question": question,
                        "answer": answer, "truncated": truncated})
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump({"format": _CACHE_FORMAT, "entries": entries}, f, indent=1, ensure_ascii=False)
        f.write("\n")


def _render(tokenizer, question: str, system_prompt: str) -> str:
    messages = [{"role": "user", "content": question}]
    if system_prompt != "default":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[tuple[str, bool]]:
    """Greedy ``(reply, truncated)`` for rendered chat prompts, one batch, left-padded; ``truncated``: no
    end-of-turn token within ``max_new_tokens``."""
    import torch

    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = old_side
    device = next(model.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items()}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             temperature=None, top_p=None, top_k=None,
                             pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    new = out[:, enc["input_ids"].shape[1]:]
    stops = {tokenizer.eos_token_id, pad}
    return [(tokenizer.decode(row, skip_special_tokens=True).strip(),
             not any(int(t) in stops for t in row)) for row in new]


def _resolve_llm(llm: Any, tokenizer: Any, llm_name: str | None) -> tuple[Any, Any, str, bool]:
    """(model or None, tokenizer or None, cache name, loaded lazily?)."""
    if isinstance(llm, str):
        return None, None, llm_name or llm, True
    if isinstance(llm, tuple) and len(llm) == 2:
        llm, tokenizer = llm
    if tokenizer is None:
        raise ValueError("answer_questions: pass a tokenizer with the model (or llm=(model, tokenizer), or a name)")
    name = llm_name or getattr(llm, "name_or_path", "") or getattr(getattr(llm, "config", None), "_name_or_path", "")
    if not name:
        raise ValueError("answer_questions: pass llm_name= for a model built in code, so cached replies are keyed by it")
    return llm, tokenizer, str(name), False


def answer_questions(
    manifest_in: str | os.PathLike,
    manifest_out: str | os.PathLike,
    llm: Any = "smollm2-135m-instruct",
    max_new_tokens: int = 48,
    batch_size: int = 8,
    *,
    tokenizer: Any = None,
    llm_name: str | None = None,
    question_field: str = "text",
    system_prompt: str = "",
    cache_path: str | os.PathLike | None = None,
    keep_previous_as: str | None = "answer_factual",
    trim_truncated: bool = True,
    device: str | None = None,
) -> Path:
    """Write ``manifest_out``: ``manifest_in`` with the LLM's text reply as ``answer`` on every question line.

    Args:
        manifest_in: a JSONL manifest (toolkit or real-data layout; read as raw JSON so other lines keep every byte
            of meaning).
        manifest_out: where to write (may equal ``manifest_in``; written atomically).
        llm: a name for :func:`speechlm.backbones.llm.load_llm` (loaded only if some reply is not cached), a
            model (with ``tokenizer=``) or a ``(model, tokenizer)`` pair.
        max_new_tokens: reply length limit (part of the cache key).
        batch_size: questions per ``generate`` call.
        tokenizer: the tokenizer when ``llm`` is a model.
        llm_name: the name replies are cached under (default: ``llm`` if a name, else the model's
            ``name_or_path``; required for a model built in code).
        question_field: the field holding the question's words.
        system_prompt: ``""`` empty system turn, ``"default"`` the template's own, else this text (module doc).
        cache_path: the reply cache (default ``chat_answers.json`` beside ``manifest_out``).
        keep_previous_as: field that keeps a differing earlier ``answer`` (None: overwrite it).
        trim_truncated: a reply cut off by ``max_new_tokens`` ends at its last complete sentence (when it has
            one), so references do not stop mid-word; the cache keeps the untrimmed reply.
        device: move a model loaded here to this device (default: cuda if available, else cpu).

    Returns:
        ``manifest_out`` as a Path.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    src, dst = Path(manifest_in), Path(manifest_out)
    model, tok, name, lazy = _resolve_llm(llm, tokenizer, llm_name)
    cache_file = Path(cache_path) if cache_path is not None else dst.parent / CACHE_NAME
    cache = load_cache(cache_file)

    lines: list[dict[str, Any]] = []
    with open(src, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            if raw.strip():
                obj = json.loads(raw)
                if not isinstance(obj, dict):
                    raise ValueError(f"{src}:{lineno}: expected a JSON object")
                lines.append(obj)

    # Relative audio paths are relative to the manifest's folder: keep them valid if the folder changes.
    base_in, base_out = src.resolve().parent, dst.resolve().parent
    if base_in != base_out:
        for obj in lines:
            for k in ("audio", "path"):
                p = obj.get(k)
                if isinstance(p, str) and p and not os.path.isabs(os.path.expanduser(p)):
                    obj[k] = os.path.normpath(str(base_in / p))

    questions: dict[int, str] = {}
    for i, obj in enumerate(lines):
        if is_question(obj):
            q = obj.get(question_field)
            if q is None and isinstance(obj.get("labels"), dict):
                q = obj["labels"].get(question_field)
            if isinstance(q, str) and q.strip():
                questions[i] = q.strip()
            else:
                log.warning("%s: line %s (%s) is marked as a question but has no %r; left unchanged",
                            src, i + 1, obj.get("id"), question_field)

    key = {q: _key(name, max_new_tokens, system_prompt, q) for q in set(questions.values())}
    todo = sorted((q for q in key if key[q] not in cache), key=lambda q: (len(q), q))
    if todo:
        if lazy:
            import torch

            from speechlm.backbones.llm import load_llm

            model, tok = load_llm(llm)
            model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if hasattr(model, "eval"):
            model.eval()
        for b in range(0, len(todo), batch_size):
            batch = todo[b:b + batch_size]
            replies = _generate(model, tok, [_render(tok, q, system_prompt) for q in batch], max_new_tokens)
            for q, r in zip(batch, replies):
                cache[key[q]] = r
            _save_cache(cache_file, cache)  # after every batch: an interrupted run keeps its replies
        log.info("answer_questions: %d new replies from %s, %d cached", len(todo), name, len(key) - len(todo))

    empty = 0
    for i, q in questions.items():
        obj = lines[i]
        target = obj["labels"] if isinstance(obj.get("labels"), dict) and "answer" in obj["labels"] else obj
        reply, truncated = cache[key[q]]
        if truncated and trim_truncated:
            reply = _trim(reply)
        empty += not reply
        old = target.get("answer")
        if keep_previous_as and old not in (None, "") and old != reply and keep_previous_as not in target:
            target[keep_previous_as] = old
        target["answer"] = reply
        target["answer_llm"] = name
    if empty:
        log.warning("answer_questions: %d question lines got an empty reply (they will not serve sttc)", empty)
    write_jsonl(dst, lines)
    return dst
