"""A tokenizer folder as one object: its speech tokenizer and, when trained, its unit vocoder, checked together."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_speech_tokens(folder: str | Path) -> tuple[Any, Any]:
    """(tokenizer, vocoder or None) from a tokenizer folder (`speechlm prepare units` / `prepare vocoder`).

    The vocoder is loaded against the tokenizer's hash and K: units from another tokenizer are refused with an
    error naming the vocoder folder and the field."""
    from speechlm.tokenizers.registry import load_tokenizer
    from speechlm.vocoders.train import load_vocoder

    folder = Path(folder)
    tokenizer = load_tokenizer(folder)
    vocoder = None
    if (folder / "vocoder").exists():
        vocoder = load_vocoder(folder / "vocoder", tokenizer_hash=tokenizer.hash, k=tokenizer.k)
    return tokenizer, vocoder
