"""Pretrained backbones (Whisper speech encoders, LLMs) and the loaders/converters that bring them into PyTorch."""
