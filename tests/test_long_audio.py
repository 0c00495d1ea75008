"""Long audio, silence and empty files outside the server: VADs, splitting at pauses, stitching, subtitle
formats, and the ``speechlm transcribe`` verb (an 88-s file used to stop at the encoder; noise used to be
transcribed as a word; an empty file used to fail with a raw torch message)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from speechlm.inference.long_audio import (Piece, Segment, answer_long, energy_regions, has_speech, plan_pieces,
                                           silero_available, speech_regions, split_long, stitch, to_srt, to_vtt)

SR = 16000


def tone(seconds: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), np.float32)


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, int(seconds * SR)).astype(np.float32)


def test_energy_vad_finds_tones_not_noise_or_silence():
    x = np.concatenate([silence(0.5), tone(2.0), silence(1.0), tone(1.0), silence(0.5)])
    regions = energy_regions(x)
    assert len(regions) == 2
    assert abs(regions[0][0] / SR - 0.5) < 0.05 and abs(regions[1][1] / SR - 4.5) < 0.05
    assert energy_regions(noise(1.0)) == [] and energy_regions(silence(1.0)) == []
    assert energy_regions(tone(1.0)) == [(0, 16000 - 16000 % 480)]  # one held tone, no pause, is all voiced
    assert not has_speech(np.zeros(0, np.float32), "energy")


def test_pieces_are_cut_in_pauses_and_never_too_long():
    regions = [(0, 3 * SR), (4 * SR, 6 * SR), (6 * SR + 4000, 7 * SR), (8 * SR, 20 * SR)]
    pieces = plan_pieces(21 * SR, regions, max_seconds=5.0)
    assert all(p.end - p.start <= 5 * SR for p in pieces)
    assert all(a.end <= b.start for a, b in zip(pieces, pieces[1:]))  # no overlap
    for s, e in regions:  # every sample of speech is in some piece
        assert any(p.start <= s and p.end >= min(e, p.start + 5 * SR) for p in pieces) or e - s > 5 * SR
    covered = sum(min(p.end, 20 * SR) - max(p.start, 8 * SR) for p in pieces if p.end > 8 * SR)
    assert covered >= 12 * SR  # the 12-s region is split into parts, none lost
    assert split_long(tone(3.0), 5.0) == [Piece(0, 3 * SR)]  # fits: untouched, no VAD


def test_stitch_and_subtitles():
    text, segs = stitch([Piece(0, SR), Piece(2 * SR, 3 * SR), Piece(4 * SR, 5 * SR)], ["hello", "", " world "])
    assert text == "hello world" and segs == [Segment(0, 0.0, 1.0, "hello"), Segment(1, 4.0, 5.0, "world")]
    assert to_srt(segs) == "1\n00:00:00,000 --> 00:00:01,000\nhello\n\n2\n00:00:04,000 --> 00:00:05,000\nworld\n\n"
    assert to_vtt(segs).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nhello\n")


def test_answer_long_batches_every_piece_and_skips_silence():
    calls = []

    def fake(waves):
        calls.append(len(waves))
        return [f"p{len(w) // SR}" for w in waves]

    long = np.concatenate([tone(3.0), silence(1.0), tone(3.0)])
    out = answer_long([long, noise(1.0), tone(1.0)], fake, max_seconds=4.0, vad="energy", skip_silence=True)
    assert calls == [3]  # two pieces of the long clip and the short tone in one call; noise never reaches the model
    assert out[0][0].split() == ["p3", "p3"] and out[1] == ("", []) and out[2][0] == "p1"


@pytest.mark.skipif(not silero_available(), reason="silero-vad or onnxruntime not installed")
def test_silero_hears_speech_not_noise(tmp_path):
    assert speech_regions(noise(1.0), "silero") == [] and speech_regions(silence(1.0), "silero") == []
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed: no speech to detect")
    wav = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "hello there, this is a test"], check=True, capture_output=True)
    from speechlm.data.audio import load_audio

    speech = load_audio(wav)
    x = np.concatenate([silence(1.0), speech, silence(1.5), speech, silence(1.0)])
    regions = speech_regions(x, "silero")
    assert len(regions) >= 2 and regions[0][0] >= 0.8 * SR


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random model saved as a checkpoint (no training: only the file handling is under test)."""
    from speechlm.checkpoint import save_checkpoint
    from speechlm.config import load_recipe
    from speechlm.model.builders import build_speechlm

    run = tmp_path_factory.mktemp("ckpt") / "run"
    cfg = load_recipe("tiny", ["model.max_audio_seconds=4"])
    save_checkpoint(build_speechlm(cfg.model, seed=cfg.train.seed), cfg, run, step=0, state={})
    return run


