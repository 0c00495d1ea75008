"""``speechlm export`` (issue 13 part 4): a checkpoint as a Hugging Face folder that ``AutoModel.from_pretrained(folder,
trust_remote_code=True)`` loads and that answers exactly as speechlm does.

* parity, greedy: the exported model's transcripts and task answers equal ``speechlm transcribe`` and ``speechlm eval``
  on the same clips, with LoRA merged and kept apart, and for a checkpoint whose LLM reads CTC-compressed frames;
* the audio path is bit-identical for the other adapters and inputs (conv, stack-tf, CTC-posterior input, 30-s
  padding, a Qwen2 LLM, a trained encoder layer, a frozen LLM), and constrained answers agree;
* the folder holds what the issue lists (config with auto_map, weights, tokenizer with the audio token, feature
  extractor, remote code, model card with tasks, data and scores); the remote code imports only torch and
  transformers and runs in a process that never imports speechlm or peft;
* refusals name the reason: a discrete checkpoint, a non-Whisper encoder, an unported adapter, a non-empty output.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from speechlm.cli import main
from speechlm.data.audio import load_audio
from speechlm.export.hf import HF_FILES, ExportError, export

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and other tests share the two cores
    yield
    torch.set_num_threads(n)


def _sharpen(run: Path, step: int) -> Path:
    """Re-save the run's checkpoint with LoRA made strong: a few training steps leave LoRA B near zero and a random
    tiny LLM answering newlines only, which would make every parity check trivially true."""
    from speechlm.checkpoint import load_checkpoint, save_checkpoint

    model, cfg, _ = load_checkpoint(run)
    g = torch.Generator().manual_seed(0)
    state = model.trainable_state_dict()
    for k, v in state.items():
        if "lora_B" in k:
            state[k] = v + 0.3 * torch.randn(v.shape, generator=g)
        elif "lora_A" in k:
            state[k] = v * 3
    model.load_trainable_state_dict(state)
    return save_checkpoint(model, cfg, run, step, {})


def _train(recipe: str, manifest: Path, out: Path, *extra: str) -> Path:
    from speechlm.config import load_recipe
    from speechlm.training.loop import train

    cfg = load_recipe(recipe, [f"data.train_manifest={manifest}", f"train.out_dir={out}", "train.max_steps=2",
                               "train.save_every=2", "train.eval_every=0", "train.lr=0.0003", *extra])
    train(cfg, progress=False)
    _sharpen(out, 3)
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    from factories import make_manifest

    manifest = make_manifest(tmp_path_factory.mktemp("clips"), n=8, extra={"emotion": "neutral"})
    paths = [str(manifest.parent / json.loads(line)["audio"]) for line in manifest.read_text().splitlines()]
    return manifest, [load_audio(p) for p in paths]


@pytest.fixture(scope="module")
def trained(clips, tmp_path_factory) -> Path:
    """The tiny recipe trained 2 steps, sharpened, and scored by `speechlm eval` (ASR, and SER free-form)."""
    from speechlm.evaluation.asr import evaluate

    manifest, _ = clips
    run = _train("tiny", manifest, tmp_path_factory.mktemp("run") / "tiny")
    evaluate(manifest=[str(manifest)], out=str(run / "eval"), checkpoint=str(run))
    evaluate(manifest=[str(manifest)], out=str(run / "eval-ser"), checkpoint=str(run), task="ser")
    return run


def _hyps(eval_dir: Path) -> list[str]:
    rows = [json.loads(line) for line in (eval_dir / "results.jsonl").read_text().splitlines()]
    return [r["hyp"] for r in rows if r["system"] == "speechlm (trained)"]


def _load(folder: Path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(folder), trust_remote_code=True)


def _reference(run: Path, waves, task: str = "asr", constrained: bool = False) -> list[str]:
    """What speechlm's own inference answers (`speechlm transcribe` runs this Transcriber, VAD aside)."""
    from speechlm.inference.transcribe import Transcriber

    return Transcriber.from_checkpoint(run, task=task, constrained=constrained)(waves)


