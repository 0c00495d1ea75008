"""The parts of a causal LM, whether or not peft wraps it (imports neither torch nor transformers)."""

from __future__ import annotations

from typing import Any


def causal_lm_of(llm: Any) -> Any:
    """The causal LM inside ``llm`` (a peft model's base model, or ``llm`` itself)."""
    return llm.get_base_model() if hasattr(llm, "get_base_model") else llm


def decoder_of(llm: Any) -> Any:
    """The transformer body inside ``llm`` (``model`` of a Llama / Qwen2 causal LM), peft-wrapped or not."""
    lm = causal_lm_of(llm)
    return getattr(lm, lm.base_model_prefix)
