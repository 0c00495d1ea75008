"""Speech tokenizers: speech -> discrete tokens and back (the discrete path's input side).

* :mod:`~speechlm.tokenizers.dedup` - run-length deduplication of units with their durations, and its inverse.
* :mod:`~speechlm.tokenizers.kmeans` - deterministic k-means++ / Lloyd in torch (fit, assign).
* :mod:`~speechlm.tokenizers.layer_features` - one encoder layer's frames at 50 Hz, on the real audio length
  (Whisper via :class:`speechlm.model.encoder.SpeechEncoder`; HuBERT / wav2vec2 / WavLM through transformers).
* :mod:`~speechlm.tokenizers.units` - semantic unit tokenizers: ``kmeans`` and ``vq``, and :class:`TokenSeq`
  (units, durations, streams).
* :mod:`~speechlm.tokenizers.acoustic` - multi-stream acoustic tokens: residual k-means on log-mel
  (``mel-rvq``, the offline default) or a Hugging Face neural codec (``hf-codec``); the combined ``codec_ssl``
  layout (stream 0 the semantic unit, streams 1..N acoustic codes).
* :mod:`~speechlm.tokenizers.registry` - :data:`TOKENIZERS` (``speechlm ls tokenizers``), ``fit_tokenizer``,
  save / load of a tokenizer folder (``tokenizer.json`` + ``tokenizer.safetensors``), ``check_layout``.

May import: utils, config, data, backbones, tasks, model (the speech encoder). Not vocoders (a sibling),
checkpoint, training, inference, corpora, evaluation.
"""