def test_export_matches_transcribe_and_eval_with_lora_merged(trained, clips, tmp_path, capsys):
    from transformers import AutoFeatureExtractor

    manifest, waves = clips
    out = tmp_path / "hf-merged"
    assert main(["export", "--checkpoint", str(trained), "--out", str(out)]) == 0
    assert "LoRA merged" in capsys.readouterr().out
    model = _load(out)

    # transcripts and task answers: `speechlm transcribe` (greedy) and `speechlm eval`'s rows
    from speechlm.inference.transcribe import transcribe

    audio = [str(manifest.parent / json.loads(line)["audio"]) for line in manifest.read_text().splitlines()]
    asr = model.transcribe(waves)
    assert asr == [r["text"] for r in transcribe(audio, checkpoint=str(trained), skip_silence=False)]
    assert asr == _hyps(trained / "eval")
    assert sum(bool(t) for t in asr) >= 6, asr  # non-trivial answers: the parity is not between empty strings
    assert model.transcribe(waves, task="ser") == _hyps(trained / "eval-ser")
    assert model.transcribe(waves, task="ser", constrained=True) == _reference(trained, waves, "ser", constrained=True)
    assert model.transcribe(waves[:2], instruction="Listen and type out the speech.") == \
        [r["text"] for r in transcribe(audio[:2], checkpoint=str(trained), skip_silence=False,
                                       instruction="Listen and type out the speech.")]

    # the folder
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_speechlm.py", "modeling_speechlm.py", "tokenizer.json",
            "tokenizer_config.json", "preprocessor_config.json", "README.md"} <= names and "lora" not in names
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "speechlm" and cfg["auto_map"]["AutoModel"] == "modeling_speechlm.SpeechLMModel"
    assert cfg["encoder_config"]["model_type"] == "whisper" and cfg["llm_config"]["model_type"] == "llama"
    assert cfg["adapter"] == {"type": "stack", "k": 4, "hidden": 64, "in_dim": 64, "out_dim": 64, "out_norm": False}
    assert cfg["lora_adapter"] is None and cfg["trained_tasks"] == ["asr"] and {"asr", "ser"} <= set(cfg["tasks"])
    assert cfg["audio_token_id"] == model.tokenizer.convert_tokens_to_ids("<|audio|>") == 384
    assert cfg["max_audio_seconds"] == 30.0 and "<|audio|>\nTranscribe the audio." in cfg["prompt_example"]
    fe = AutoFeatureExtractor.from_pretrained(str(out), trust_remote_code=True)
    assert type(fe).__name__ == "WhisperFeatureExtractor" and fe.feature_size == 80 and fe.sampling_rate == 16000
    card = (out / "README.md").read_text()
    for needle in ("pipeline_tag: automatic-speech-recognition", "## Tasks", "| asr |", "clips: 8 used",
                   "## Scores", "speechlm (trained)", "eval-ser", "transcribe("):
        assert needle in card, needle

    # forward(): input ids holding the audio token once -> the logits generate's first step picks from
    prompt = model.tokenizer.apply_chat_template([{"role": "system", "content": ""}, {"role": "user", "content":
                                                  "<|audio|>\nTranscribe the audio."}], tokenize=False, add_generation_prompt=True)
    ids = model.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids  # [1, S]
    first = model.generate([waves[0]], max_new_tokens=1)[0, 0]
    with torch.no_grad():
        outputs = model(input_ids=ids, waves=[waves[0]], labels=ids)
    assert int(outputs.logits[0, -1].argmax()) == int(first) and torch.isfinite(outputs.loss)

    # an empty clip and a clip past the model's maximum are refused with the clip named
    with pytest.raises(ValueError, match="clip 1: the audio holds no samples"):
        model.transcribe([waves[0], np.zeros(0, dtype=np.float32)])
    with pytest.raises(ValueError, match="clip 0: 31.0 s is longer"):
        model.transcribe([np.zeros(31 * 16000, dtype=np.float32)])


