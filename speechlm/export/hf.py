"""``speechlm export``: a continuous SpeechLM checkpoint -> a Hugging Face folder loadable with
``AutoModel.from_pretrained(folder, trust_remote_code=True)``.

The folder (written atomically: a temp folder beside it, then a rename)::

    config.json                  SpeechLMConfig: model_type "speechlm", auto_map, Whisper and LLM configs, adapter,
                                 CTC settings, prompt (audio token, system prompt), tasks, provenance
    model.safetensors            audio_encoder.* (Whisper encoder), adapter.*, ctc.*, language_model.* (LoRA merged
                                 into the base weights by default)
    lora/                        with --no-merge-lora: the peft LoRA folder (adapter_config.json,
                                 adapter_model.safetensors); the remote code applies it on load, without peft
    configuration_speechlm.py    remote code (torch + transformers only)
    modeling_speechlm.py
    ctc_prefix.py                joint CTC/LLM decoding, copied from speechlm/model (torch only)
    tokenizer files              the LLM tokenizer as trained, plus the audio placeholder as a special token
    preprocessor_config.json     Whisper's feature extractor settings (80 mel bins, 16 kHz, 25-ms window, 10-ms hop)
    README.md                    model card (speechlm.export.card)

Refused, with the reason named: discrete speech-LM checkpoints (``vocab_layout.json``), encoders that are not
Whisper, adapters the remote code does not port, LLMs that are not transformers classes, and an existing non-empty
output folder without ``overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechlm.checkpoint import CKPT_DIR, read_config
from speechlm.config import RecipeConfig
from speechlm.utils import atomic_dir

if TYPE_CHECKING:
    import torch

    from speechlm.model.speechlm import SpeechLM

HF_FILES = Path(__file__).parent / "hf_files"
PORTED_ADAPTERS = ("stack", "conv", "stack-tf")
"""Adapters ``modeling_speechlm.py`` re-implements (``model.adapter`` values)."""
WHISPER_ENCODERS = ("whisper-tiny.en", "tiny-whisper")
"""Encoder registry names that are Whisper encoders; other names must be Whisper folders / hub ids."""
AUTO_MAP = {
    "AutoConfig": "configuration_speechlm.SpeechLMConfig",
    "AutoModel": "modeling_speechlm.SpeechLMModel",
}


class ExportError(ValueError):
    """A checkpoint or output folder ``speechlm export`` cannot use; the message names the file or field and why."""


def export(checkpoint: str = "", out: str = "", merge_lora: bool = True, overwrite: bool = False,
           scores: list[str] = ()) -> Path:
    """Export a checkpoint as a Hugging Face folder (AutoModel.from_pretrained(out, trust_remote_code=True)).

    The folder holds config.json, model.safetensors (Whisper encoder, adapter, CTC head, LLM), the remote code,
    the tokenizer (with the audio token), preprocessor_config.json and a model card (README.md).

    checkpoint: checkpoint folder, or run folder (its latest checkpoint).
    out: output folder (must not exist, or be empty, unless --overwrite).
    merge_lora: merge LoRA into the LLM's weights; --no-merge-lora keeps the base weights and a peft folder lora/.
    overwrite: replace an existing output folder.
    scores: eval folders or summary.json files for the model card (default: summary.json files in the run folder).
    """
    if not checkpoint or not out:
        raise ExportError("give --checkpoint (a checkpoint or run folder) and --out (the Hugging Face folder to write)")
    from speechlm.checkpoint import load_checkpoint
    from speechlm.export.card import find_scores, model_card

    out_path = Path(out)
    check_output(out_path, overwrite)
    _, ckpt = check_checkpoint(checkpoint)  # refused before the backbones load
    sources = find_scores(ckpt, list(scores))  # a wrong --scores path fails before anything is written
    model, cfg, ckpt = load_checkpoint(ckpt)
    check_model(model, ckpt)
    meta = json.loads((ckpt / "meta.json").read_text())
    with atomic_dir(out_path) as tmp:
        info = write_folder(model, cfg, ckpt, tmp, merge_lora=merge_lora, step=int(meta.get("step", 0)))
        (tmp / "README.md").write_text(model_card(cfg, ckpt, meta, info, sources), encoding="utf-8")
        share(tmp)
    lora = {"kept": " (LoRA kept apart in lora/)", "merged": " (LoRA merged)", "none": ""}[info["lora"]]
    print(f"[speechlm] exported {ckpt} -> {out_path}{lora}: load with "
          f"AutoModel.from_pretrained({str(out_path)!r}, trust_remote_code=True)", flush=True)
    return out_path


def share(folder: Path) -> None:
    """The permissions any new file gets (the temp folder and safetensors are created owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [folder, *folder.rglob("*")]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


# ---- refusals ------------------------------------------------------------------------------------------------
def check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: the output path exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out}: the output folder exists and is not empty (pass --overwrite to replace it)")


