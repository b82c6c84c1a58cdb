"""Classify texts or a file with a trained label-token adapter; write JSONL or CSV.

    python recipes/predict.py --adapter_path outputs/bbc_news --texts "Shares fell after the profit warning"
    python recipes/predict.py --adapter_path my_adapter --test_file new.csv --output_file predictions.csv

`labeltok predict` runs the same code (labeltok_peft/cli/predict.py).
"""

from __future__ import annotations

import sys

from labeltok_peft.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("predict"))