def test_export_keeps_lora_apart_and_runs_without_speechlm_or_peft(trained, clips, tmp_path):
    from safetensors import safe_open

    _, waves = clips
    out = export(str(trained), str(tmp_path / "hf-lora"), merge_lora=False)
    lora = json.loads((out / "lora" / "adapter_config.json").read_text())
    assert lora["r"] == 4 and lora["lora_alpha"] == 8 and lora["base_model_name_or_path"] == "tiny-llama"
    assert (out / "lora" / "adapter_model.safetensors").is_file()
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        q = f.get_tensor("language_model.model.layers.0.self_attn.q_proj.weight")
    assert not [k for k in keys if "lora" in k]
    from speechlm.backbones.llm import build_tiny_llm

    assert torch.equal(q, build_tiny_llm("llama")[0].model.layers[0].self_attn.q_proj.weight)  # the base, unmerged
    assert json.loads((out / "config.json").read_text())["lora_adapter"]["path"] == "lora"
    assert "kept apart in `lora/`" in (out / "README.md").read_text()

    # a fresh process loads and answers with neither speechlm nor peft ever imported
    np.savez(tmp_path / "waves.npz", *waves)
    script = textwrap.dedent("""
        import json, sys
        import numpy as np, torch
        from transformers import AutoModel
        torch.set_num_threads(1)
        model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
        data = np.load(sys.argv[2])
        waves = [data[f"arr_{i}"] for i in range(len(data.files))]
        out = {"asr": model.transcribe(waves), "ser": model.transcribe(waves, task="ser"),
               "imported": sorted(m for m in sys.modules if m.split(".")[0] in ("speechlm", "peft"))}
        print(json.dumps(out))
    """)
    res = subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "waves.npz")], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["imported"] == []
    assert got["asr"] == _hyps(trained / "eval") and got["ser"] == _hyps(trained / "eval-ser")


