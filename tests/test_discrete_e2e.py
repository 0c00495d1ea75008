"""The discrete speech LM end to end at tiny size, through the CLI: a flite voice -> prepare units (+ vocoder) ->
train SpeechGPT's three stages (speechgpt-tiny) or ESPnet's templates on codec_ssl streams (espnet-tiny) with a
tiny random LLM -> speak, chat, discrete transcribe; exact resume across a stage boundary; the layout check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from speechlm.cli import main

pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="flite (Debian package) is not installed")

TINY = ["discrete.llm=tiny-llama", "discrete.batch_size=4", "discrete.lora_r=4", "discrete.lora_alpha=8",
        "train.threads=1", "train.log_every=1", "train.save_every=100", "train.warmup_steps=1", "train.max_minutes=0"]
SGPT_STAGES = ("discrete.stages=[{steps: 2, tasks: [audiolm], loss_region: all}, {steps: 2, tasks: [asr, tts]},"
               " {steps: 2, tasks: [chain-of-modality]}]")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 flite clips; a chain-of-modality manifest (clip i's answer: clip i+1's text and audio); two tokenizer
    folders with tiny vocoders: plain deduplicated units, and codec_ssl (units + 2 mel-RVQ streams)."""
    root = tmp_path_factory.mktemp("discrete")
    assert main(["prepare", "voice", str(root / "voice"), "--n", "8"]) == 0
    manifest = root / "voice" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for i, r in enumerate(rows):
        nxt = rows[(i + 1) % len(rows)]
        r["answer"], r["answer_audio"] = nxt["text"], nxt["audio"]
    com = root / "voice" / "com.jsonl"
    com.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vocoder = ["--set", "vocoder.max_steps=4", "vocoder.hidden=32", "vocoder.layers=1", "vocoder.threads=1"]
    tok, tok_cs = root / "tok", root / "tok_cs"
    assert main(["prepare", "units", str(com), str(tok), "--set", "units.k=12", "units.layer=2"]) == 0
    assert main(["prepare", "vocoder", str(manifest), str(tok), *vocoder]) == 0
    assert main(["prepare", "units", str(com), str(tok_cs), "--set", "units.k=12", "units.layer=2", "units.dedup=false",
                 "units.acoustic_streams=2", "units.acoustic_k=8"]) == 0
    assert main(["prepare", "vocoder", str(manifest), str(tok_cs), *vocoder]) == 0
    return {"root": root, "manifest": com, "tok": tok, "tok_cs": tok_cs, "clip": str(root / "voice" / rows[0]["audio"])}


def _train(data, out: Path, recipe: str, tok: Path, *extra: str, resume: str = "") -> Path:
    args = ["train", "--recipe", recipe, "--train-manifest", str(data["manifest"]), "--out-dir", str(out),
            "--set", f"discrete.tokenizer={tok}", *TINY, *extra]
    if resume:
        args += ["--resume", resume]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def sgpt_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sgpt")
    return _train(data, out, "speechgpt-tiny", data["tok"], SGPT_STAGES, "train.max_steps=6")


