"""An unmodified transformers.Trainer trains and evaluates label-token models on tiny backbones."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from tiny_models import tiny_backbone, tokenizer_for
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from labeltok_peft import LabelTokConfig, get_labeltok_model, make_compute_metrics, tokenize_function
from labeltok_peft.optim import create_optimizer

TOPICS = {
    "sport": "team match goal player coach game won",
    "business": "market shares bank profit economy growth tax",
    "film": "film actor award star show music",
    "tech": "phone software computer internet chip network",
}


def topic_dataset(rows_per_label: int, seed: int) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, words in TOPICS.items():
        vocabulary = words.split()
        for _ in range(rows_per_label):
            texts.append(" ".join(rng.choice(vocabulary, size=6)))
            labels.append(label)
    return datasets.Dataset.from_dict({"text": texts, "label": labels})


# Held-out accuracy per (backbone, label_attention) and the training that reaches it. Full attention (sequential
# positions) was measured on 2026-11-30 (torch 2.13, transformers 5.24) at 20 epochs, lr 1e-2, label lr 2e-2. The
# default, 'auto' (isolated attention, shared positions on these backbones), measured again with the same code: the
# decoders learn at the same settings (llama 1.0, qwen2 0.97); the tiny random BERT learns more slowly in isolation
# (0.28 at those settings, 0.41 at lr 3e-2 / label lr 5e-2), and reaches 1.0 at 40 epochs, lr 3e-2, label lr 5e-2.
# Since 2026-12-01 'auto' puts BERT's labels in its last layer only and the head learns at the label rate: 0.84 at
# those settings (1.0 with labels in every layer or with the head at the LoRA rate; a tiny random backbone), and BERT
# with full attention 0.875 (0.72 with the head at the LoRA rate).
FULL = dict(label_attention="full", label_positions="sequential")
SLOW_BERT = dict(epochs=40, learning_rate=3e-2, label_learning_rate=5e-2)
TRAINING_CASES = {
    ("bert", "full"): (FULL, {}, 0.875),
    ("llama", "full"): (FULL, {}, 0.97),
    ("qwen2", "full"): (FULL, {}, 1.0),
    ("bert", "auto"): ({}, SLOW_BERT, 0.84),
    ("llama", "auto"): ({}, {}, 1.0),
    ("qwen2", "auto"): ({}, {}, 0.97),
}


@pytest.mark.parametrize(("family", "attention"), sorted(TRAINING_CASES))
def test_trainer_trains_and_evaluates(tmp_path, family, attention):
    modes, training, measured = TRAINING_CASES[family, attention]
    training = dict(dict(epochs=20, learning_rate=1e-2, label_learning_rate=2e-2), **training)
    tokenizer = tokenizer_for(family)
    config = LabelTokConfig(labels=list(TOPICS), lora={"r": 4}, **modes)
    model = get_labeltok_model(tiny_backbone(family), config, tokenizer=tokenizer)
    resolved = (model.labeltok_config.label_attention.value, model.labeltok_config.label_positions.value)
    assert resolved == (("full", "sequential") if attention == "full" else ("isolated", "shared"))
    preprocess = tokenize_function(tokenizer, config, "text", "label", max_length=16)
    train = topic_dataset(16, seed=0).map(preprocess, batched=True, with_indices=True, remove_columns=["text", "label"])
    test = topic_dataset(8, seed=1).map(preprocess, batched=True, with_indices=True, remove_columns=["text", "label"])
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        num_train_epochs=training["epochs"],
        learning_rate=training["learning_rate"],
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        label_names=["labels"],
        seed=0,
        use_cpu=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=make_compute_metrics(multi_label=False),
        optimizers=(
            create_optimizer(model, training["learning_rate"], label_learning_rate=training["label_learning_rate"]),
            None,
        ),
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    assert after["eval_loss"] < before["eval_loss"]
    assert {"eval_accuracy", "eval_macro_f1", "eval_micro_f1"} <= set(after)
    # Chance is 0.25. The tolerance covers kernel differences between versions, not a model that stopped learning.
    assert after["eval_accuracy"] == pytest.approx(measured, abs=0.1), after


def multi_label_dataset(rows: int, seed: int) -> datasets.Dataset:
    """Texts made of words from one or two topics, labelled with those topics."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(rows):
        chosen = sorted(rng.choice(list(TOPICS), size=int(rng.integers(1, 3)), replace=False).tolist())
        texts.append(" ".join(" ".join(rng.choice(TOPICS[label].split(), size=3)) for label in chosen))
        labels.append(chosen)
    return datasets.Dataset.from_dict({"text": texts, "label": labels})