def test_export_ctc_compressed_matches_transcribe(clips, tmp_path):
    manifest, waves = clips
    stages = "train.stages=[{steps: 1, tasks: [asr], trainable: adapter, lm: 0, ctc: 1}, " \
             "{steps: 1, tasks: [asr], trainable: [adapter, lora], ctc: 0.3}]"
    run = _train("tiny-ctc", manifest, tmp_path / "ctc", stages, "model.ctc_length_budget=0.5", "model.ctc_decode_weight=0.5")
    out = export(str(run), str(tmp_path / "hf-ctc"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["ctc_head"] and cfg["compress_audio"] and cfg["ctc_vocab"] and cfg["adapter"]["out_norm"]
    assert cfg["ctc_length_budget"] == 0.5 and cfg["tasks"]["asr"]["transcript"] and not cfg["tasks"]["ser"]["transcript"]
    assert cfg["ctc_decode_weight"] == 0.5 and cfg["ctc_decode_candidates"] == 8
    from speechlm.model import ctc_prefix  # one source: the exported scorer is the package's own file

    assert (out / "ctc_prefix.py").read_text() == Path(ctc_prefix.__file__).read_text()
    model = _load(out)
    clips_t = [torch.as_tensor(w) for w in waves]
    frames, lengths = model.encode(clips_t)
    _, compressed = model.encode_audio(clips_t)
    assert (compressed < model.adapter.out_lengths(lengths)).all(), "the LLM must read compressed frames"
    caps = model.encode_for_answers(clips_t, transcript=True)[2]
    assert caps is not None and all(c >= 2 for c in caps) and model.encode_for_answers(clips_t)[2] is None
    ids = model.generate(waves).tolist()  # [B, T]: each row's answer tokens before its end of turn stay within its cap
    assert all(next((i for i, t in enumerate(row) if t == model.eos_id), len(row)) <= c for row, c in zip(ids, caps))
    assert model.encode_for_answers(clips_t, transcript=True)[3] is not None  # joint CTC/LLM decoding is on
    assert model.transcribe(waves) == _reference(run, waves)  # both cap at 0.5 x the CTC length and decode jointly
    assert "CTC-compressed frames" in (out / "README.md").read_text()


CASES = {
    "conv+posterior+30s+qwen2+frozen-llm": dict(adapter="conv", ctc_head=True, posterior_input=True, pad_audio_to_30s=True,
                                                llm="tiny-qwen2", lora_r=0),
    "stack-tf+compress+encoder-layer": dict(adapter="stack-tf", ctc_head=True, compress_audio=True, adapter_out_norm=True,
                                            train_encoder_layers=1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_audio_path_is_bit_identical_for_other_adapters_and_inputs(case, clips, tmp_path):
    from speechlm.checkpoint import load_checkpoint, save_checkpoint
    from speechlm.config import ModelConfig, RecipeConfig
    from speechlm.model.adapter import ADAPTERS
    from speechlm.model.builders import SIZES, build_speechlm

    over = CASES[case]
    if over["adapter"] not in ADAPTERS:
        pytest.skip(f"adapter {over['adapter']!r} is not registered in this tree")
    _, waves = clips
    mc = ModelConfig(**{**SIZES["tiny"].__dict__, **over})
    model = build_speechlm(mc)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random trained parts, far from their (near-zero or identity) initialisation
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    model.ctc.set_vocab(range(20, 120))  # a restricted CTC vocabulary, as model.ctc_vocab=train leaves it
    run = tmp_path / "run"
    save_checkpoint(model, RecipeConfig(name=case, model=mc), run, 1, {})
    hf = _load(export(str(run), str(tmp_path / "hf")))
    ref, _, _ = load_checkpoint(run)
    clips_t = [torch.as_tensor(w) for w in waves]
    with torch.no_grad():
        a, la = ref.encode_audio(clips_t)
        b, lb = hf.encode_audio(clips_t)
    assert torch.equal(la, lb) and torch.equal(a, b)
    assert hf.transcribe(waves) == _reference(run, waves)
    assert hf.transcribe(waves, task="ser", constrained=True) == _reference(run, waves, "ser", constrained=True)


def test_refusals_name_the_reason(trained, tmp_path, capsys):
    from speechlm.checkpoint import resolve_checkpoint

    ckpt = resolve_checkpoint(trained)

    def copy(name: str, **model_fields) -> Path:
        dst = tmp_path / name
        shutil.copytree(ckpt, dst)
        cfg = json.loads((dst / "config.json").read_text())
        cfg["model"].update(model_fields)
        (dst / "config.json").write_text(json.dumps(cfg))
        return dst

    out = tmp_path / "never"
    discrete = copy("discrete")
    (discrete / "vocab_layout.json").write_text("{}")
    hubert = tmp_path / "hubert"
    hubert.mkdir()
    (hubert / "config.json").write_text(json.dumps({"model_type": "hubert"}))
    cases = [(discrete, "vocab_layout.json"), (copy("adapter", adapter="qformer"), "model.adapter='qformer' is not ported"),
             (copy("encoder", encoder=str(hubert)), "'hubert' model; the export bundles Whisper-family encoders only")]
    for src, needle in cases:
        with pytest.raises(ExportError, match="") as err:
            export(str(src), str(out))
        assert needle in str(err.value) and str(src) in str(err.value), str(err.value)
        assert not out.exists(), "a refused export writes nothing"

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(trained), "--out", str(busy)]) == 2
    assert "not empty (pass --overwrite" in capsys.readouterr().err and (busy / "keep.txt").exists()
    assert main(["export", "--checkpoint", str(trained), "--out", str(busy), "--overwrite", "--scores",
                 str(tmp_path / "nowhere")]) == 2  # a wrong --scores path fails before anything is replaced
    assert (busy / "keep.txt").exists()
    assert main(["export", "--checkpoint", str(trained), "--out", str(busy), "--overwrite"]) == 0
    assert not (busy / "keep.txt").exists() and (busy / "model.safetensors").is_file()


def test_card_reads_the_per_task_summary(tmp_path):
    """`speechlm eval --tasks` writes one entry per task (the ASR shape is read in the parity test above)."""
    from speechlm.export.card import score_tables

    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"asr": {"metric": "wer", "n": 12, "seen instructions": 0.25, "held-out instructions": 0.5},
                                "ser": {"metric": "accuracy_f1", "n": 9, "seen instructions": 0.75, "constrained": 0.8,
                                        "majority": 0.1}, "ved": {"skipped": "no test line carries field 'event'"}}))
    table = "\n".join(score_tables(path))
    assert "| task | metric | clips | seen instructions | held-out instructions | constrained | majority |" in table
    assert "| ser | accuracy_f1 | 9 | 0.750 | - | 0.800 | 0.100 |" in table and "ved" not in table


def test_remote_code_is_standalone_and_only_the_cli_imports_export():
    allowed = {"torch", "transformers", "safetensors"} | set(sys.stdlib_module_names)
    for name in ("configuration_speechlm.py", "modeling_speechlm.py"):
        tree = ast.parse((HF_FILES / name).read_text())
        for node in ast.walk(tree):
            roots = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else \
                [(node.module or "").split(".")[0]] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert set(roots) <= allowed, f"{name} imports {roots}"
    from test_layers import _imports, _modules

    mods = _modules()
    users = sorted(m for m, p in mods.items() if not m.startswith("speechlm.export") and m != "speechlm.cli"
                   and any(d.startswith("speechlm.export") for d in _imports(p, m, set(mods))))
    assert not users, f"only the CLI may import speechlm.export: {users}"
