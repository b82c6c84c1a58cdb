"""The `labeltok` commands (train, evaluate, predict), shared by the console script and `recipes/*.py`.

Each command module has `main(argv)` (raises on bad input) and `cli(argv)` (prints a one-line error and returns
exit status 1). `run_command` is the entry point of both the console script and the recipe scripts.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

# Command name -> (module, one-line summary for `labeltok --help`).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train an adapter on your data, save it, evaluate it and write a report"),
    "evaluate": ("evaluate", "score a trained adapter on labelled data (metrics + report)"),
    "predict": ("predict", "classify texts or a file with a trained adapter (JSONL/CSV)"),
}


def prefer_passive_openmp() -> None:
    """Makes idle OpenMP threads sleep instead of spin, unless `OMP_WAIT_POLICY` is already set.

    Measured on 2 shared CPU cores (load ~4.5): a MiniLM training step took 8 s of wall time with torch's 2 spinning
    threads and 4 s with passive waiting (or 1 thread), at half the CPU time. It only takes effect before torch is
    first imported, which is why the entry points call it first.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run_command(name: str, argv: Sequence[str] | None = None) -> int:
    """Runs command `name` with `argv` (default: `sys.argv[1:]`); returns the exit status."""
    prefer_passive_openmp()
    module = importlib.import_module(f".{COMMANDS[name][0]}", __name__)
    return module.cli(argv)
