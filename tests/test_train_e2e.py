"""Training at tiny size: end to end through the CLI, exact resume, bad input, DDP == one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechlm.cli import main
from speechlm.config import load_recipe
from speechlm.data.manifest import ManifestError
from speechlm.model.features import FeatureMismatchError
from speechlm.checkpoint import load_checkpoint, load_training_state
from speechlm.checkpoint.state import load_state
from speechlm.training.loop import train


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if r["split"] == "train"}


def _assert_same_weights(run_a: Path, run_b: Path, atol: float) -> None:
    ma, _, _ = load_checkpoint(run_a)
    mb, _, _ = load_checkpoint(run_b)
    for (n, pa), pb in zip(ma.trainable_state_dict().items(), mb.trainable_state_dict().values()):
        torch.testing.assert_close(pa, pb, atol=atol, rtol=atol * 10, msg=n)


def _cfg(manifest: Path, out: Path, *extra: str):
    return load_recipe("tiny", [f"data.train_manifest={manifest}", f"train.out_dir={out}", "train.log_every=1", *extra])


def test_resume_continues_exactly(tone_manifest, tmp_path):
    full = tmp_path / "full"
    train(_cfg(tone_manifest, full, "train.max_steps=8", "train.save_every=3"), progress=False)
    # a run "killed" after step 3 leaves its step-3 checkpoint; resuming from it must replay steps 4-8 exactly
    resumed = tmp_path / "resumed"
    train(_cfg(tone_manifest, resumed, "train.max_steps=8", "train.save_every=3"), resume=str(full / "checkpoints" / "step-000003"), progress=False)
    a, b = _losses(full), _losses(resumed)
    assert sorted(b) == [4, 5, 6, 7, 8]
    for step in b:
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])
    _assert_same_weights(full, resumed, atol=1e-6)


def test_checkpoint_holds_all_state_and_is_atomic(tone_manifest, tmp_path):
    run = tmp_path / "run"
    final = train(_cfg(tone_manifest, run, "train.max_steps=4", "train.save_every=2"), progress=False)
    assert final.name == "step-000004" and (run / "checkpoints" / "latest").read_text().strip() == "step-000004"
    state = load_state(final)
    assert {"optimizer", "scheduler", "rng", "sampler", "step"} <= set(state) and state["step"] == 4
    assert {"epoch", "position", "seed"} <= set(state["sampler"])
    assert (final / "tokenizer").is_dir() and json.loads((final / "config.json").read_text())["model"]["llm"] == "tiny-llama"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")], "temporary folders left behind"
    assert (run / "loss.png").stat().st_size > 0 and any((run / "tensorboard").iterdir())


def test_end_to_end_cli_prepare_train_resume_transcribe_eval(tmp_path, capsys):
    from speechlm.corpora.synth import available_voices

    try:
        available_voices()
        assert main(["prepare", "synthetic", str(tmp_path / "data"), "--n", "10"]) == 0
        manifest = tmp_path / "data" / "manifest.jsonl"
    except RuntimeError:  # no TTS engine on this machine: tones stand in
        pytest.skip("espeak-ng/flite not installed")
    run = tmp_path / "run"
    common = ["train", "--recipe", "tiny", "--train-manifest", str(manifest), "--out-dir", str(run)]
    assert main(common + ["--max-steps", "3"]) == 0
    assert main(common + ["--max-steps", "5", "--resume", "auto"]) == 0  # continues from step 3
    assert sorted(_losses(run)) == [1, 2, 3, 4, 5]
    audio = [json.loads(line)["audio"] for line in manifest.read_text().splitlines()[:2]]
    audio = [str(manifest.parent / a) for a in audio]
    capsys.readouterr()
    assert main(["transcribe", "--checkpoint", str(run), *audio]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2 and printed[0].startswith(audio[0] + "\t")
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run), "--manifest", str(manifest), "--out", str(out), "--untrained"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["asr"]["wer"]) == {"speechlm (trained)", "speechlm (untrained)"}
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 10 and {"id", "ref", "hyp", "wer", "system"} <= set(rows[0])
    assert "WER" in (out / "report.md").read_text()


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_input_is_named_before_training(tone_manifest, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    good = tone_manifest.read_text().splitlines()
    base = tone_manifest.parent
    sf.write(base / "long.wav", np.zeros(31 * 16000, dtype="float32"), 16000)
    (base / "corrupt.wav").write_bytes(b"RIFF not really audio")
    cases = {
        "missing": (json.dumps({"id": "m", "audio": "wav/nope.wav", "text": "x"}), "nope.wav"),
        "corrupt": (json.dumps({"id": "c", "audio": "corrupt.wav", "text": "x"}), "corrupt.wav"),
        "malformed": ('{"id": "bad", "audio": ', ":3"),
        "empty text": (json.dumps({"id": "e", "audio": "wav/0.wav", "text": "  "}), "text"),
        "too long": (json.dumps({"id": "l", "audio": "long.wav", "text": "x"}), "long.wav"),
    }
    for name, (line, needle) in cases.items():
        manifest = _write(base / f"bad-{name.replace(' ', '_')}.jsonl", good[:2] + [line] + good[2:])
        run = tmp_path / f"run-{name}"
        with pytest.raises(ManifestError) as err:
            train(_cfg(manifest, run, "train.max_steps=2"), progress=False)
        msg = str(err.value)
        assert f"{manifest.name}:3" in msg and needle in msg, (name, msg)
        assert not (run / "checkpoints").exists(), "nothing may be trained before the data is checked"
        # the CLI prints the same message and exits non-zero; --skip-bad trains on the rest and counts
        assert main(["train", "--train-manifest", str(manifest), "--out-dir", str(run), "--max-steps", "1"]) == 2
        assert f"{manifest.name}:3" in capsys.readouterr().err
        assert main(["train", "--train-manifest", str(manifest), "--out-dir", str(run), "--max-steps", "1", "--skip-bad"]) == 0
        assert json.loads((run / "data_report.json").read_text())["bad"] == 1


CTC_STAGES = ("model.ctc_head=true", "model.adapter_out_norm=true", "train.stage_schedule=true",
              'train.stages=[{"steps": 2, "tasks": ["asr"], "trainable": "adapter", "lm": 0, "ctc": 1}, '
              '{"steps": 2, "tasks": ["asr"], "ctc": 0.3}]')


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on linux")
@pytest.mark.parametrize("extra", [(), CTC_STAGES], ids=["lm", "ctc-stages"])
def test_ddp_two_processes_match_one_process(tone_manifest, tmp_path, extra):
    """torchrun, 2 CPU processes (gloo), same global batch as one process: same losses and weights; also with
    a CTC-only stage (no LLM forward) followed by LM + CTC."""
    args = ["train", "--recipe", "tiny", "--train-manifest", str(tone_manifest), "--max-steps", "4",
            "--set", "train.log_every=1", "data.max_batch=4", "data.max_seconds_per_batch=8", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    one = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "speechlm.cli", *args, "--out-dir", str(one)], check=True, env=env, capture_output=True)
    two = tmp_path / "two"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "speechlm.cli", *args, "--out-dir", str(two)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert abs(a[step] - b[step]) < 1e-4, (step, a[step], b[step])
    _assert_same_weights(one, two, atol=1e-5)


def test_training_streams_from_shards_and_resumes_exactly(tone_manifest, tmp_path):
    from speechlm.data.shards import write_shards

    index = write_shards(tone_manifest, tmp_path / "shards", max_cuts_per_shard=4, progress=False)
    shard_cfg = ("data.train_manifest=", f"data.train_shards={index}", "train.max_steps=6", "train.save_every=3",
                 "data.shuffle_buffer=4")
    full = tmp_path / "full"
    train(_cfg(tone_manifest, full, *shard_cfg), progress=False)
    resumed = tmp_path / "resumed"
    train(_cfg(tone_manifest, resumed, *shard_cfg), resume=str(full / "checkpoints" / "step-000003"), progress=False)
    a, b = _losses(full), _losses(resumed)
    assert sorted(a) == list(range(1, 7)) and sorted(b) == [4, 5, 6]
    for step in b:
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])
    assert "shards" in load_state(full / "checkpoints" / "step-000003")


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on linux")
def test_ddp_training_from_shards_with_uneven_ranks(tone_manifest, tmp_path):
    """3 shards over 2 ranks: one rank runs out first and steps with weight 0 instead of hanging."""
    from speechlm.data.shards import write_shards

    index = write_shards(tone_manifest, tmp_path / "shards", max_cuts_per_shard=4, progress=False)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "speechlm.cli", "train", "--recipe", "tiny", "--out-dir", str(run), "--max-steps", "5",
                           "--set", f"data.train_shards={index}", "train.log_every=1", "train.save_every=2"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(_losses(run)) == [1, 2, 3, 4, 5]
    state = load_state(run / "checkpoints" / "step-000002")
    assert "shards" in state


def test_training_from_cached_features_matches_audio(tone_manifest, tmp_path):
    """prepare --features: the frozen encoder runs once; training reads its outputs and gets the same losses."""
    assert main(["prepare", "manifest", str(tone_manifest), str(tmp_path / "prep"), "--features", "--encoder", "tiny-whisper"]) == 0
    feats = tmp_path / "prep" / "features" / tone_manifest.stem / "manifest.jsonl"
    assert '"features"' in feats.read_text()
    audio_run, feat_run = tmp_path / "audio", tmp_path / "feats"
    train(_cfg(tone_manifest, audio_run, "train.max_steps=3"), progress=False)
    train(_cfg(feats, feat_run, "train.max_steps=3"), progress=False)
    a, b = _losses(audio_run), _losses(feat_run)
    for step in a:  # fp16 storage of the frames: agreement to about 1e-3 relative
        assert abs(a[step] - b[step]) < 2e-3 * abs(a[step]), (step, a[step], b[step])
    # a recipe that trains the top encoder layer needs frames cached below it, and says so
    with pytest.raises(FeatureMismatchError, match="below the top 1 layer"):
        train(_cfg(feats, tmp_path / "x", "train.max_steps=1", "model.train_encoder_layers=1"), progress=False)
    # with them (prepare --below-top 1) it trains that layer on the cached frames as it would from audio
    assert main(["prepare", "manifest", str(tone_manifest), str(tmp_path / "prep1"), "--features", "--encoder", "tiny-whisper",
                 "--below-top", "1"]) == 0
    below = tmp_path / "prep1" / "features" / tone_manifest.stem / "manifest.jsonl"
    top = ("train.max_steps=3", "model.train_encoder_layers=1", "train.encoder_lr=3e-4")
    train(_cfg(tone_manifest, tmp_path / "top_audio", *top), progress=False)
    train(_cfg(below, tmp_path / "top_feats", *top), progress=False)
    a, b = _losses(tmp_path / "top_audio"), _losses(tmp_path / "top_feats")
    for step in a:
        assert abs(a[step] - b[step]) < 2e-3 * abs(a[step]), (step, a[step], b[step])
    _, state, _ = load_training_state(tmp_path / "top_feats")
    assert [g["initial_lr"] for g in state["optimizer"]["param_groups"]][1:] == [3e-4]  # the encoder's group apart


def test_prepare_check_exit_codes(tone_manifest, tmp_path, capsys):
    assert main(["prepare", "--check", str(tone_manifest), str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "duration_hist.png").stat().st_size > 0
    bad = tone_manifest.parent / "bad.jsonl"  # beside the clips, so relative paths resolve
    bad.write_text(tone_manifest.read_text() + '{"id": "u0", "audio": "wav/0.wav", "text": "dup"}\n{"id": "x", "audio": "gone.wav"}\n')
    capsys.readouterr()
    assert main(["prepare", "--check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "bad.jsonl:13" in out and "bad.jsonl:14" in out


def test_resume_after_a_killed_run(tone_manifest, tmp_path):
    """SIGKILL a training process right after it writes a checkpoint; --resume auto continues exactly."""
    import signal
    import time

    args = ["train", "--recipe", "tiny", "--train-manifest", str(tone_manifest), "--max-steps", "60",
            "--set", "train.log_every=1", "train.save_every=3"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "speechlm.cli", *args, "--out-dir", str(ref)], check=True, env=env, capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "speechlm.cli", *args, "--out-dir", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 120
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(latest.read_text().strip().split("-")[1])
    assert killed_at < 60, "the run finished before it could be killed"
    subprocess.run([sys.executable, "-m", "speechlm.cli", *args, "--out-dir", str(run), "--resume", "auto"],
                   check=True, env=env, capture_output=True)
    a, b = _losses(ref), _losses(run)  # later lines win: the resumed run's own steps
    assert sorted(b) == list(range(1, 61))
    for step in range(killed_at + 1, 61):
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])


def test_bf16_autocast_option_trains(tone_manifest, tmp_path):
    run = tmp_path / "bf16"
    train(_cfg(tone_manifest, run, "train.max_steps=2", "train.bf16=true"), progress=False)
    assert all(abs(v) < 50 for v in _losses(run).values())
