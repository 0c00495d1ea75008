"""Demos: ``speechlm demo``, the whole path from raw audio to a scored model on embedded defaults.

* :mod:`~speechlm.demos.demo` - the verb: corpus, training, and scores beside Whisper's own decoder.
* :mod:`~speechlm.demos.multitask` - the ``--recipe osum-tiny`` path: ASR+X data, a curriculum, the per-task
  report and a single-task ASR control.

May import anything in the package except the CLI.
"""
