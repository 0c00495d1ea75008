"""Evaluation: scores, baselines and reports a person can read.

* :mod:`~speechlm.evaluation.asr` - ``speechlm eval``: WER per subset for the model, the untrained model and
  Whisper's own decoder.
* :mod:`~speechlm.evaluation.per_task` - ``speechlm eval --tasks``: every task, seen vs held-out instructions,
  constrained vs free decoding, baselines, radar and confusion plots.
* :mod:`~speechlm.evaluation.wer`, :mod:`~speechlm.evaluation.taskmetrics` - the metric functions;
  :mod:`~speechlm.evaluation.metrics` - the registry that tasks name (``Task.metric``).
* :mod:`~speechlm.evaluation.probe` - majority and linear-probe baselines on frozen encoder features.
* :mod:`~speechlm.evaluation.targets` - issue targets as data rows, checked against a summary.
* :mod:`~speechlm.evaluation.resynthesis` - ``speechlm resynth``: the resynthesis ladder of a tokenizer folder
  (original, copy synthesis, units -> vocoder, acoustic tokens) scored by Whisper's WER and
  :mod:`~speechlm.evaluation.speech_metrics` (MCD-DTW, F0 RMSE, V/UV, STOI, speaker similarity).
* :mod:`~speechlm.evaluation.report`, :mod:`~speechlm.evaluation.plots` - report.md, summary.json, tables, plots.

May import: everything below it (utils ... checkpoint, inference). Not training, corpora, demos.
"""
