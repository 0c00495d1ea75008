"""Tasks: what a manifest line is asked and how its answer is scored, as data.

Owns:
* :mod:`~speechlm.tasks.record` - the :class:`Task` record, the registry :data:`TASKS` (a plain dict keyed
  by name), :func:`register` and :func:`get_task`.
* :mod:`~speechlm.tasks.library` - the shipped records (ASR, emotion, gender, style, timestamps, ASR+X, ...),
  registered when this package is imported.
* :mod:`~speechlm.tasks.render` - one record, three renderings: the continuous chat prompt (``<|audio|>``), units in
  the chat template (SpeechGPT's ``<|sosp|> u... <|eosp|>``) and ESPnet-style multi-stream segments.
* :mod:`~speechlm.tasks.mixture` - multi-task sampling (weights, temperature) and curricula (stage tables).

May import: :mod:`speechlm.utils`, :mod:`speechlm.config`, :mod:`speechlm.data`. Nothing above them.
"""

from speechlm.tasks import library  # noqa: F401  (registers the shipped records)
from speechlm.tasks.record import ANSWER_FORMATS, TASKS, Task, get_task, register

__all__ = ["ANSWER_FORMATS", "TASKS", "Task", "get_task", "register"]
