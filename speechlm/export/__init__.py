"""Export: a trained checkpoint as a Hugging Face folder that transformers loads with
``AutoModel.from_pretrained(folder, trust_remote_code=True)``.

Owns:
* :mod:`~speechlm.export.hf` - ``speechlm export``: the checks that refuse what cannot be bundled, the weights
  (LoRA merged, or kept as a peft folder), config.json with ``auto_map``, tokenizer and feature-extractor files.
* :mod:`~speechlm.export.card` - the model card (README.md): architecture, tasks, training data, scores.
* :mod:`~speechlm.export.hf_files` - the remote code copied into the folder (imports only torch and transformers).

May import: utils, config, introspect, data, backbones, tasks, model, checkpoint. Only the CLI imports it.
"""
