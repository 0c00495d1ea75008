"""Data: manifests, audio loading, batch sampling, and the synthetic and real corpora.

* :mod:`~speechlm.data.manifest` - the JSONL manifest schema, :class:`Cut`, reading/writing and
  up-front validation with ``file:line`` error messages.
* :mod:`~speechlm.data.audio` - :func:`load_audio` (float32 mono, resampled), :func:`audio_info`.
* :mod:`~speechlm.data.sampler` - :class:`DurationBatchSampler` (seconds budget, bucketing, DDP,
  exact resume).
* :mod:`~speechlm.data.synth` - a labelled synthetic corpus from espeak-ng / flite.
* :mod:`~speechlm.data.real` - speaker-disjoint splits of the shared real-speech folder.

The synth and real modules are imported lazily (they are only needed by corpus-building commands).
"""

from speechlm.data.audio import AudioError, audio_info, load_audio, write_audio
from speechlm.data.manifest import (
    Cut,
    ManifestError,
    ValidationReport,
    iter_manifest,
    read_manifest,
    validate,
    write_manifest,
)
from speechlm.data.sampler import DurationBatchSampler

__all__ = [
    "AudioError",
    "Cut",
    "DurationBatchSampler",
    "ManifestError",
    "ValidationReport",
    "Voice",
    "audio_info",
    "available_voices",
    "build_synthetic_corpus",
    "iter_manifest",
    "load_audio",
    "prepare_real_splits",
    "read_manifest",
    "validate",
    "write_audio",
    "write_manifest",
]


def __getattr__(name: str):
    # Lazy: `import speechlm.data` should not pay for the TTS voice tables or real-data code.
    if name in ("available_voices", "build_synthetic_corpus", "Voice"):
        from speechlm.data import synth

        return getattr(synth, name)
    if name == "prepare_real_splits":
        from speechlm.data.real import prepare_real_splits

        return prepare_real_splits
    raise AttributeError(f"module 'speechlm.data' has no attribute {name!r}")
