"""The `labeltok` command line: train, evaluate and predict, shared by the console script and `recipes/*.py`.

Everything here serves the command line only (flags and YAML configs, data files, reports), so the library's core
imports without yaml, matplotlib or datasets. Each command module has `main(argv)` (raises on bad input) and
`cli(argv)` (prints a one-line error and returns exit status 1); `run_command` runs one of them.
"""

from __future__ import annotations

from .console import COMMANDS, main, run_command

__all__ = ["COMMANDS", "main", "run_command"]
