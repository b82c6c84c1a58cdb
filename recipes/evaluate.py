"""Evaluate a trained label-token adapter on labelled data; write metrics and a report.

    python recipes/evaluate.py --adapter_path outputs/bbc_news --dataset_name bbc_news
    accelerate launch recipes/evaluate.py --adapter_path my_adapter --test_file test.csv

`labeltok evaluate` runs the same code (labeltok_peft/cli/evaluate.py).
"""

from __future__ import annotations

import sys

from labeltok_peft.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("evaluate"))
