"""Train-step time of isolated label tokens (exact label pass, late injection, sampled labels) against PEFT LoRA SEQ_CLS.

A MiniLM-shaped BERT (6 layers, hidden 384, random weights), LoRA r=16 on query/value, fp32, one CPU thread. A step
is forward + backward + AdamW. All methods of a row run interleaved, step by step, and each reports the median of its
steps relative to PEFT LoRA sequence classification on the same batch. Nothing is downloaded. Printed beside them:
the padded token ratio (T+K)/T (what the spliced sequence costs), the exact floor 1 + K/T (every label needs its own
projections and MLP in every layer) and the late-injection estimate 1 + K n / (T L).

    python -m recipes.benchmarks.benchmark_label_pass [--steps 7] [--splice] [--output_dir outputs/label_pass]

Rows: K = 26, 61, 128 and 512 labels on the WordNet lexnames shape (batch 8 x 46 tokens), and K = 512 again on
batch 2 x 64 (the shape of the prototype in DESIGN.md). With `--output_dir` the rows, the settings and the environment
(versions, threads, load average, git commit) go to `<output_dir>/label_pass.json`, and
recipes/benchmarks/make_label_pass_md.py renders docs/benchmarks/label_pass.md and its plot from them.

With `--many_labels K` it instead trains a model with K labels (default 10,000; random label names) with sampled
labels and late injection for a few steps (interleaved with the peer and its K-way head), evaluates every label in
chunks, and reports step time, evaluation time and the process's peak resident memory (resource.getrusage; the peer
is built too, so it is an upper bound):

    python -m recipes.benchmarks.benchmark_label_pass --many_labels 10000 [--sample_size 32] [--label_layers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import BertConfig, BertForSequenceClassification, BertModel

from labeltok_peft import LabelTokConfig, get_labeltok_model
from recipes.benchmarks.benchmark_common import environment_info
from recipes.benchmarks.make_label_pass_md import render

MINILM = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
LORA = {"r": 16, "lora_alpha": 32, "target_modules": ["query", "value"]}
LEXNAMES = (8, 46)  # batch x tokens of the WordNet lexnames runs


def peer(num_labels: int) -> torch.nn.Module:
    backbone = BertForSequenceClassification(BertConfig(num_labels=num_labels, **MINILM))
    return get_peft_model(backbone, LoraConfig(task_type=TaskType.SEQ_CLS, **LORA))


def label_tokens(num_labels: int, splice: bool = False, **options) -> torch.nn.Module:
    config = LabelTokConfig(
        labels=[f"label{i}" for i in range(num_labels)],
        label_init="random",
        label_attention="isolated",
        label_positions="shared",
        lora=LORA,
        **options,
    )
    model = get_labeltok_model(BertModel(BertConfig(**MINILM), add_pooling_layer=False), config)
    model._splice_isolated_labels = splice  # the spliced sequence with the isolating 4D mask (before the label pass)
    return model


def make_step(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step() -> float:
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    return step


def make_batch(batch_size: int, tokens: int, num_labels: int) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.randint(1000, 30000, (batch_size, tokens)),
        "attention_mask": torch.ones(batch_size, tokens, dtype=torch.long),
        "labels": torch.randint(0, num_labels, (batch_size,)),
    }


SAMPLE_SIZE = 32  # negatives a sampled training step draws (it scores them plus the batch's positives)
# Label-token variants, by the name the table and the JSON use. "splice" is timed with --splice only. Every variant
# names its label_layers: the config's default ('auto') puts labels in the last layer only on this encoder.
VARIANTS: dict[str, dict] = {
    "splice": {"splice": True, "label_layers": None},
    "exact": {"label_layers": None},
    "late n=1": {"label_layers": 1},
    "late n=2": {"label_layers": 2},
    "late n=3": {"label_layers": 3},
    f"sampled k={SAMPLE_SIZE}": {"label_sample_size": SAMPLE_SIZE, "label_layers": None},
    f"sampled k={SAMPLE_SIZE}, late n=1": {"label_sample_size": SAMPLE_SIZE, "label_layers": 1},
}
SHAPES = [(*LEXNAMES, 26), (*LEXNAMES, 61), (*LEXNAMES, 128), (*LEXNAMES, 512), (2, 64, 512)]


def rows(splice: bool, splice_max_labels: int | None = None) -> list[tuple[int, int, int, dict[str, dict]]]:
    """(batch, tokens, K, {variant: label-token options}) for each measured row.

    Sampled variants are left out where k >= K (every label is scored: they are the exact pass), the spliced path
    where `splice` is off or K is above `splice_max_labels`.
    """
    measured = []
    for batch_size, tokens, num_labels in SHAPES:
        methods = {}
        for name, options in VARIANTS.items():
            if name == "splice" and (not splice or (splice_max_labels and num_labels > splice_max_labels)):
                continue
            if "label_sample_size" not in options or options["label_sample_size"] < num_labels:
                methods[name] = options
        measured.append((batch_size, tokens, num_labels, methods))
    return measured


def estimate(options: dict, batch_size: int, tokens: int, num_labels: int) -> float:
    """The late-injection cost estimate 1 + K n / (T L), with K the labels a step scores and n their layers.

    A sampled step scores the batch's distinct classes (`make_batch` draws them uniformly: K (1 - (1 - 1/K)^B) on
    average) plus `label_sample_size` negatives.
    """
    layers = MINILM["num_hidden_layers"]
    n = options.get("label_layers") or layers
    scored = num_labels
    if "label_sample_size" in options:
        positives = num_labels * (1 - (1 - 1 / num_labels) ** batch_size)
        scored = min(positives + options["label_sample_size"], num_labels)
    return 1 + scored * n / (tokens * layers)


def measure_row(batch_size: int, tokens: int, num_labels: int, methods: dict[str, dict], steps: int) -> dict:
    """Times the peer and every variant on one batch, interleaved step by step; medians after 2 warm-up steps."""
    torch.manual_seed(0)
    batch = make_batch(batch_size, tokens, num_labels)
    runs = {"peer": make_step(peer(num_labels), batch)}
    runs |= {name: make_step(label_tokens(num_labels, **options), batch) for name, options in methods.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(steps + 2):
        for name, step in runs.items():
            elapsed = step()
            if index >= 2:
                times[name].append(elapsed)
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "batch_size": batch_size,
        "tokens": tokens,
        "num_labels": num_labels,
        "peer_ms": 1000 * median["peer"],
        "token_ratio": (tokens + num_labels) / tokens,
        "exact_floor": 1 + num_labels / tokens,
        "late_estimate_n1": estimate({"label_layers": 1}, batch_size, tokens, num_labels),
        "estimates": {name: estimate(options, batch_size, tokens, num_labels) for name, options in methods.items()},
        "ratios": {name: median[name] / median["peer"] for name in methods},
        "median_ms": {name: 1000 * value for name, value in median.items()},
        "steps_ms": {name: [1000 * value for value in values] for name, values in times.items()},
    }


def compare(steps: int, splice: bool, splice_max_labels: int | None = None) -> list[dict]:
    """Measures and prints every row; returns them (see `measure_row`)."""
    measured = []
    for batch_size, tokens, num_labels, methods in rows(splice, splice_max_labels):
        start = time.perf_counter()
        row = measure_row(batch_size, tokens, num_labels, methods, steps)
        row["wall_s"] = time.perf_counter() - start
        measured.append(row)
        print(
            f"\n{batch_size} x {tokens}, K={num_labels}: peer step {row['peer_ms']:.0f} ms, token ratio "
            f"(T+K)/T {row['token_ratio']:.2f}, exact floor 1+K/T {row['exact_floor']:.2f} "
            f"({row['wall_s']:.0f} s)",
            flush=True,
        )
        for name in methods:
            print(f"  {name:<24} {row['ratios'][name]:.2f}x   (estimate 1+Kn/(TL) = {row['estimates'][name]:.2f})")
    return measured


def write_results(output_dir: Path, measured: list[dict], settings: dict, environment: dict) -> Path:
    """Writes `<output_dir>/label_pass.json`: settings, environment and the measured rows."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "label_pass.json"
    payload = {"settings": settings, "environment": environment, "rows": measured}
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def many_labels(num_labels: int, sample_size: int, label_layers: int, steps: int, chunk: int) -> None:
    batch_size, tokens = LEXNAMES
    start = time.perf_counter()
    model = label_tokens(num_labels, label_sample_size=sample_size, label_layers=label_layers, label_chunk_size=chunk)
    print(f"K={num_labels}: built in {time.perf_counter() - start:.1f} s")
    torch.manual_seed(0)
    batch = make_batch(batch_size, tokens, num_labels)
    runs = {"label tokens": make_step(model, batch), "peer": make_step(peer(num_labels), batch)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(steps + 1):
        for name, step in runs.items():
            elapsed = step()
            if index:
                times[name].append(elapsed)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"train step ({batch_size} x {tokens}, k={sample_size} sampled, label_layers={label_layers}): "
        f"median {1000 * median['label tokens']:.0f} ms over {steps} steps, "
        f"{median['label tokens'] / median['peer']:.2f}x PEFT LoRA SEQ_CLS with a {num_labels}-way head "
        f"({1000 * median['peer']:.0f} ms, interleaved)"
    )
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    elapsed = time.perf_counter() - start
    print(
        f"evaluation of all {logits.shape[1]} labels for {batch_size} texts in chunks of {chunk}: {elapsed:.1f} s "
        f"({1000 * elapsed / batch_size:.0f} ms per text)"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"peak resident memory of the process: {peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=7, help="timed steps per method (after 2 warm-up steps)")
    parser.add_argument("--splice", action="store_true", help="also time the spliced 4D-mask path")
    parser.add_argument(
        "--splice_max_labels", type=int, default=None, help="--splice: time the spliced path only up to this K"
    )
    parser.add_argument(
        "--output_dir",
        type=Path,
        default=None,
        help="write label_pass.json there and render docs/benchmarks/label_pass.md and label_pass.png",
    )
    parser.add_argument(
        "--doc",
        type=Path,
        default=None,
        help="--output_dir: the page to render (default docs/benchmarks/label_pass.md)",
    )
    parser.add_argument(
        "--many_labels", type=int, default=None, help="train and evaluate one model with this many labels"
    )
    parser.add_argument("--sample_size", type=int, default=32, help="--many_labels: labels scored per training step")
    parser.add_argument("--label_layers", type=int, default=1, help="--many_labels: late injection depth")
    parser.add_argument("--chunk", type=int, default=1000, help="--many_labels: labels per evaluation call")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.many_labels:
        many_labels(args.many_labels, args.sample_size, args.label_layers, args.steps, args.chunk)
        return
    load_before = os.getloadavg()
    start = time.perf_counter()
    measured = compare(args.steps, args.splice, args.splice_max_labels)
    if args.output_dir is None:
        return
    settings = {
        "steps": args.steps,
        "warmup_steps": 2,
        "splice": args.splice,
        "splice_max_labels": args.splice_max_labels,
        "backbone": "BERT (" + ", ".join(f"{key}={value}" for key, value in MINILM.items()) + "; random weights)",
        "lora": LORA,
        "sample_size": SAMPLE_SIZE,
        "sampled_set": "positives plus k negatives",
        "dtype": "float32",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_s": time.perf_counter() - start,
    }
    path = write_results(args.output_dir, measured, settings, environment_info(threads=torch.get_num_threads()))
    print(f"\nwrote {path}")
    for written in render(path, doc=args.doc):
        print(f"wrote {written}")


if __name__ == "__main__":
    main()
