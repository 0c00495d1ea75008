"""Inference: answers from a checkpoint folder alone, and the reference decoder to compare against.

* :mod:`~speechlm.inference.transcribe` - :class:`Transcriber` (greedy or beam search with a KV cache, any
  task by its instruction), :class:`WhisperBaseline` (Whisper's own decoder) and the ``speechlm transcribe`` verb.

May import: utils, config, data, tasks, backbones, model, checkpoint. Not training, corpora, evaluation.
"""
