"""Three ways to compute the labels' attention of the label pass, timed and checked against each other on one GPU.

Each label attends to the text keys it may see plus its own key, never another label's (`label_pass.py`). Compared:

    ours        `label_attention` as shipped: text scores `[batch, heads, labels, seq_len]` and a row-wise own-key
                score, softmax in fp32 (materialises the scores and the fp32 probabilities)
    sdpa_bool   `scaled_dot_product_attention` over [text keys; label keys] with a boolean mask whose label block is
                the identity (one fused kernel, but `labels x (seq_len + labels)` scores: quadratic in K)
    flex_lse    compiled `flex_attention` over the text keys only (padding as a BlockMask), returning the
                log-sum-exp, merged exactly with the own-key score: out = (e^lse o_text + e^s v_own) / (e^lse + e^s)

Forward + backward of one attention call, bf16, attention dropout off (flex attention has none). Reported: median
milliseconds over the timed repeats, peak memory above the inputs (torch.cuda.max_memory_allocated), and each
variant's largest output difference from `ours` computed in fp32. The shapes are a BERT-base layer (12 heads x 64)
at batch 16 x 256 text tokens with K from 64 to 8,192 labels.

    python -m recipes.benchmarks.benchmark_label_attention [--ks 64,512,2048,8192] [--output FILE]
    python -m recipes.benchmarks.benchmark_label_attention --device cpu --ks 8 --batch 2 --seq_len 16   # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from labeltok_peft.label_pass import label_attention

from .benchmark_common import environment_info


def ours(query, key, value, text_key, text_value, text_real, module):
    sees_text = text_real[:, None, None, :].expand(-1, 1, query.shape[2], -1)
    return label_attention(module, query, key, value, text_key, text_value, sees_text)[0]


def sdpa_bool(query, key, value, text_key, text_value, text_real, module):
    num_labels = query.shape[2]
    own = torch.eye(num_labels, dtype=torch.bool, device=query.device)
    mask = torch.cat(
        [text_real[:, None, None, :].expand(-1, 1, num_labels, -1), own.expand(query.shape[0], 1, -1, -1)], dim=-1
    )
    keys, values = torch.cat([text_key, key], dim=2), torch.cat([text_value, value], dim=2)
    output = nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=mask)
    return output.transpose(1, 2)


def make_flex_lse(compiled: bool):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    attend = torch.compile(flex_attention, dynamic=False) if compiled else flex_attention

    def flex_lse(query, key, value, text_key, text_value, text_real, module):
        batch, _, num_labels, head_dim = query.shape

        def sees_text(b, h, q_idx, kv_idx):
            return text_real[b, kv_idx]

        block_mask = create_block_mask(sees_text, batch, None, num_labels, text_key.shape[2], device=query.device.type)
        text_output, lse = attend(query, text_key, text_value, block_mask=block_mask, return_lse=True)
        own = (query.float() * key.float()).sum(-1) * head_dim**-0.5  # [batch, heads, labels]
        top = torch.maximum(lse.float(), own)
        text_weight, own_weight = torch.exp(lse.float() - top), torch.exp(own - top)
        output = (text_weight[..., None] * text_output.float() + own_weight[..., None] * value.float()) / (
            text_weight + own_weight
        )[..., None]
        return output.to(query.dtype).transpose(1, 2)

    return flex_lse


def make_inputs(args, num_labels: int, dtype: torch.dtype, device: torch.device, seed: int = 0, grad: bool = True):
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def tensor(length):
        values = torch.randn(args.batch, args.heads, length, args.head_dim, generator=generator)
        return values.to(device, dtype).requires_grad_(grad)

    text_real = torch.ones(args.batch, args.seq_len, dtype=torch.bool)
    for row in range(args.batch):  # right padding, up to half the text
        text_real[row, args.seq_len - (row * args.seq_len) // (2 * args.batch) :] = False
    text_real[:, 0] = True
    inputs = dict(
        query=tensor(num_labels), key=tensor(num_labels), value=tensor(num_labels),
        text_key=tensor(args.seq_len), text_value=tensor(args.seq_len),
    )  # fmt: skip
    return inputs, text_real.to(device)


def run_once(function, inputs, text_real, module):
    output = function(**inputs, text_real=text_real, module=module)
    output.float().square().mean().backward()
    return output


def measure(function, args, num_labels: int, device: torch.device, module) -> dict:
    inputs, text_real = make_inputs(
        args, num_labels, torch.bfloat16 if device.type == "cuda" else torch.float32, device
    )
    cuda = device.type == "cuda"
    try:
        for _ in range(args.warmup):
            run_once(function, inputs, text_real, module)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            run_once(function, inputs, text_real, module)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    except torch.OutOfMemoryError:
        return {"status": "out of memory"}
    except NotImplementedError as error:  # flex attention has no CPU backward
        return {"status": f"not supported: {error}"}
    except Exception as error:  # a kernel that fails on this GPU/torch is a result too, not the end of the run
        return {"status": f"error: {type(error).__name__}: {error}"}
    peak = torch.cuda.max_memory_allocated() - before if cuda else None
    return {"status": "ok", "ms": 1000 * statistics.median(times), "peak_mib": peak / 2**20 if cuda else None}


def max_difference(function, args, num_labels: int, device: torch.device, module) -> float:
    """Largest |output - ours| in fp32 on the same inputs (flex attention computes in fp32 here too)."""
    inputs, text_real = make_inputs(args, num_labels, torch.float32, device, seed=1, grad=False)
    with torch.no_grad():
        reference = ours(**inputs, text_real=text_real, module=module)
        return (function(**inputs, text_real=text_real, module=module) - reference).abs().max().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--ks", default="64,512,2048,8192")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", default=None, help="JSON file for the rows and the environment")
    args = parser.parse_args(argv)
    try:
        ks = [int(k) for k in args.ks.split(",")]
    except ValueError:
        parser.error(f"--ks takes comma-separated label counts, like 64,512; got {args.ks!r}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU; torch sees none here. Smoke-test with --device cpu.")
    module = nn.Module().train()  # `label_attention` reads module.training (dropout is 0 here)
    variants = {"ours": ours, "sdpa_bool": sdpa_bool, "flex_lse": make_flex_lse(compiled=device.type == "cuda")}
    rows = []
    for num_labels in ks:
        for name, function in variants.items():
            row = {"num_labels": num_labels, "variant": name, **measure(function, args, num_labels, device, module)}
            if row["status"] == "ok" or row["status"].startswith("not supported"):
                try:
                    row["max_abs_difference_fp32"] = max_difference(function, args, num_labels, device, module)
                except Exception as error:
                    row["status"] += f"; fp32 check failed: {type(error).__name__}: {error}"
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        "\n| K | variant | ms (fwd+bwd) | vs ours | peak MiB | max abs diff vs ours (fp32) |\n|---|---|---|---|---|---|"
    )
    for row in rows:
        base = next(r for r in rows if r["num_labels"] == row["num_labels"] and r["variant"] == "ours")
        if row["status"] != "ok":
            difference = row.get("max_abs_difference_fp32")
            difference = "" if difference is None else f"{difference:.1e}"
            print(f"| {row['num_labels']} | {row['variant']} | {row['status'][:40]} | | | {difference} |")
            continue
        ratio = row["ms"] / base["ms"] if base["status"] == "ok" else float("nan")
        peak = "" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
        print(
            f"| {row['num_labels']} | {row['variant']} | {row['ms']:.2f} | {ratio:.2f}x | {peak} | "
            f"{row['max_abs_difference_fp32']:.1e} |"
        )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"settings": vars(args), "rows": rows, **environment_info()}, indent=2))


if __name__ == "__main__":
    main()