def test_speechgpt_three_stages_train_and_checkpoint(sgpt_run, data):
    ckpts = sorted(p.name for p in (sgpt_run / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert ckpts == ["step-000002", "step-000004", "step-000006"]  # every stage boundary, and the end
    final = sgpt_run / "checkpoints" / "step-000006"
    for name in ("trainable.safetensors", "vocab_layout.json", "config.json", "state.json",
                 "speech_tokens/tokenizer.json", "speech_tokens/vocoder/vocoder.json"):
        assert (final / name).exists(), name
    assert not (final / "speech_tokens" / "units").exists()
    layout = json.loads((final / "vocab_layout.json").read_text())
    assert layout["n_units"] == 12 and layout["tasks"] == ["asr", "audiolm", "chain-of-modality", "tts"]
    log = [json.loads(line) for line in (sgpt_run / "train_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == [0, 0, 1, 1, 2, 2] and all(r["loss"] > 0 for r in log)
    report = json.loads((sgpt_run / "data_report.json").read_text())
    assert [s["examples_used"] for s in report["stages"]] == [8, 16, 8]


def test_ctc_unit_init_aligns_the_rows_before_training(data, tmp_path):
    """discrete.unit_init=ctc: the rows the checkpoint holds (lr 0: as initialised) are the CTC-aligned ones, not the
    centroid start they began from, and the data report says how the alignment went."""
    from safetensors.torch import load_file

    one = "discrete.stages=[{steps: 1, tasks: [asr, tts]}]"
    runs = {init: _train(data, tmp_path / init, "speechgpt-tiny", data["tok"], one, "train.max_steps=1", "train.lr=0",
                         f"discrete.unit_init={init}") for init in ("centroids", "ctc")}
    rows = {k: {n: t for n, t in load_file(str(v / "checkpoints" / "step-000001" / "trainable.safetensors")).items()
                if "trainable_tokens" in n} for k, v in runs.items()}
    assert rows["ctc"] and rows["ctc"].keys() == rows["centroids"].keys()
    assert any(not torch.allclose(rows["ctc"][n], rows["centroids"][n]) for n in rows["ctc"])
    report = json.loads((runs["ctc"] / "data_report.json").read_text())["unit_rows_ctc"]
    assert report["clips"] > 0 and report["loss_end"] < report["loss_start"]
    assert "unit_rows_ctc" not in json.loads((runs["centroids"] / "data_report.json").read_text())


def test_speak_chat_transcribe_from_the_checkpoint_alone(sgpt_run, data, tmp_path, capsys):
    import soundfile as sf

    from speechlm.inference.speak import transcribe_discrete

    ckpt = tmp_path / "moved"
    shutil.copytree(sgpt_run / "checkpoints" / "step-000006", ckpt)
    wav = tmp_path / "x.wav"
    assert main(["speak", "hello world", "--checkpoint", str(ckpt), "--out", str(wav), "--max-units", "12"]) == 0
    audio, sr = sf.read(wav)
    assert sr == 16000 and audio.ndim == 1
    assert main(["chat", data["clip"], "--checkpoint", str(ckpt), "--out", str(tmp_path / "a.wav"),
                 "--max-frames", "30"]) == 0
    texts = transcribe_discrete([data["clip"]], checkpoint=str(ckpt), max_frames=10)
    assert isinstance(texts[0]["text"], str)
    # ASR's token budget follows the audio's length (ASR_TOKENS_PER_SECOND + 8), under max_frames
    from speechlm.inference.speak import ASR_TOKENS_PER_SECOND, DiscreteRunner

    runner, asked = DiscreteRunner.from_checkpoint(str(ckpt)), []
    plain = runner.model.generate
    runner.model.generate = lambda prompt, max_frames, **kw: asked.append(max_frames) or plain(prompt, max_frames=max_frames, **kw)
    runner.asr(np.zeros(8000, dtype=np.float32) + 0.01, max_frames=200)  # 0.5 s
    runner.asr(np.zeros(8000, dtype=np.float32) + 0.01, max_frames=5)
    assert asked == [int(np.ceil(ASR_TOKENS_PER_SECOND * 0.5)) + 8, 5]
    from speechlm.inference.speak import TTS_UNITS_PER_CHAR

    runner.tts("hello", max_units=500)  # TTS: a budget per input character, under max_units
    runner.tts("hello", max_units=7)
    assert asked[2:] == [int(np.ceil(TTS_UNITS_PER_CHAR["units"] * 5)) + 20, 7]
    assert "x.wav" in capsys.readouterr().out


def test_resume_across_a_stage_boundary_matches_an_uninterrupted_run(sgpt_run, data, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "resumed"
    _train(data, out, "speechgpt-tiny", data["tok"], SGPT_STAGES, "train.max_steps=6", "train.stop_at_step=3")
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000003"
    _train(data, out, "speechgpt-tiny", data["tok"], SGPT_STAGES, "train.max_steps=6", resume="auto")
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]  # continued at step 4, not trained again from 0
    a = load_file(str(sgpt_run / "checkpoints" / "step-000006" / "trainable.safetensors"))
    b = load_file(str(out / "checkpoints" / "step-000006" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_a_changed_layout_is_refused_on_load(sgpt_run, tmp_path):
    from speechlm.checkpoint.discrete import load_discrete_checkpoint
    from speechlm.model.vocab import LayoutMismatch

    ckpt = tmp_path / "bad"
    shutil.copytree(sgpt_run / "checkpoints" / "step-000006", ckpt)
    lay = json.loads((ckpt / "vocab_layout.json").read_text())
    lay["tasks"] = list(reversed(lay["tasks"]))  # a reordered vocabulary (ESPnet's lost run)
    (ckpt / "vocab_layout.json").write_text(json.dumps(lay))
    with pytest.raises(LayoutMismatch, match="tasks: saved"):
        load_discrete_checkpoint(ckpt)


def test_espnet_templates_on_codec_ssl_streams_train_and_speak(data, tmp_path):
    from speechlm.data.audio import load_audio
    from speechlm.inference.speak import DiscreteRunner
    from speechlm.tasks import get_task

    out = _train(data, tmp_path / "espnet", "espnet-tiny", data["tok_cs"], "train.max_steps=3",
                 "discrete.stages=[{steps: 3, tasks: [asr, tts, textlm, audiolm]}]")
    layout = json.loads((out / "checkpoints" / "step-000003" / "vocab_layout.json").read_text())
    assert layout["codec_levels"] == 2 and layout["codebook_size"] == 8
    runner = DiscreteRunner.from_checkpoint(out)
    assert runner.model.pattern == "delay" and runner.model.nq == 3
    wave, units = runner.tts("hello", max_units=10)
    assert wave.ndim == 1 and len(units) <= 10
    assert isinstance(runner.asr(load_audio(data["clip"]), max_frames=8), str)
    answer = runner.run(get_task("tts"), text="hi", max_frames=6)
    assert answer["frame_level"] and len(answer["units"]) == 1


def test_serving_a_speaking_model_through_the_openai_client(sgpt_run, data, tmp_path):
    """A discrete checkpoint behind `speechlm serve`'s speaking app: /v1/audio/speech in every format libsndfile
    writes, chat with modalities [text, audio] (the spoken answer as base64 WAV), transcriptions, and refusals."""
    import base64
    import io

    import httpx
    import openai
    import soundfile as sf
    from test_serving import LiveServer

    from speechlm.data.audio import load_audio
    from speechlm.serving.http import Settings
    from speechlm.serving.speaking import SPEECH_FORMATS, SpeakingEngine, create_speaking_app
    from speechlm.serving.uploads import Limits

    engine = SpeakingEngine.from_checkpoint(sgpt_run / "checkpoints" / "step-000006", max_units=12, max_frames=30)
    assert engine.speaks and "chain-of-modality" in engine.runner.tasks
    settings = Settings(api_key="k", limits=Limits(max_upload_bytes=2_000_000, max_audio_seconds=30.0), request_timeout_s=120)
    clip = (tmp_path / "q.wav")
    sf.write(clip, load_audio(data["clip"]), 16000)
    with LiveServer(create_speaking_app(engine, settings)) as live:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="k", max_retries=0, timeout=120)
        for fmt in ("wav", "flac", "mp3", "opus"):
            audio = client.audio.speech.create(model=engine.model_id, voice="alloy", input="hello world", response_format=fmt).content
            wave, sr = sf.read(io.BytesIO(audio))
            assert sr == 16000 and wave.ndim == 1 and len(wave) > 0, fmt
        raw = client.audio.speech.create(model=engine.model_id, voice="alloy", input="hello", response_format="pcm").content
        assert len(raw) % 2 == 0 and len(raw) > 0
        assert set(SPEECH_FORMATS) == {"mp3", "opus", "flac", "wav", "pcm"}
        q = base64.b64encode(clip.read_bytes()).decode()
        msgs = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": q, "format": "wav"}}]}]
        # the tiny random model's own answer is noise: fix what it "generates" to test both ways speech comes back
        real_run = engine.runner.run
        for fake, spoken_by in [({"text": ["hello world"], "units": [[1, 2, 3, 4, 5, 6]], "frame_level": False}, "chain-of-modality"),
                                ({"text": ["hello world"], "units": [], "frame_level": False}, "tts")]:
            engine.runner.run = lambda task, *a, _fake=fake, **k: _fake if task.name == "chain-of-modality" else real_run(task, *a, **k)
            r = client.chat.completions.create(model=engine.model_id, messages=msgs, modalities=["text", "audio"],
                                               audio={"voice": "alloy", "format": "wav"})
            spoken = r.choices[0].message.audio
            wave, sr = sf.read(io.BytesIO(base64.b64decode(spoken.data)))
            assert sr == 16000 and len(wave) > 0 and spoken.transcript == r.choices[0].message.content == "hello world"
            assert spoken.model_extra["spoken_by"] == spoken_by
        engine.runner.run = lambda task, *a, **k: {"text": [""], "units": [], "frame_level": False}
        with pytest.raises(openai.InternalServerError, match="without speech"):
            client.chat.completions.create(model=engine.model_id, messages=msgs, modalities=["text", "audio"])
        engine.runner.run = real_run
        text_only = client.chat.completions.create(model=engine.model_id, messages=msgs)
        assert text_only.choices[0].message.audio is None and isinstance(text_only.choices[0].message.content, str)
        with open(clip, "rb") as f:
            assert isinstance(client.audio.transcriptions.create(model=engine.model_id, file=f).text, str)

        def post(path, body, key="k"):
            return httpx.post(live.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)

        for body, status, words in [({"input": ""}, 400, "non-empty"), ({"input": "x" * 5000}, 413, "4096"),
                                    ({"input": "hi", "response_format": "aac"}, 400, "aac"),
                                    ({"input": "hi", "speed": 1.5}, 400, "speed")]:
            resp = post("/v1/audio/speech", body)
            assert resp.status_code == status and words in resp.json()["error"]["message"], (body, resp.text)
        assert post("/v1/audio/speech", {"input": "hi"}, key="wrong").status_code == 401
        resp = post("/v1/chat/completions", {"messages": msgs, "modalities": ["audio"]})
        assert resp.status_code == 400 and "modalities" in resp.json()["error"]["message"]
        resp = post("/v1/chat/completions", {"messages": msgs, "stream": True})
        assert resp.status_code == 400 and "not streamed" in resp.json()["error"]["message"]
        health = httpx.get(live.url + "/health").json()
        assert health["speaks"] and health["model"] == engine.model_id
