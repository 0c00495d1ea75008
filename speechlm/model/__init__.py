"""Model: the continuous speech LM, ``SpeechLM(encoder, adapter, llm)``, and what builds it.

* :mod:`~speechlm.model.encoder` - :class:`SpeechEncoder`: any Whisper-family encoder on the real audio length.
* :mod:`~speechlm.model.adapter` - the adapter registry :data:`ADAPTERS` (``stack``: Ultravox, ``conv``: SpeechVerse/OSUM).
* :mod:`~speechlm.model.whisper_anchor` - the ``whisper-decoder`` anchor adapter: Whisper's own frozen decoder's
  states projected into the LLM (SALSA).
* :mod:`~speechlm.model.speechlm` - :class:`SpeechLM`, :class:`Batch`, the prompt formatter and the splice.
* :mod:`~speechlm.model.builders` - :func:`build_speechlm` from a :class:`~speechlm.config.ModelConfig`, named sizes.
* :mod:`~speechlm.model.features` - cached frozen-encoder outputs and the forward pass that reads them.
* :mod:`~speechlm.model.ctc` - the CTC head over the LLM's own token embeddings, greedy decoding, compression.
* :mod:`~speechlm.model.labels` - the clip-level label head: pooled adapter output against label-word embeddings.

The discrete (speech-token) path beside it:

* :mod:`~speechlm.model.vocab` - :class:`VocabLayout`: unit, marker, task and codec tokens appended after the LLM's
  vocabulary, frozen, saved and checked on load; ``extend_llm`` (text logits stay bit-identical).
* :mod:`~speechlm.model.streams` - token-stream patterns ``flat`` / ``parallel`` / ``delay`` (MusicGen, ESPnet).
* :mod:`~speechlm.model.unit_align` - unit rows pulled by CTC toward the transcript tokens' embeddings
  (``discrete.unit_init: ctc``).
* :mod:`~speechlm.model.discrete` - :class:`DiscreteSpeechLM`: a decoder-only LM over units or multi-stream
  tokens, per-modality loss weights, constrained KV-cache decoding.
May import: utils, config, data, tasks, backbones. Not checkpoint, training, inference, evaluation, corpora.
Importing this package is light (no torch); its names load on first use.
"""

__all__ = ["Batch", "PromptIds", "SpeechLM"]


def __getattr__(name: str):
    if name in __all__:
        from speechlm.model import speechlm

        return getattr(speechlm, name)
    raise AttributeError(f"module 'speechlm.model' has no attribute {name!r}")
