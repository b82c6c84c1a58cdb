#!/usr/bin/env bash
# Every GPU check and benchmark in one call, for a machine with one CUDA GPU (CI has none). Run from the repository
# root: `bash recipes/benchmarks/gpu_checks.sh [OUTPUT_DIR]` (default outputs/gpu). Missing packages can come as
# wheels in .whl/ (installed into /tmp/site first). Each step has its own time cap, taken from a total budget
# (GPU_CHECKS_BUDGET_S, default 560 s) so that a slow step cannot starve the ones after it of all their time; a
# step that fails or runs out of time leaves its log and the next step runs.
#
#   1. pytest -m cuda: the label pass equals the spliced path on CUDA kernels, bf16, 4-bit/8-bit training and
#      adapter round trips (tests/test_cuda.py)
#   2. benchmark_scaling --cuda: train step vs PEFT LoRA SEQ_CLS, BERT-base and 1.1B-Llama shapes, bf16, with the
#      label pass and the spliced sequence side by side
#   3. benchmark_memory --cuda: peak memory and step time vs PEFT QLoRA on the Llama-3.2-1B shape, nf4 (about 150 s)
#   4. the unit tier with the GPU visible (training through accelerate lands on CUDA)
#   5. benchmark_label_attention: three ways to compute the labels' attention, timed and checked (measured once,
#      docs/benchmarks/runs/gpu16/; last, so it gets what time is left)
# The sixteenth session's first call (five steps, the machine's start not counted) took 432 s.
set -u
OUT_DIR=${1:-${OUT:-outputs/gpu}}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
deadline=$((SECONDS + ${GPU_CHECKS_BUDGET_S:-560}))

step() {  # step NAME CAP_S COMMAND...: runs COMMAND with at most CAP_S seconds (less if the budget is nearly spent)
    local name=$1 cap=$2
    shift 2
    local left=$((deadline - SECONDS - 5))
    ((left < cap)) && cap=$left
    if ((cap < 20)); then
        echo "== $name: skipped, the time budget is spent" | tee -a "$OUT_DIR/summary.txt"
        return
    fi
    local started=$SECONDS
    timeout "$cap" "$@" >"$OUT_DIR/$name.log" 2>&1
    local status=$?
    echo "== $name: exit $status after $((SECONDS - started)) s (cap $cap s)" | tee -a "$OUT_DIR/summary.txt"
    tail -n 25 "$OUT_DIR/$name.log"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $PY -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
    $PY -c "import bitsandbytes, datasets; print('bitsandbytes', bitsandbytes.__version__, 'datasets', \
datasets.__version__)"
} 2>&1 | tee "$OUT_DIR/summary.txt"

step test_cuda 60 $PY -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider -rfE
step scaling 150 $PY -m recipes.benchmarks.benchmark_scaling --cuda --ks 32,512,2048 --timed_steps 5 \
    --modes full,isolated,isolated_splice,late1 --output_dir "$OUT_DIR"
step memory 200 $PY -m recipes.benchmarks.benchmark_memory --cuda --shapes llama-1b --cache_dir /tmp/labeltok_cache \
    --output "$OUT_DIR/memory_cuda.json"
step unit_on_gpu 100 $PY -m pytest -q -m "not integration and not multiprocess and not cuda" -p no:cacheprovider \
    -n 8 -rfE
step label_attention 110 $PY -m recipes.benchmarks.benchmark_label_attention