def test_transcribe_cli_long_noise_and_empty_files(tiny_checkpoint, tmp_path, capsys):
    from speechlm.cli import main

    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate([tone(3.0), silence(1.0), tone(3.0), silence(1.0), tone(3.0)]), SR)
    quiet = tmp_path / "noise.wav"
    sf.write(quiet, noise(1.0), SR)
    capsys.readouterr()
    # 11 s against a 4-s maximum: split, not "audio longer than ... reached the encoder"
    assert main(["transcribe", "--checkpoint", str(tiny_checkpoint), "--vad", "energy", str(long), str(quiet)]) == 0
    lines = capsys.readouterr().out.strip("\n").split("\n")
    assert lines[0].startswith(str(long)) and lines[1] == f"{quiet}\t"  # noise: an empty transcript
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SR)
    assert main(["transcribe", "--checkpoint", str(tiny_checkpoint), str(empty)]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "no samples" in err and "Expected" not in err
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    assert main(["transcribe", "--checkpoint", str(tiny_checkpoint), str(zero)]) == 2
    assert str(zero) in capsys.readouterr().err


def test_trim_cuts_silence_off_short_clips_and_manifest_cuts(tmp_path):
    """model.trim_silence: a short clip becomes its speech +-0.1 s in split_long/answer_long (a clip without speech
    stays whole), and trim_to_speech narrows manifest cuts the same way for training."""
    from speechlm.data.manifest import Cut
    from speechlm.inference.long_audio import TRIM_PAD_SECONDS, trim_to_speech

    x = np.concatenate([silence(1.0), tone(2.0), silence(0.3), tone(0.5), silence(1.2)])  # speech 1.0 .. 3.8 s
    assert split_long(x, 30.0, "energy") == [Piece(0, len(x))]
    (p,) = split_long(x, 30.0, "energy", trim=True)
    assert abs(p.start / SR - (1.0 - TRIM_PAD_SECONDS)) < 0.05 and abs(p.end / SR - (3.8 + TRIM_PAD_SECONDS)) < 0.05
    assert split_long(silence(2.0), 30.0, "energy", trim=True) == [Piece(0, 2 * SR)]
    seen = []
    answer_long([x], lambda ws: seen.extend(len(w) for w in ws) or ["a"] * len(ws), 30.0, vad="energy", trim=True)
    assert seen == [p.end - p.start]
    path = tmp_path / "x.wav"
    sf.write(path, x, SR)
    (c,) = trim_to_speech([Cut(id="x", audio=str(path), duration=len(x) / SR, text="t")], vad="energy")
    assert abs(c.start - (1.0 - TRIM_PAD_SECONDS)) < 0.05 and abs(c.start + c.duration - (3.8 + TRIM_PAD_SECONDS)) < 0.05
    assert c.text == "t" and c.id == "x"


def test_silero_leaves_torch_threads_alone():
    """silero_vad's module sets torch's thread count to 1 when imported; loading it through us must not (the demo
    trims its training clips with it, then trains)."""
    import torch

    if not silero_available():
        pytest.skip("silero-vad with onnxruntime is not installed")
    before = torch.get_num_threads()
    speech_regions(silence(0.5), "silero")
    assert torch.get_num_threads() == before