def check_checkpoint(checkpoint: str | Path) -> tuple[RecipeConfig, Path]:
    """What the checkpoint's config says, before anything is loaded: discrete LM, encoder family, adapter type."""
    from speechlm.checkpoint.discrete import LAYOUT_FILE, is_discrete_checkpoint
    from speechlm.checkpoint.folder import resolve_checkpoint

    if is_discrete_checkpoint(checkpoint):
        raise ExportError(f"{resolve_checkpoint(checkpoint)}: a discrete speech-LM checkpoint ({LAYOUT_FILE}): its units "
                          "need the speech tokenizer and vocoder, which the export does not bundle; only continuous "
                          "SpeechLM checkpoints (encoder -> adapter -> LLM) can be exported")
    cfg, ckpt = read_config(checkpoint)
    where = f"{ckpt / 'config.json'}"
    m = cfg.model
    if m.adapter not in PORTED_ADAPTERS:
        raise ExportError(f"{where}: model.adapter={m.adapter!r} is not ported to the exported model's code "
                          f"(supported: {', '.join(PORTED_ADAPTERS)})")
    if m.ctc_vocab_size > 0:
        raise ExportError(f"{where}: model.ctc_vocab_size={m.ctc_vocab_size}: the exported model's joint decoding does "
                          "not spell tokens with the CTC head's pieces yet; export a checkpoint trained without it")
    if m.label_frames:
        raise ExportError(f"{where}: model.label_frames={m.label_frames}: the exported model's adapter has no label "
                          "probes yet; export a checkpoint trained without them")
    if m.encoder not in WHISPER_ENCODERS:
        folder = Path(m.encoder)
        if (folder / "config.json").exists():
            kind = json.loads((folder / "config.json").read_text()).get("model_type")
            if kind != "whisper":
                raise ExportError(f"{where}: model.encoder={m.encoder!r} is a {kind!r} model; the export bundles "
                                  "Whisper-family encoders only")
    return cfg, ckpt


def check_model(model: SpeechLM, ckpt: Path) -> None:
    """What only the built model tells: the encoder and LLM classes, the adapter's structure."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    where = f"{ckpt / 'config.json'}"
    whisper = getattr(model.encoder, "encoder", None)
    if not isinstance(whisper, WhisperEncoder):
        raise ExportError(f"{where}: model.encoder is a {type(whisper).__name__}, not a transformers WhisperEncoder; "
                          "the export bundles Whisper-family encoders only")
    lm = model.causal_lm
    if not type(lm).__module__.startswith("transformers.") or getattr(lm.config, "auto_map", None):
        raise ExportError(f"{where}: model.llm is {type(lm).__module__}.{type(lm).__name__}, not a class shipped in "
                          "transformers; the export rebuilds the LLM with AutoModelForCausalLM.from_config")


# ---- the folder --------------------------------------------------------------------------------------------------
def adapter_spec(model: SpeechLM, cfg: RecipeConfig) -> dict[str, Any]:
    """The adapter's hyper-parameters as ``modeling_speechlm.build_adapter`` reads them, from the built module."""
    a = model.adapter
    spec: dict[str, Any] = {"type": cfg.model.adapter, "k": int(a.k), "in_dim": int(model.encoder.dim),
                            "out_dim": int(model.causal_lm.config.hidden_size), "out_norm": a.out_norm is not None}
    if cfg.model.adapter == "stack":
        spec["hidden"] = int(a.proj[0].out_features)
    elif cfg.model.adapter == "conv":
        spec["hidden"] = int(a.norm.normalized_shape[0]) if len(a.convs) else int(model.encoder.dim)
    else:  # stack-tf
        layer = a.layers.layers[0]
        spec.update(hidden=int(a.proj[1].out_features), layers=len(a.layers.layers), width=int(a.inp.out_features),
                    heads=int(layer.self_attn.num_heads), ffn=int(layer.linear1.out_features))
        if not (layer.norm_first and layer.activation_relu_or_gelu == 2):
            raise ExportError("model.adapter=stack-tf: a Transformer layer that is not pre-norm GELU is not ported")
    return spec


