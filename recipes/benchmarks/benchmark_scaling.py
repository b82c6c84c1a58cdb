"""How the train step of label tokens scales with the number of labels K, against PEFT LoRA SEQ_CLS.

For each backbone shape and K, both models are built from the same config with random weights: the LoRA peer
(`AutoModelForSequenceClassification` + `LoraConfig(task_type="SEQ_CLS")`) and the label-token adapter with LoRA
of the same rank on the same modules (PEFT's default targets for the architecture). One train step is forward,
backward and AdamW. After warm-up, the two models' steps alternate, so load drift on a shared machine hits both
alike; the ratio of the medians is reported. Attention modes:

    full       labels attend like text tokens, each with its own position (K + length must fit the positions)
    isolated   each label sees the text and itself only, all labels share one position (any K): the exact label
               pass (the text runs once, labels attend to its kept keys/values)
    isolated_splice   isolated, computed the older way: text and labels in one spliced sequence with the isolating
               4D mask (same logits; on a GPU it may be the cheaper of the two at small K, measured here)
    late1      isolated, with the labels in the last layer only (label_layers=1, late injection)
    late1_sampled32   late1, and each training step scores the batch's positives plus 32 sampled negatives

CPU (default): MiniLM-shaped BERT (6 x 384) and a small Llama shape (8 x 512), fp32.

    python -m recipes.benchmarks.benchmark_scaling
    python -m recipes.benchmarks.benchmark_scaling --timed_steps 3 --warmup_steps 1 --batch_size 2 --length 32   # smoke

CUDA (--cuda): BERT-base (12 x 768, batch 64 x 256) and the TinyLlama-1.1B shape (22 x 2048, batch 16 x 512), bf16,
with peak memory per model (torch.cuda.max_memory_allocated above what was allocated before the model was built).

    python -m recipes.benchmarks.benchmark_scaling --cuda

Writes <output_dir>/scaling_cpu.json or scaling_cuda.json; `python -m recipes.benchmarks.make_benchmarks_md` renders it.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from labeltok_peft import LabelTokConfig, get_labeltok_model

from .benchmark_common import command_line, environment_info


@dataclass(frozen=True)
class Shape:
    """A backbone shape and the batch it is timed with."""

    model_type: str
    config: dict
    batch_size: int
    length: int


_BERT_BASE_VOCAB = dict(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2)
_LLAMA_VOCAB = dict(vocab_size=32000, max_position_embeddings=4096, pad_token_id=0)

SHAPES = {
    # all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384).
    "minilm": Shape(
        "bert",
        dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, **_BERT_BASE_VOCAB),
        4,
        64,
    ),
    # A small Llama (8 layers, hidden 512, grouped-query attention), about 60M parameters.
    "llama_small": Shape(
        "llama",
        dict(
            hidden_size=512,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=4,
            intermediate_size=1408,
            **_LLAMA_VOCAB,
        ),
        4,
        64,
    ),
    # BERT-base and the TinyLlama-1.1B shape, as in DESIGN.md's H200 measurements.
    "bert_base": Shape(
        "bert",
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, **_BERT_BASE_VOCAB),
        64,
        256,
    ),
    "llama_1b": Shape(
        "llama",
        dict(
            hidden_size=2048,
            num_hidden_layers=22,
            num_attention_heads=32,
            num_key_value_heads=4,
            intermediate_size=5632,
            **_LLAMA_VOCAB,
        ),
        16,
        512,
    ),
}
MODES = {
    "full": ("full", "sequential", {}),
    "isolated": ("isolated", "shared", {"label_layers": None}),  # every layer ('auto' means 1 on encoders)
    "isolated_splice": ("isolated", "shared", {"label_layers": None}),
    "late1": ("isolated", "shared", {"label_layers": 1}),
    "late1_sampled32": ("isolated", "shared", {"label_layers": 1, "label_sample_size": 32}),
}
SPLICED_MODES = frozenset({"isolated_splice"})  # timed through the spliced sequence instead of the label pass
SKIPPED_STATUS = {"impossible": "impossible", "oom": "out of memory"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__spec__.name}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cuda", action="store_true", help="GPU mode: BERT-base and 1.1B-Llama shapes in bf16")
    parser.add_argument("--backbones", default=None, help=f"comma-separated, from {', '.join(SHAPES)}")
    parser.add_argument("--ks", default=None, help="label counts (default: 8,32,128,512,1024; --cuda: up to 2048)")
    parser.add_argument("--full_max_k", type=int, default=1024, help="largest K timed with full attention")
    parser.add_argument("--modes", default="full,isolated,late1", help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--batch_size", type=int, default=None, help="override every shape's batch size")
    parser.add_argument("--length", type=int, default=None, help="override every shape's text length (tokens)")
    parser.add_argument("--warmup_steps", type=int, default=2)
    parser.add_argument("--timed_steps", type=int, default=10)
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=None, help="label_chunk_size for isolated attention")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--output_dir", default="outputs/benchmark")
    args = parser.parse_args(argv)
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda needs a CUDA GPU; torch.cuda.is_available() is False here.")
    args.ks = args.ks or ("8,32,128,512,1024,2048" if args.cuda else "8,32,128,512,1024")
    args.backbones = args.backbones or ("bert_base,llama_1b" if args.cuda else "minilm,llama_small")
    unknown = [name for name in args.backbones.split(",") if name not in SHAPES]
    if unknown:
        parser.error(f"unknown backbone(s) {unknown}; choose from {', '.join(SHAPES)}")
    return args


def backbone_config(shape: Shape, num_labels: int):
    config = AutoConfig.for_model(shape.model_type, **shape.config, num_labels=num_labels)
    if shape.model_type == "bert":
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.1
    return config


def lora_kwargs(args) -> dict:
    return {"r": args.lora_r, "lora_alpha": 2 * args.lora_r, "lora_dropout": 0.1}


def build_peer(shape: Shape, num_labels: int, args, device: torch.device, dtype: torch.dtype):
    with torch.device(device):
        model = AutoModelForSequenceClassification.from_config(backbone_config(shape, num_labels), dtype=dtype)
    return get_peft_model(model, LoraConfig(task_type="SEQ_CLS", **lora_kwargs(args))).train()


def build_labeltok(shape: Shape, num_labels: int, mode: str, args, device: torch.device, dtype: torch.dtype):
    attention, positions, options = MODES[mode]
    with torch.device(device):
        backbone = AutoModel.from_config(backbone_config(shape, num_labels), dtype=dtype)
    config = LabelTokConfig(
        labels=[f"label{i}" for i in range(num_labels)],
        label_init="random",
        label_attention=attention,
        label_positions=positions,
        label_chunk_size=args.chunk if attention == "isolated" else None,
        lora=lora_kwargs(args),
        **options,
    )
    model = get_labeltok_model(backbone, config).train()
    model._splice_isolated_labels = mode in SPLICED_MODES
    return model


def make_batch(shape: Shape, num_labels: int, batch_size: int, length: int, device: torch.device) -> dict:
    """A padding-free batch: `input_ids`/`attention_mask` `[batch, length]`, `labels` `[batch]`."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, shape.config["vocab_size"], (batch_size, length), generator=generator)
    labels = torch.randint(0, num_labels, (batch_size,), generator=generator)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "labels": labels.to(device),
    }


