"""Model parts: encoder wrapper, adapters, the SpeechLM composition and its builders."""

from speechlm.model.speechlm import Batch, PromptIds, SpeechLM

__all__ = ["Batch", "PromptIds", "SpeechLM"]
