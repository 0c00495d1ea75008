"""The remote-code files ``speechlm export`` copies into a Hugging Face folder: ``configuration_speechlm.py`` and
``modeling_speechlm.py`` (+ ``ctc_prefix.py``, copied from ``speechlm/model``). They import only torch and transformers (the receiver may not have speechlm), so nothing
here may import speechlm; the exporter imports the configuration class to write config.json with it.
"""

REMOTE_FILES = ("configuration_speechlm.py", "modeling_speechlm.py")
"""Copied beside config.json; ``auto_map`` points at their classes."""

SHARED_FILES = {"ctc_prefix.py": "speechlm/model/ctc_prefix.py"}
"""Copied from the package itself (they import only torch): remote name -> path in the source tree. One source,
so the exported model decodes exactly as ``speechlm`` does."""
