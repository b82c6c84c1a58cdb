"""Train-step time of isolated label tokens (exact label pass, late injection, sampled labels) against PEFT LoRA SEQ_CLS.

A MiniLM-shaped BERT (6 layers, hidden 384, random weights), LoRA r=16 on query/value, fp32, one CPU thread. A step
is forward + backward + AdamW. All methods of a row run interleaved, step by step, and each reports the median of its
steps relative to PEFT LoRA sequence classification on the same batch. Nothing is downloaded. Printed beside them:
the padded token ratio (T+K)/T (what the spliced sequence costs), the exact floor 1 + K/T (every label needs its own
projections and MLP in every layer) and the late-injection estimate 1 + K n / (T L).

    python -m recipes.benchmarks.benchmark_label_pass [--steps 7] [--splice]

With `--many_labels K` it instead trains a model with K labels (default 10,000; random label names) with sampled
labels and late injection for a few steps (interleaved with the peer and its K-way head), evaluates every label in
chunks, and reports step time, evaluation time and the process's peak resident memory (resource.getrusage; the peer
is built too, so it is an upper bound):

    python -m recipes.benchmarks.benchmark_label_pass --many_labels 10000 [--sample_size 32] [--label_layers 1]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import BertConfig, BertForSequenceClassification, BertModel

from labeltok_peft import LabelTokConfig, get_labeltok_model

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


def rows(splice: bool) -> list[tuple[int, int, int, dict[str, dict]]]:
    """(batch, tokens, K, {method: label-token options}) for each measured row."""
    late = {f"late n={n}": {"label_layers": n} for n in (1, 2, 3)}
    methods = {"exact": {}} | late
    if splice:
        methods = {"splice": {"splice": True}} | methods
    sampled = {
        "exact": {},
        "sampled k=32": {"label_sample_size": 32},
        "late n=1": {"label_layers": 1},
        "sampled k=32, late n=1": {"label_sample_size": 32, "label_layers": 1},
    }
    return [(*LEXNAMES, 26, methods), (*LEXNAMES, 61, methods), (*LEXNAMES, 512, sampled)]


def compare(steps: int, splice: bool) -> None:
    layers = MINILM["num_hidden_layers"]
    for batch_size, tokens, num_labels, methods in rows(splice):
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
        print(
            f"\n{batch_size} x {tokens}, K={num_labels}: peer step {1000 * median['peer']:.0f} ms, token ratio "
            f"(T+K)/T {(tokens + num_labels) / tokens:.2f}, exact floor 1+K/T {1 + num_labels / tokens:.2f}"
        )
        for name, options in methods.items():
            n = options.get("label_layers", layers)
            scored = min(options.get("label_sample_size", num_labels), num_labels)
            estimate = 1 + scored * n / (tokens * layers)
            print(f"  {name:<24} {median[name] / median['peer']:.2f}x   (estimate 1+Kn/(TL) = {estimate:.2f})")


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
        "--many_labels", type=int, default=None, help="train and evaluate one model with this many labels"
    )
    parser.add_argument("--sample_size", type=int, default=32, help="--many_labels: labels scored per training step")
    parser.add_argument("--label_layers", type=int, default=1, help="--many_labels: late injection depth")
    parser.add_argument("--chunk", type=int, default=1000, help="--many_labels: labels per evaluation call")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.many_labels:
        many_labels(args.many_labels, args.sample_size, args.label_layers, args.steps, args.chunk)
    else:
        compare(args.steps, args.splice)


if __name__ == "__main__":
    main()
