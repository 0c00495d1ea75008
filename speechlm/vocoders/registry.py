"""The vocoder back ends by name (``speechlm ls vocoders``; :class:`~speechlm.vocoders.unit_vocoder.UnitVocoder`'s
``backend``). A plain dict literal: :func:`speechlm.introspect.read_registry` reads it from source."""

VOCODERS = {
    "world": "WORLD parameters (coded envelope, lf0 + V/UV, aperiodicity) predicted from units, synthesised with pyworld",
    "griffinlim": "80-d log-mel predicted from units, phase by fast Griffin-Lim (32 iterations); no training of its own",
}
