"""StopOnNonFinite with a plain transformers.Trainer: a diverging run raises before a non-finite step is saved."""

from __future__ import annotations

import datasets
import pytest
import torch
from safetensors.torch import load_file
from tiny_models import tiny_backbone, tokenizer_for
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from labeltok_peft import LabelTokConfig, get_labeltok_model, tokenize_function
from labeltok_peft.nonfinite import NonFiniteTrainingError, StopOnNonFinite, first_non_finite
from labeltok_peft.optim import create_optimizer

LABELS = ["sport", "business"]


def trainer_for(tmp_path, label_learning_rate: float) -> Trainer:
    tokenizer = tokenizer_for("bert")
    config = LabelTokConfig(labels=LABELS)
    model = get_labeltok_model(tiny_backbone("bert"), config, tokenizer=tokenizer)
    rows = {"text": ["team won the match", "bank profit market"] * 8, "label": LABELS * 8}
    preprocess = tokenize_function(tokenizer, config, "text", "label", max_length=16)
    train = datasets.Dataset.from_dict(rows).map(
        preprocess, batched=True, with_indices=True, remove_columns=["text", "label"]
    )
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=6, save_strategy="steps", save_steps=1,
        logging_steps=1000, report_to=[], label_names=["labels"], use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    return Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        optimizers=(create_optimizer(model, 1e-3, label_learning_rate=label_learning_rate), None),
        callbacks=[StopOnNonFinite()],
    )


def test_weights_that_become_non_finite_stop_the_run_before_their_checkpoint(tmp_path):
    # Logging is off (logging_steps 1000): only the weight check after each step can catch it.
    trainer = trainer_for(tmp_path, label_learning_rate=1e30)
    with pytest.raises(NonFiniteTrainingError, match=r"step (\d+): the trainable weight '.*' became non-finite") as e:
        trainer.train()
    step = int(e.value.args[0].split("step ")[1].split(":")[0])
    assert 1 <= step < 6
    checkpoints = sorted(int(path.name.split("-")[1]) for path in tmp_path.glob("checkpoint-*"))
    assert checkpoints == list(range(1, step))  # every step before the bad one, none from it on
    for folder in tmp_path.glob("checkpoint-*"):
        for file in folder.rglob("*.safetensors"):
            assert all(bool(tensor.isfinite().all()) for tensor in load_file(file).values())
    assert f"checkpoint-{step - 1}" in str(e.value) if step > 1 else "No checkpoint" in str(e.value)


def test_a_finite_run_is_left_alone(tmp_path):
    trainer = trainer_for(tmp_path, label_learning_rate=1e-2)
    trainer.train()
    assert trainer.state.global_step == 6
    assert first_non_finite(trainer.model.named_parameters()) is None
    assert first_non_finite([("x", torch.tensor([1.0, float("inf")]))]) == "x"