# Modes, learning rate and held-out micro-F1 (before training, after) per label_attention, 40 epochs, default head
# (residual). Full attention (sequential positions) at lr 1e-2: 0.35 -> 0.67, measured 2026-12-01 (the linear head
# reached 0.47). The default, 'auto' (isolated, shared positions on BERT), barely moves at lr 1e-2 and learns at lr
# 3e-2 (0.53 -> 0.76; lr 5e-2 diverges), measured with the linear head and unchanged with the residual one.
MULTI_LABEL_CASES = {"full": (FULL, 1e-2, 0.35, 0.67), "auto": ({}, 3e-2, 0.53, 0.76)}


@pytest.mark.parametrize("attention", sorted(MULTI_LABEL_CASES))
def test_trainer_multi_label(tmp_path, attention):
    modes, learning_rate, measured_before, measured_after = MULTI_LABEL_CASES[attention]
    tokenizer = tokenizer_for("bert")
    config = LabelTokConfig(labels=list(TOPICS), problem_type="multi_label_classification", lora={"r": 4}, **modes)
    model = get_labeltok_model(tiny_backbone("bert"), config, tokenizer=tokenizer)
    preprocess = tokenize_function(tokenizer, config, "text", "label", max_length=16)
    data = multi_label_dataset(64, seed=0).map(
        preprocess, batched=True, with_indices=True, remove_columns=["text", "label"]
    )
    held_out = multi_label_dataset(32, seed=1).map(
        preprocess, batched=True, with_indices=True, remove_columns=["text", "label"]
    )
    assert np.asarray(data[0]["labels"]).shape == (4,)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        num_train_epochs=40,
        learning_rate=learning_rate,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        label_names=["labels"],
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=held_out,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=make_compute_metrics(multi_label=True),
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < before["eval_loss"]
    # Tolerances for other versions.
    assert before["eval_micro_f1"] == pytest.approx(measured_before, abs=0.08), before
    assert after["eval_micro_f1"] == pytest.approx(measured_after, abs=0.08), after
    assert "eval_subset_accuracy" in after


# Full attention takes both kinds of checkpointing; the label pass (isolated, the default here) only non-reentrant.
@pytest.mark.parametrize(
    ("attention", "reentrant_modes"), [("full", (True, False)), ("auto", (False,))], ids=["full", "auto"]
)
def test_gradient_checkpointing_trains_frozen_backbone(attention, reentrant_modes):
    tokenizer = tokenizer_for("llama")
    config = LabelTokConfig(labels=list(TOPICS), label_attention=attention)
    model = get_labeltok_model(tiny_backbone("llama"), config, tokenizer=tokenizer)
    batch = tokenizer(["team match goal", "bank profit"], padding=True, return_tensors="pt")
    for reentrant in reentrant_modes:
        model.gradient_checkpointing_enable({"use_reentrant": reentrant})
        model.train()
        loss = model(**batch, labels=torch.tensor([0, 1])).loss
        loss.backward()
        assert model.label_tables["default"].grad is not None
        assert model.label_tables["default"].grad.abs().sum() > 0
        model.zero_grad()
    if attention == "auto":
        model.gradient_checkpointing_enable({"use_reentrant": True})
        with pytest.raises(ValueError, match="reentrant gradient checkpointing"):
            model(**batch, labels=torch.tensor([0, 1]))
