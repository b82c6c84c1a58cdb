"""Write docs/benchmarks/few_shot.md and its plot (macro-F1 against shots per class) from the few-shot runs.

    python -m recipes.benchmarks.benchmark --dataset bbc_news,wordnet_lexnames --shots_per_class 8,16 --epochs 20 \\
        --seeds 0 --threads 1 --output_dir outputs/few_shot --methods setfit,linear_probe,...
    python -m recipes.benchmarks.make_few_shot_md --results_dir outputs/few_shot

Reads <results_dir>/<dataset>/shots<N>/results.json (one per dataset and N, written by recipes.benchmarks.benchmark
with --shots_per_class); writes --output (docs/benchmarks/few_shot.md) and few_shot.png beside it. A hand-written
--findings file (default docs/benchmarks/few_shot_findings.md) is put after the title, so re-rendering keeps it.
Imports neither torch nor the runner.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .benchmark_common import ROOT, bytes_cell, median_of, metric_cell, ratio_cell
from .make_benchmarks_md import DATASET_NOTES, _environment_lines, current_command

DOCS = ROOT / "docs" / "benchmarks"
# Table and legend order: the few-shot anchor, the other peers, then the adapters (others after, by name).
METHOD_ORDER = ("setfit", "peft_lora_seq_cls", "linear_probe", "full_ft_seq_cls", "full_ft_labeltok", "labeltok")

PROTOCOL = (
    "Each method trains on N rows per class of the train split (per label on multi-label tasks, where a row counts "
    "once for each of its labels) and is evaluated on the whole, fixed test split. Rows are sampled per class in a "
    "fixed hash order of the sample seed, the class name and the row index; the N-row sample is contained in the "
    "larger ones of the same seed. Multi-label: labels from rarest to most frequent each take rows until N rows in "
    "the sample carry them, so every label has at least N (rules: `recipes/benchmarks/few_shot.py`). The sample "
    "seed is the training seed unless `--sample_seed` fixed it, so k seeds are k samples. Quality is the median "
    "over seeds with (min–max). Train time is a ratio to the LoRA peer of the same seed, shots and run (wall time "
    "of the whole fit: SetFit's body and head, the linear probe's embedding and fit). Saved size is what "
    "`save_pretrained` writes (model cards left out); SetFit saves its whole fine-tuned body."
)


def _method_key(spec: str) -> tuple[int, str]:
    name = spec.split(":", 1)[0]
    return (METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER), spec)


def load_results(results_dir: Path) -> dict[str, dict[int, dict]]:
    """`{dataset: {shots: result}}` from every `<dataset>/shots<N>/results.json` under `results_dir`."""
    by_dataset: dict[str, dict[int, dict]] = {}
    for path in sorted(results_dir.glob("*/shots*/results.json")):
        result = json.loads(path.read_text())
        shots = result.get("shots_per_class") or result["data"].get("shots_per_class")
        if shots:
            by_dataset.setdefault(result["dataset"], {})[int(shots)] = result
    order = {name: index for index, name in enumerate(DATASET_NOTES)}
    return {
        name: dict(sorted(by_dataset[name].items()))
        for name in sorted(by_dataset, key=lambda name: (order.get(name, len(order)), name))
    }


def few_shot_table(per_shots: dict[int, dict]) -> str:
    """Markdown: a row per method; macro-F1 and train time vs the LoRA peer per shots; parameters and saved size."""
    shots = list(per_shots)
    specs = sorted({spec for result in per_shots.values() for spec in result["summary"]}, key=_method_key)
    header = ["method", "trainable params", "saved size"]
    header += [f"macro-F1, {n} shots" for n in shots] + [f"train time vs LoRA, {n} shots" for n in shots]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for spec in specs:
        summaries = [per_shots[n]["summary"].get(spec, {"seeds": 0}) for n in shots]
        ran = [summary for summary in summaries if summary.get("seeds")]
        params = median_of(ran[-1], "trainable_params") if ran else None
        cells = [f"`{spec}`", f"{params:,.0f}" if params is not None else "–"]
        cells.append(bytes_cell(median_of(ran[-1], "adapter_bytes")) if ran else "–")
        cells += [metric_cell(summary, "macro_f1") if summary.get("seeds") else "–" for summary in summaries]
        cells += [ratio_cell(summary, "train_time_ratio") if summary.get("seeds") else "–" for summary in summaries]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_few_shot(results: dict[str, dict[int, dict]], path: Path) -> None:
    """Macro-F1 (median over seeds, min–max bars) against shots per class, one panel per dataset, a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    every = sorted({spec for per in results.values() for r in per.values() for spec in r["summary"]}, key=_method_key)
    colors = {spec: f"C{index % 10}" for index, spec in enumerate(every)}  # one colour per method in every panel
    for axis, (dataset, per_shots) in zip(axes[0], results.items(), strict=True):
        specs = sorted({spec for result in per_shots.values() for spec in result["summary"]}, key=_method_key)
        for spec in specs:
            points = [
                (n, result["summary"][spec]["macro_f1"])
                for n, result in per_shots.items()
                if isinstance(result["summary"].get(spec, {}).get("macro_f1"), dict)
            ]
            if not points:
                continue
            xs = [n for n, _ in points]
            medians = [value["median"] for _, value in points]
            errors = [
                [value["median"] - value["min"] for _, value in points],
                [value["max"] - value["median"] for _, value in points],
            ]
            style = "-" if spec.startswith("labeltok") else "--"
            axis.errorbar(
                xs, medians, yerr=errors, marker="o", linestyle=style, capsize=3, label=spec, color=colors[spec]
            )
        axis.set_xscale("log", base=2)
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_xticks(sorted({n for n in per_shots}))
        axis.set_ylim(0, 1)
        axis.set_xlabel("training rows per class (shots)")
        axis.set_ylabel("macro-F1 (median over seeds, min–max)")
        axis.set_title(dataset)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def render(results_dir: Path, output: Path, findings: Path | None = None) -> str:
    """Writes the few-shot document and `few_shot.png` beside it; returns the markdown."""
    results = load_results(results_dir)
    if not results:
        raise FileNotFoundError(
            f"No few-shot results under {results_dir} (<dataset>/shots<N>/results.json): run "
            "`python -m recipes.benchmarks.benchmark --shots_per_class 8,16 ...` first."
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    png = output.parent / "few_shot.png"
    plot_few_shot(results, png)
    lines = ["# Few-shot benchmarks", ""]
    if findings is not None and findings.exists():
        lines += [findings.read_text().strip(), ""]
    lines += ["## Tables", "", PROTOCOL, "", f"![macro-F1 against shots per class]({png.name})", ""]
    for dataset, per_shots in results.items():
        last = per_shots[max(per_shots)]
        data = last["data"]
        kind = "multi-label" if data.get("multi_label") else "single-label"
        samples = ", ".join(
            f"{n} shots: {result['data'].get('train_rows')} rows"
            + (
                f" (rows per label {min(s['min_label_rows'] for s in result['data']['samples'].values())}–"
                f"{max(s['max_label_rows'] for s in result['data']['samples'].values())})"
                if data.get("multi_label") and result["data"].get("samples")
                else ""
            )
            for n, result in per_shots.items()
        )
        seeds = sorted({seed for result in per_shots.values() for seed in result["settings"].get("seeds", [])})
        lines += [
            f"### {dataset}",
            "",
            f"{data.get('num_labels')} labels ({kind}); train sample of {data.get('full_train_rows')} rows: {samples}; "
            f"{data.get('test_rows')} test rows; seeds {seeds}. " + DATASET_NOTES.get(dataset, ""),
            "",
            few_shot_table(per_shots),
            "",
        ]
        settings = last["settings"]
        lines.append(
            f"Settings: {settings.get('epochs')} epochs (fine-tuning methods), batch {settings.get('batch_size')}, "
            f"max length {settings.get('max_length')}, learning rate {settings.get('learning_rate')}, label table "
            f"{settings.get('label_learning_rate')}, LoRA r={settings.get('lora_r')}; SetFit runs its own recipe."
        )
        lines += ["", "Commands:", ""]
        commands = []
        for result in per_shots.values():
            for command in result["command"].split(" ; "):
                if command not in commands:
                    commands.append(command)
        lines += [f"- `{current_command(command)}`" for command in commands]
        lines += ["", *_environment_lines(last["environment"]), ""]
    text = "\n".join(lines)
    output.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__spec__.name}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results_dir", default="outputs/few_shot")
    parser.add_argument("--output", default=str(DOCS / "few_shot.md"), help="the plot goes beside it")
    parser.add_argument("--findings", default=str(DOCS / "few_shot_findings.md"), help="hand-written, after the title")
    args = parser.parse_args(argv)
    render(Path(args.results_dir), Path(args.output), Path(args.findings))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
