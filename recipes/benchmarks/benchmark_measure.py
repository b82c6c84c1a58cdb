"""What the benchmark measures in each run: step time, memory, trainable parameters and the bytes an adapter saves.

Used by recipes/benchmarks/benchmark_methods.py (each method in its own process); imports torch, so the renderer
(make_benchmarks_md.py) does not import it.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import TrainerCallback

WARMUP_STEPS_SKIPPED = 3  # train steps left out of the step-time median (allocator and thread-pool warm-up)


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


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
