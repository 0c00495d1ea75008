"""Data: manifests, audio, batch sampling, tar shards and data checks. Corpus builders live in
:mod:`speechlm.corpora`; cached encoder features in :mod:`speechlm.model.features`.

* :mod:`~speechlm.data.manifest` - the JSONL manifest schema, :class:`Cut`, reading/writing and
  up-front validation with ``file:line`` error messages.
* :mod:`~speechlm.data.audio` - :func:`load_audio` (float32 mono, resampled), :func:`audio_info`.
* :mod:`~speechlm.data.sampler` - :class:`DurationBatchSampler` (seconds budget, bucketing, DDP,
  exact resume).
* :mod:`~speechlm.data.shard_writer` / :mod:`~speechlm.data.shards` - webdataset-style tar shards: writing,
  and streaming them across ranks and workers with exact mid-epoch resume.
* :mod:`~speechlm.data.check` - ``speechlm prepare --check``: counts, hours, histograms, problems by ``file:line``.

May import: :mod:`speechlm.utils`, :mod:`speechlm.config`. Nothing above them (no torch model code).
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
    "audio_info",
    "iter_manifest",
    "load_audio",
    "read_manifest",
    "validate",
    "write_audio",
    "write_manifest",
]