class Stepper:
    """One model, its AdamW and its timed train steps."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        self.seconds: list[float] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self, batch: dict, timed: bool) -> None:
        self._sync()
        start = time.perf_counter()
        loss = self.model(**batch).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._sync()
        if timed:
            self.seconds.append(time.perf_counter() - start)


def build_and_warm(build, batch: dict, args, device: torch.device) -> tuple[Stepper, int | None]:
    """Builds a model, runs the warm-up steps; returns the stepper and (CUDA) the model's peak memory in bytes."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    stepper = Stepper(build(), device)
    for _ in range(max(1, args.warmup_steps)):
        stepper.step(batch, timed=False)
    peak = torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else None
    return stepper, peak


def measure(name: str, shape: Shape, num_labels: int, modes: list[str], args, device, dtype) -> list[dict]:
    """Times the peer and each attention mode at one K; returns one row per mode."""
    batch_size, length = args.batch_size or shape.batch_size, args.length or shape.length
    batch = make_batch(shape, num_labels, batch_size, length, device)
    base = {"backbone": name, "num_labels": num_labels, "batch_size": batch_size, "length": length}
    base["token_ratio"] = (length + num_labels) / length
    peer, peer_peak = build_and_warm(lambda: build_peer(shape, num_labels, args, device, dtype), batch, args, device)
    rows = []
    for mode in modes:
        row = dict(base, mode=mode, peer_peak_memory_bytes=peer_peak)
        if mode == "full" and num_labels > args.full_max_k:
            row.update(ratio=None, status=f"not run (K > --full_max_k {args.full_max_k})")
            rows.append(row)
            continue
        labeltok = None
        try:
            labeltok, peak = build_and_warm(
                lambda mode=mode: build_labeltok(shape, num_labels, mode, args, device, dtype), batch, args, device
            )
            peer.seconds.clear()
            for _ in range(args.timed_steps):  # alternate, so drift in machine load hits both alike
                peer.step(batch, timed=True)
                labeltok.step(batch, timed=True)
            peer_median, labeltok_median = statistics.median(peer.seconds), statistics.median(labeltok.seconds)
            row.update(
                peer_step_seconds=peer_median,
                labeltok_step_seconds=labeltok_median,
                ratio=labeltok_median / peer_median,
                labeltok_peak_memory_bytes=peak,
                status="ok",
            )
        except ValueError as error:
            if "position" not in str(error):
                raise
            # More labels than positions: the adapter refuses it with a clear error before any compute.
            row.update(ratio=None, status=SKIPPED_STATUS["impossible"], error=str(error))
        except torch.cuda.OutOfMemoryError as error:
            row.update(ratio=None, status=SKIPPED_STATUS["oom"], error=str(error)[:200])
        finally:
            del labeltok
            gc.collect()
        print(json.dumps({k: v for k, v in row.items() if k != "error"}), flush=True)
        rows.append(row)
    del peer
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.cuda else "cpu")
    dtype = torch.bfloat16 if args.cuda else torch.float32
    modes = [mode.strip() for mode in args.modes.split(",")]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise SystemExit(f"Unknown mode(s) {unknown}; choose from {', '.join(MODES)}.")
    ks = [int(k) for k in args.ks.split(",")]
    rows = []
    for name in args.backbones.split(","):
        for num_labels in ks:
            rows += measure(name, SHAPES[name], num_labels, modes, args, device, dtype)
    environment = environment_info()
    kind = "cuda" if args.cuda else "cpu"
    result = {
        "device_kind": kind,
        "device": environment["gpu"] if args.cuda else f"CPU, {torch.get_num_threads()} thread(s)",
        "command": command_line(),
        "settings": dict(
            vars(args),
            dtype=str(dtype).removeprefix("torch."),
            batch_size=args.batch_size or "per shape",
            length=args.length or "per shape",
        ),
        "environment": environment,
        "rows": rows,
    }
    output = Path(args.output_dir) / f"scaling_{kind}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
