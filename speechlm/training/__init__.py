"""Training: the one loop (setup / train / save / cleanup) and what only it needs.

* :mod:`~speechlm.training.loop` - :func:`train` and the ``speechlm train`` verb (:func:`run_train`); DDP
  under torchrun, curricula, exact resume.
* :mod:`~speechlm.training.dataset` - manifest cuts (or tar-shard items) -> model batches, per task.
* :mod:`~speechlm.training.loss_plot` - ``loss.png`` from the JSONL training log.

Checkpoint I/O is :mod:`speechlm.checkpoint`, shared with inference and evaluation.
May import: utils, config, data, tasks, backbones, model, checkpoint. Not corpora, inference, evaluation.
"""
