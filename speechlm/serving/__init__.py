"""Serving: ``speechlm serve`` answers over HTTP what a checkpoint answers on the command line.

* :mod:`~speechlm.serving.app` - the FastAPI app (OpenAI-compatible routes, limits, API key, the web page at
  ``/``) and the ``serve`` verb (uvicorn).
* :mod:`~speechlm.serving.speaking` - the app for a speaking (discrete) checkpoint: ``/v1/audio/speech``, chat with
  audio output, discrete transcription; ``serve`` picks it for a discrete checkpoint.
* :mod:`~speechlm.serving.http` - what both apps share: settings, OpenAI-shaped errors, the API key, the body
  limit, chat-message parsing.
* :mod:`~speechlm.serving.engine` - the model side: instruction -> task and prompt, silence and long audio,
  token streams decoded to text.
* :mod:`~speechlm.serving.batching` - the dynamic batcher: a bounded queue, a maximum batch, a maximum wait,
  one generate call per batch.
* :mod:`~speechlm.serving.uploads` - audio decoded from memory (never a client-given path) within size and
  duration limits, with errors that name the problem.
* ``static/`` - the page (plain HTML and JavaScript, no build step).

Checkpoints are read through speechlm.checkpoint and answered through speechlm.inference; no pickle is loaded.

May import: utils, config, data, tasks, backbones, model, checkpoint, inference. Not training, corpora,
evaluation (beside it), demos or cli.
"""
