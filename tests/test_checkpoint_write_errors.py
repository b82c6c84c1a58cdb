"""A checkpoint that cannot be written (a full disk) stops `labeltok train` with one clear line and leaves no partial
`checkpoint-N` for `resume_from_checkpoint=True` to pick up; resuming then continues from the last complete one.

The write is made to fail inside the real Trainer save, at the second checkpoint (step 4; the first is step 2), the
way a full disk fails each writer: safetensors raises (here an `OSError(ENOSPC)`, as a plain `open`/`write` would),
and `torch.save` raises the `RuntimeError` its stream writer gives on a full disk (measured on a 64 KiB tmpfs:
"[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534").
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
from recipe_data import make_rows, save_tiny_backbone, write_rows
from transformers.trainer_utils import get_last_checkpoint

from labeltok_peft import cli

FAILING_CHECKPOINT = "checkpoint-4"
QUICK = ["--per_device_train_batch_size", "8", "--lora_r", "4", "--learning_rate", "5e-3", "--disable_tqdm", "true",
         "--report_to", "none", "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoint_errors")
    save_tiny_backbone(root / "tiny")
    write_rows(make_rows(10, seed=0), root / "train.csv")
    write_rows(make_rows(4, seed=1), root / "dev.csv")
    return root


def train_argv(workspace: Path, output_dir: Path, *extra: str) -> list[str]:
    return [str(arg) for arg in ["train", "--model_name_or_path", workspace / "tiny", "--train_file",
            workspace / "train.csv", "--validation_file", workspace / "dev.csv", "--output_dir", output_dir, *QUICK,
            *extra]]  # fmt: skip


def fail_weights(monkeypatch) -> None:
    """safetensors cannot write the model file of the failing checkpoint: the checkpoint folder stays empty."""
    original = safetensors.torch.save_file

    def save_file(tensors, filename, *args, **kwargs):
        if FAILING_CHECKPOINT in str(filename):
            raise OSError(errno.ENOSPC, "No space left on device", str(filename))
        return original(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


def fail_optimizer(monkeypatch) -> None:
    """`torch.save` cannot write the optimizer state: the folder already holds the weights, not the rest."""
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if FAILING_CHECKPOINT in str(f) and str(f).endswith("optimizer.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return original(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize("make_it_fail", [fail_weights, fail_optimizer], ids=["weights-enospc", "optimizer-torch"])
def test_a_failed_checkpoint_write_is_one_line_leaves_no_partial_checkpoint_and_resumes(
    workspace, tmp_path, monkeypatch, capsys, make_it_fail
):
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        make_it_fail(patch)
        status = cli.main(train_argv(workspace, out))
    error = capsys.readouterr().err
    assert status == 1
    assert "Traceback" not in error
    lines = [line for line in error.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, error
    assert f"Could not write the checkpoint {out / FAILING_CHECKPOINT}" in lines[0]
    assert "Free disk space" in lines[0] and "--resume_from_checkpoint" in lines[0]
    if make_it_fail is fail_weights:
        assert "the disk is full" in lines[0]

    # Nothing half-written where a loader looks: the newest checkpoint is the complete one before the failure.
    assert not (out / FAILING_CHECKPOINT).exists()
    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-2")
    assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= {
        p.name for p in (out / "checkpoint-2").iterdir()
    }
    assert not (out / "labeltok_config.json").exists()  # training did not finish: no adapter

    # Freeing space and resuming continues from checkpoint-2 to the end.
    assert cli.main(train_argv(workspace, out, "--resume_from_checkpoint", "true")) == 0
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert (out / "labeltok_config.json").is_file()
