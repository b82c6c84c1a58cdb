"""The `labeltok` console script, `labeltok train|evaluate|predict [flags]`, and the entry point of `recipes/*.py`."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from ..machine import prefer_passive_openmp

# Command name -> (module, one-line summary for `labeltok --help`).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train an adapter on your data, save it, evaluate it and write a report"),
    "evaluate": ("evaluate", "score a trained adapter on labelled data (metrics + report)"),
    "predict": ("predict", "classify texts or a file with a trained adapter (JSONL/CSV)"),
}


def run_command(name: str, argv: Sequence[str] | None = None) -> int:
    """Runs command `name` with `argv` (default: `sys.argv[1:]`); returns the exit status."""
    prefer_passive_openmp()
    module = importlib.import_module(f".{COMMANDS[name][0]}", __package__)
    return module.cli(argv)


USAGE = """\
usage: labeltok <command> [flags]   (labeltok <command> --help lists every flag)

Text classification with label tokens: each class becomes a learned token read by a frozen transformer.

commands:
{commands}

Try it offline (BBC News, all-MiniLM-L6-v2, a few minutes on a CPU):
  labeltok train --config recipes/configs/bbc_news.yaml
  labeltok predict --adapter_path outputs/bbc_news --texts "Shares fell after the profit warning"

Your data: a CSV/JSON/JSONL/parquet file with a 'text' and a 'label' column (names, ids, or lists for multi-label):
  labeltok train --model_name_or_path all-MiniLM-L6-v2 --train_file train.csv --output_dir my_adapter
  labeltok evaluate --adapter_path my_adapter --test_file test.csv

Flags follow transformers' run_classification.py and TrainingArguments; --config file.yaml supplies any of them.
On several GPUs or machines: accelerate launch recipes/train.py ... (docs/distributed.md).
Errors print one line; set LABELTOK_DEBUG=1 for the full traceback.
"""


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `labeltok <command> ...`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"labeltok-peft {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"labeltok: unknown command {command!r}; choose one of {', '.join(COMMANDS)}.\n", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    return run_command(command, rest)


if __name__ == "__main__":
    sys.exit(main())
