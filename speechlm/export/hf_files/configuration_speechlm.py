"""Configuration of an exported speechlm model (Hugging Face remote code; imports only transformers).

Written by ``speechlm export`` beside ``modeling_speechlm.py`` and loaded with
``AutoConfig.from_pretrained(folder, trust_remote_code=True)``. The backbones' own configurations are kept as
plain dicts (``encoder_config``: a ``WhisperConfig``, ``llm_config``: the causal LM's config) so the file reads
the same under every transformers version; the model builds the config objects from them.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class SpeechLMConfig(PretrainedConfig):
    """Whisper encoder (real-length) -> adapter -> optional CTC compression -> decoder-only LLM in its chat template.

    Fields (all JSON values):
        encoder_config: the Whisper encoder's ``WhisperConfig.to_dict()``.
        llm_config: the LLM's config dict (``model_type`` selects the transformers class).
        encoder_attn_implementation / llm_attn_implementation: attention kernels the model was run with
            (``model.set_attn_implementation("eager")`` switches both after loading).
        adapter: ``{"type": "stack"|"conv"|"stack-tf", "k", "hidden", "out_norm", "in_dim", "out_dim", ...}``.
        pad_audio_to_30s: pad every clip to 30 s before the encoder (Whisper's own setup) instead of its real length.
        ctc_head, ctc_vocab, compress_audio, posterior_input: the CTC head over the LLM's token embeddings (``ctc_vocab``:
            the LLM token ids it scores, empty for all) and how the LLM reads the adapter's frames (as they are,
            CTC-compressed, or as posterior-weighted embeddings).
        ctc_length_budget: with a CTC head, a transcript (a task with ``"transcript": true``) ends its turn by this
            factor x its clip's greedy CTC token count + 1 (at least 2); 0: no cap.
        ctc_decode_weight, ctc_decode_candidates: with a CTC head, a transcript is decoded jointly with the CTC prefix
            score (``ctc_prefix.py``): per step the LLM's top ``ctc_decode_candidates`` tokens scored by
            (1 - w) log p_LLM + w x the CTC prefix score's increment; 0: off.
        trim_silence: the model was trained on clips cut to their speech +-0.1 s, and ``speechlm`` cuts leading and
            trailing silence off every clip before it (a VAD). This remote code does not: trim clips before calling it.
        audio_token, audio_token_id: the placeholder in the chat prompt replaced by the audio frames.
        system_prompt: the system turn ("" sends an empty one; "default" leaves the chat template's own).
        prompt_example: the default task's prompt as the LLM reads it, audio placeholder included (for reading only;
            the chat template itself is in the tokenizer files).
        max_audio_seconds: longest clip accepted; sampling_rate: 16000.
        tasks: task name -> ``{"template", "instruction", "max_new_tokens", "labels"}``; default_task; trained_tasks.
        lora_adapter: None (weights merged or no LoRA) or ``{"path": "lora", ...}``: a peft LoRA folder applied on load.
        llm_generation_config: the LLM's generation config as the model was run with.
        speechlm: provenance (recipe, checkpoint step, source folder).
    """

    model_type = "speechlm"

    def __init__(self, encoder_config: dict | None = None, llm_config: dict | None = None,
                 encoder_attn_implementation: str = "sdpa", llm_attn_implementation: str = "sdpa",
                 adapter: dict | None = None, pad_audio_to_30s: bool = False, ctc_head: bool = False,
                 ctc_vocab: list | None = None, compress_audio: bool = False, posterior_input: bool = False,
                 ctc_length_budget: float = 0.0, ctc_decode_weight: float = 0.0, ctc_decode_candidates: int = 8,
                 trim_silence: bool = False, audio_token: str = "<|audio|>", audio_token_id: int | None = None, system_prompt: str = "",
                 prompt_example: str = "",
                 max_audio_seconds: float = 30.0, sampling_rate: int = 16000, tasks: dict | None = None,
                 default_task: str = "asr", trained_tasks: list | None = None, lora_adapter: dict | None = None,
                 llm_generation_config: dict | None = None, speechlm: dict | None = None, **kwargs: Any):
        self.encoder_config = _plain(encoder_config) or {}
        self.llm_config = _plain(llm_config) or {}
        self.encoder_attn_implementation = encoder_attn_implementation
        self.llm_attn_implementation = llm_attn_implementation
        self.adapter = dict(adapter or {})
        self.pad_audio_to_30s = bool(pad_audio_to_30s)
        self.ctc_head = bool(ctc_head)
        self.ctc_vocab = [int(t) for t in (ctc_vocab or [])]
        self.compress_audio = bool(compress_audio)
        self.posterior_input = bool(posterior_input)
        self.ctc_length_budget = float(ctc_length_budget)
        self.ctc_decode_weight = float(ctc_decode_weight)
        self.ctc_decode_candidates = int(ctc_decode_candidates)
        self.trim_silence = bool(trim_silence)
        self.audio_token = audio_token
        self.audio_token_id = audio_token_id
        self.system_prompt = system_prompt
        self.prompt_example = prompt_example
        self.max_audio_seconds = float(max_audio_seconds)
        self.sampling_rate = int(sampling_rate)
        self.tasks = dict(tasks or {})
        self.default_task = default_task
        self.trained_tasks = list(trained_tasks or [])
        self.lora_adapter = dict(lora_adapter) if lora_adapter else None
        self.llm_generation_config = dict(llm_generation_config or {})
        self.speechlm = dict(speechlm or {})
        kwargs.setdefault("tie_word_embeddings", False)  # the LLM ties its own head; nothing ties at this level
        super().__init__(**kwargs)


def _plain(value: Any) -> dict | None:
    """A sub-config given as a config object (``to_dict()``) or a dict, as a plain dict."""
    if value is None:
        return None
    return value.to_dict() if hasattr(value, "to_dict") else dict(value)


__all__ = ["SpeechLMConfig"]
