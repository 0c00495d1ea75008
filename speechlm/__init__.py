"""speechlm: build, train, evaluate and serve speech language models.

A speech LM here is ``SpeechLM(encoder, adapter, llm)``: a (Whisper-style) speech encoder, a small
trainable adapter that downsamples and projects its frames, and a decoder-only LLM (LoRA-tuned).
"""

__version__ = "0.1.0"
