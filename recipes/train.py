r"""Train a label-token adapter, save it, evaluate it and write a report.

Run with plain python or on several processes/devices with accelerate:

    python recipes/train.py --config recipes/configs/bbc_news.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml \
        recipes/train.py --config recipes/configs/bbc_news.yaml

Steps (see labeltok_peft/cli/train.py): parse flags and --config; check --output_dir; load and check the data
(label set, problem type, validation split); load the backbone and add the adapter; tokenize; train with
transformers.Trainer; save the adapter; evaluate; write eval_results.json and report.md. `labeltok train` runs the
same code.
"""

from __future__ import annotations

import sys

from labeltok_peft.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("train"))