def task_table() -> dict[str, dict[str, Any]]:
    """Every registered task the continuous model can answer (one speech input, text out), as the remote code reads it."""
    from speechlm.tasks import TASKS

    table = {}
    for name, t in TASKS.items():
        if sum(m == "speech" for _, m in t.inputs) != 1 or any(m != "text" for _, m in t.outputs):
            continue
        table[name] = {"template": t.template, "instruction": t.instructions[0],
                       "held_out_instruction": t.eval_instructions[0] if t.eval_instructions else None,
                       "max_new_tokens": int(t.max_answer_tokens), "labels": list(t.labels) if t.labels else None,
                       "description": t.description, "metric": t.metric, "transcript": t.target == "text"}
    return table


def trained_tasks(cfg: RecipeConfig) -> list[str]:
    """Task names the run trained on: the stage table's, else data.tasks, else data.task (weights dropped)."""
    names: list[str] = []
    for stage in cfg.train.stages:
        tasks = stage.get("tasks") or []
        names += [tasks] if isinstance(tasks, str) else [str(t) for t in tasks]
    names = names or list(cfg.data.tasks) or [cfg.data.task]
    return list(dict.fromkeys(t.split(":")[0].strip() for t in names))


def _attn(config) -> str:
    impl = getattr(config, "_attn_implementation", None) or "sdpa"
    return impl if impl in ("sdpa", "eager") else "sdpa"  # flash-attn runs bf16 on GPUs; the export is fp32


