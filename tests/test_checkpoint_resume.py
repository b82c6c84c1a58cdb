"""An unmodified `transformers.Trainer` checkpoints only adapter tensors and resumes exactly after a SIGKILL.

The test runs this file as a script in subprocesses: an uninterrupted run, a run that kills itself with SIGKILL two
steps after its first checkpoint (so the work after the checkpoint is lost, as in a real crash), and a run resumed
from that checkpoint. All run on the CPU with one thread and a fixed seed; the backbone's dropout is active, so the
resumed run only matches if the random state is restored too.

Tolerance: the final evaluation loss and every adapter tensor of the resumed run must equal the uninterrupted run's
to 1e-6 (absolute); accuracy must be equal. On one machine they are in fact bitwise equal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
LABELS = ["sport", "business", "film", "tech"]
WORDS_PER_LABEL = {
    "sport": "match goal team won lost player coach game".split(),
    "business": "market shares bank profit economy growth tax".split(),
    "film": "film actor music award star show".split(),
    "tech": "phone software computer internet chip network".split(),
}
MAX_STEPS = 40
SAVE_STEPS = 16
KILL_AT_STEP = 20  # four steps after the checkpoint at step 16: that work is lost and redone after resuming


def _dataset(size: int, seed: int) -> list[dict]:
    import random

    rng = random.Random(seed)
    rows = []
    for index in range(size):
        label = index % len(LABELS)
        words = rng.choices(WORDS_PER_LABEL[LABELS[label]], k=4) + rng.choices(["the", "a"], k=2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def _run(mode: str, output_dir: str) -> None:
    """Trains (mode 'full' or 'killed') or resumes (mode 'resume'), then writes final metrics to output_dir."""
    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    from tiny_models import tiny_backbone, tokenizer_for
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments, set_seed

    from labeltok_peft import LabelTokConfig, get_labeltok_model, make_compute_metrics

    set_seed(0)
    tokenizer = tokenizer_for("llama")
    backbone = tiny_backbone("llama")
    for module in backbone.modules():
        if hasattr(module, "attention_dropout"):
            # Dropout makes every step consume random numbers: the resumed run only matches if they are restored.
            module.attention_dropout = 0.1
    model = get_labeltok_model(backbone, LabelTokConfig(labels=LABELS, lora={"r": 4}), tokenizer=tokenizer)

    def encode(rows: list[dict]) -> list[dict]:
        return [dict(tokenizer(row["text"]), labels=row["label"]) for row in rows]

    class KillAfterCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if mode == "killed" and state.global_step == KILL_AT_STEP:
                os.kill(os.getpid(), signal.SIGKILL)

    args = TrainingArguments(
        output_dir=output_dir,
        max_steps=MAX_STEPS,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=5e-2,
        warmup_steps=2,
        lr_scheduler_type="linear",
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        logging_steps=1,
        report_to=[],
        seed=0,
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encode(_dataset(64, seed=1)),
        eval_dataset=encode(_dataset(32, seed=2)),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=make_compute_metrics(multi_label=False),
        callbacks=[KillAfterCheckpoint()],
    )
    checkpoint = os.path.join(output_dir, f"checkpoint-{SAVE_STEPS}") if mode == "resume" else None
    trainer.train(resume_from_checkpoint=checkpoint)
    metrics = trainer.evaluate()
    model.save_pretrained(os.path.join(output_dir, "final"))
    Path(output_dir, "final_metrics.json").write_text(json.dumps(metrics))


def _launch(mode: str, output_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), mode, str(output_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _final_state(output_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    metrics = json.loads((output_dir / "final_metrics.json").read_text())
    tensors = load_file(output_dir / "final" / "labeltok_adapter.safetensors")
    tensors |= {
        f"lora.{k}": v for k, v in load_file(output_dir / "final" / "lora" / "adapter_model.safetensors").items()
    }
    return metrics, tensors


@pytest.mark.multiprocess
def test_killed_run_resumes_to_the_same_result(tmp_path):
    full_dir, crash_dir = tmp_path / "full", tmp_path / "crash"
    full = _launch("full", full_dir)
    assert full.returncode == 0, full.stderr[-3000:]

    killed = _launch("killed", crash_dir)
    assert killed.returncode == -signal.SIGKILL, f"expected a SIGKILL, got {killed.returncode}: {killed.stderr[-3000:]}"
    checkpoints = sorted(path.name for path in crash_dir.glob("checkpoint-*"))
    assert checkpoints == [f"checkpoint-{SAVE_STEPS}"]
    assert not (crash_dir / "final_metrics.json").exists()

    # The checkpoint holds adapter tensors only: label table, head and LoRA, not the backbone's weights.
    checkpoint = crash_dir / f"checkpoint-{SAVE_STEPS}"
    saved = load_file(checkpoint / "model.safetensors")
    assert saved and all(
        k.startswith(("label_tables.", "heads.")) or ".lora_" in k or k == "labeltok_fingerprint.default" for k in saved
    ), sorted(saved)
    assert any(".lora_A." in k for k in saved) and "label_tables.default" in saved
    assert (checkpoint / "optimizer.pt").is_file() and (checkpoint / "scheduler.pt").is_file()

    resumed = _launch("resume", crash_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "There were missing keys" not in resumed.stderr

    full_metrics, full_tensors = _final_state(full_dir)
    resumed_metrics, resumed_tensors = _final_state(crash_dir)
    assert resumed_metrics["eval_accuracy"] == full_metrics["eval_accuracy"]
    assert abs(resumed_metrics["eval_loss"] - full_metrics["eval_loss"]) <= 1e-6
    assert full_tensors.keys() == resumed_tensors.keys()
    for key, value in full_tensors.items():
        torch.testing.assert_close(resumed_tensors[key], value, atol=1e-6, rtol=0, msg=key)
    # Training moved the adapter away from its initial values, so equal end states are not trivially equal.
    initial = load_file(checkpoint / "model.safetensors")["label_tables.default"]
    assert not torch.allclose(full_tensors["label_table"], initial)


if __name__ == "__main__":
    _run(sys.argv[1], sys.argv[2])
