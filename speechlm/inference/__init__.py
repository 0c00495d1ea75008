"""Inference: answers from a checkpoint folder alone, and the reference decoder to compare against.

* :mod:`~speechlm.inference.transcribe` - :class:`Transcriber` (greedy or beam search with a KV cache, any
  task by its instruction), :class:`WhisperBaseline` (Whisper's own decoder) and the ``speechlm transcribe`` verb.
* :mod:`~speechlm.inference.long_audio` - audio past the model's limit split at pauses (VAD) and stitched.
* :mod:`~speechlm.inference.speech_tokens` - a tokenizer folder as (speech tokenizer, unit vocoder), checked together.

May import: utils, config, data, tasks, backbones, model, tokenizers, vocoders, checkpoint. Not training, corpora, evaluation.
"""