def llm_state(model: SpeechLM, merge_lora: bool, lora_dir: Path) -> dict[str, torch.Tensor]:
    """The causal LM's weights, LoRA merged in (or saved to ``lora_dir`` as a peft folder and left out)."""
    llm = model.llm
    if llm is not model.causal_lm:  # peft-wrapped
        if merge_lora:
            lm = llm.merge_and_unload()
        else:
            llm.save_pretrained(str(lora_dir))
            lm = llm.unload()
        model.llm = lm
    return model.causal_lm.state_dict()


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous copies, each storage once: a tied LM head (the same tensor as the input embeddings) is left out,
    and the loader ties it back."""
    seen: set[tuple] = set()
    out = {}
    for k, v in state.items():
        view = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
        if v.numel() and view in seen:
            continue
        seen.add(view)
        out[k] = v.detach().contiguous().clone()
    return out


def write_folder(model: SpeechLM, cfg: RecipeConfig, ckpt: Path, tmp: Path, merge_lora: bool, step: int) -> dict[str, Any]:
    """Write everything but the card into ``tmp``; returns what the card reports."""
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor

    from speechlm.export.hf_files import REMOTE_FILES, SHARED_FILES
    from speechlm.export.hf_files.configuration_speechlm import SpeechLMConfig

    model = model.float().eval()  # bf16 backbones are upcast (lossless); the export runs in fp32
    whisper = model.encoder.encoder
    lm_before = model.causal_lm
    text_attn = _attn(lm_before.config)
    gen = getattr(lm_before, "generation_config", None)
    generation = gen.to_diff_dict() if gen is not None else {}  # what generate() ran with, e.g. a repetition penalty
    lora_dir = tmp / "lora"
    kept_lora = model.llm is not lm_before and not merge_lora
    state: dict[str, torch.Tensor] = {}
    state.update({f"audio_encoder.{k}": v for k, v in whisper.state_dict().items()})
    state.update({f"adapter.{k}": v for k, v in model.adapter.state_dict().items()})
    if model.ctc is not None:
        state["ctc.blank"] = model.ctc.blank
        state["ctc.log_scale"] = model.ctc.log_scale
    spec = adapter_spec(model, cfg)
    ctc_vocab = [int(t) for t in model.ctc.vocab.tolist()] if model.ctc is not None else []
    state.update({f"language_model.{k}": v for k, v in llm_state(model, merge_lora, lora_dir).items()})
    lm = model.causal_lm
    weights = unique_tensors(state)
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    if kept_lora:
        (lora_dir / "README.md").unlink(missing_ok=True)  # peft's empty card; the folder's README.md covers it
        lora_cfg_path = lora_dir / "adapter_config.json"
        lora_cfg = json.loads(lora_cfg_path.read_text())
        lora_cfg["base_model_name_or_path"] = cfg.model.llm  # what peft users load the adapter onto
        lora_cfg_path.write_text(json.dumps(lora_cfg, indent=2) + "\n")
    tokenizer = model.tokenizer
    if cfg.model.audio_token not in tokenizer.get_vocab():  # an added token: the special-token lists stay as trained
        tokenizer.add_tokens([cfg.model.audio_token], special_tokens=True)
    tokenizer.save_pretrained(str(tmp))
    audio_token_id = int(tokenizer.convert_tokens_to_ids(cfg.model.audio_token))
    WhisperFeatureExtractor(feature_size=whisper.config.num_mel_bins, sampling_rate=16000, hop_length=160, n_fft=400,
                            chunk_length=30).save_pretrained(str(tmp))
    for name in REMOTE_FILES:
        shutil.copyfile(HF_FILES / name, tmp / name)
    package_root = Path(__file__).resolve().parents[2]  # the folder holding speechlm/
    for name, source in SHARED_FILES.items():
        shutil.copyfile(package_root / source, tmp / name)
    tasks = task_table()
    trained = trained_tasks(cfg)
    default_task = cfg.data.task if cfg.data.task in tasks else next((t for t in trained if t in tasks), "asr")
    spec_task = tasks[default_task]
    user = spec_task["template"].format(audio=cfg.model.audio_token, instruction=spec_task["instruction"])
    ids = model.formatter.prompt_ids(user)
    prompt_example = tokenizer.decode(ids.before) + cfg.model.audio_token + tokenizer.decode(ids.after)
    llm_config = lm.config.to_dict()
    llm_config.pop("_name_or_path", None)
    encoder_config = whisper.config.to_dict()
    encoder_config.pop("_name_or_path", None)
    config = SpeechLMConfig(
        encoder_config=encoder_config, llm_config=llm_config, encoder_attn_implementation=_attn(whisper.config),
        llm_attn_implementation=text_attn, adapter=spec, pad_audio_to_30s=cfg.model.pad_audio_to_30s,
        ctc_head=model.ctc is not None, ctc_vocab=ctc_vocab, compress_audio=model.compress_audio,
        posterior_input=model.posterior_input, ctc_length_budget=model.ctc_length_budget if model.ctc is not None else 0.0,
        ctc_decode_weight=model.ctc_decode_weight if model.ctc is not None else 0.0,
        ctc_decode_candidates=model.ctc_decode_candidates, trim_silence=model.trim_silence,
        audio_token=cfg.model.audio_token, audio_token_id=audio_token_id,
        system_prompt=cfg.model.system_prompt, prompt_example=prompt_example,
        max_audio_seconds=cfg.model.max_audio_seconds, sampling_rate=16000, tasks=tasks, default_task=default_task, trained_tasks=trained,
        lora_adapter={"path": "lora", "r": cfg.model.lora_r, "alpha": cfg.model.lora_alpha} if kept_lora else None,
        llm_generation_config=generation,
        speechlm={"recipe": cfg.name, "step": step, "checkpoint": str(ckpt.resolve()), "encoder": cfg.model.encoder,
                  "llm": cfg.model.llm, "dtype": getattr(cfg.model, "dtype", "float32")},
        architectures=["SpeechLMModel"],
    )
    config.auto_map = dict(AUTO_MAP)
    config.save_pretrained(str(tmp))
    return {"adapter": spec, "lora": "kept" if kept_lora else "merged" if cfg.model.lora_r > 0 else "none",
            "tasks": trained, "default_task": default_task, "audio_token_id": audio_token_id,
            "encoder_layers": int(whisper.config.encoder_layers), "encoder_width": int(whisper.config.d_model),
            "llm_type": lm.config.model_type, "llm_layers": int(lm.config.num_hidden_layers),
            "llm_width": int(lm.config.hidden_size), "vocab": int(lm.config.vocab_size),
            "params": sum(int(v.numel()) for v in weights.values()), "ctc_vocab": len(ctc_vocab),
            "run": ckpt.parent.parent if ckpt.parent.name == CKPT_DIR else None}
