"""Train-step time of isolated label tokens: the label pass against the spliced 4D-mask path and PEFT LoRA SEQ_CLS.

A MiniLM-shaped BERT (6 layers, hidden 384, random weights), LoRA r=16 on query/value, fp32, one CPU thread. A step
is forward + backward + AdamW. The three methods run interleaved, step by step, and each reports the median of its
steps relative to PEFT LoRA sequence classification on the same batch. Nothing is downloaded.

    python recipes/benchmarks/benchmark_label_pass.py [--steps 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import BertConfig, BertForSequenceClassification, BertModel

from labeltok_peft import LabelTokConfig, get_labeltok_model

MINILM = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
LORA = {"r": 16, "lora_alpha": 32, "target_modules": ["query", "value"]}
SHAPES = [(8, 46, 26), (8, 46, 61), (2, 64, 512)]  # (batch, tokens, labels)


def peer(num_labels: int) -> torch.nn.Module:
    backbone = BertForSequenceClassification(BertConfig(num_labels=num_labels, **MINILM))
    return get_peft_model(backbone, LoraConfig(task_type=TaskType.SEQ_CLS, **LORA))


def label_tokens(num_labels: int, splice: bool) -> torch.nn.Module:
    config = LabelTokConfig(
        labels=[f"label{i}" for i in range(num_labels)],
        label_init="random",
        label_attention="isolated",
        label_positions="shared",
        lora=LORA,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=7, help="timed steps per method (after 2 warm-up steps)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("batch x tokens, K | splice + 4D mask | label pass | token ratio (T+K)/T   (step time / PEFT LoRA SEQ_CLS)")
    for batch_size, tokens, num_labels in SHAPES:
        torch.manual_seed(0)
        batch = {
            "input_ids": torch.randint(1000, 30000, (batch_size, tokens)),
            "attention_mask": torch.ones(batch_size, tokens, dtype=torch.long),
            "labels": torch.randint(0, num_labels, (batch_size,)),
        }
        steps = {
            "peer": make_step(peer(num_labels), batch),
            "splice": make_step(label_tokens(num_labels, splice=True), batch),
            "label_pass": make_step(label_tokens(num_labels, splice=False), batch),
        }
        times: dict[str, list[float]] = {name: [] for name in steps}
        for index in range(args.steps + 2):
            for name, step in steps.items():
                elapsed = step()
                if index >= 2:
                    times[name].append(elapsed)
        median = {name: statistics.median(values) for name, values in times.items()}
        print(
            f"{batch_size} x {tokens}, K={num_labels} | {median['splice'] / median['peer']:.2f}x | "
            f"{median['label_pass'] / median['peer']:.2f}x | {(tokens + num_labels) / tokens:.2f}   "
            f"(peer step {1000 * median['peer']:.0f} ms)"
        )


if __name__ == "__main__":
    main()
