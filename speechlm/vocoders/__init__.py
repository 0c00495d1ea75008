"""Vocoders: discrete units back to a waveform (the discrete path's output side).

* :mod:`~speechlm.vocoders.world` - WORLD analysis / synthesis (pyworld) and the coded features the vocoder predicts.
* :mod:`~speechlm.vocoders.griffinlim` - Griffin-Lim from a log-mel (zero-training fallback and test oracle).
* :mod:`~speechlm.vocoders.unit_vocoder` - :class:`UnitVocoder`: deduplicated units -> duration predictor ->
  convolutional trunk -> WORLD parameters and log-mel -> wave through a named back end.
* :mod:`~speechlm.vocoders.train` - the vocoder's training loop, save and load (``vocoder.json`` + safetensors).
* :data:`VOCODERS` in :mod:`~speechlm.vocoders.registry` (``speechlm ls vocoders``).

May import: utils, config, data, backbones, tasks, model. Not tokenizers (a sibling: a vocoder knows the
tokenizer only by the hash and K recorded in its folder), checkpoint, training, inference, corpora, evaluation.
"""
