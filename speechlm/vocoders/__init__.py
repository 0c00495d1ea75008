"""Vocoders: discrete units back to a waveform (the discrete path's output side).

* :mod:`~speechlm.vocoders.world` - WORLD analysis / synthesis (pyworld) and the coded features the vocoder predicts;
  ``copy_synthesis`` is the resynthesis ladder's topline.
* :mod:`~speechlm.vocoders.griffinlim` - fast Griffin-Lim from a log-mel (zero-training fallback and test oracle).
* :mod:`~speechlm.vocoders.unit_vocoder` - :class:`UnitVocoder`: deduplicated units -> duration predictor ->
  convolutional trunk -> WORLD parameters and log-mel -> wave through a named back end.
* :mod:`~speechlm.vocoders.train` - ``train_vocoder`` on (units, durations, wave) triples, ``save_vocoder`` /
  ``load_vocoder`` (``vocoder.json`` + safetensors), refusing another tokenizer's hash or K.
* :data:`VOCODERS` in :mod:`~speechlm.vocoders.registry` (``speechlm ls vocoders``).

May import: utils, config, data, backbones, tasks, model. Not tokenizers (a sibling: a vocoder knows the
tokenizer only by the hash and K recorded in its folder), checkpoint, training, inference, corpora, evaluation.
"""
