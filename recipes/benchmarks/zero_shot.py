"""Zero-shot transfer to labels added after training (issue 11 §2), on WordNet lexnames with all-MiniLM-L6-v2.

    python -m recipes.benchmarks.zero_shot --output zero_shot.json

One seed: some lexnames labels are held out (6 of 26 by default, drawn with the seed), and their rows are removed
from the training data. A label-token adapter (isolated attention, shared positions, label-text init, LoRA on
query/value) trains on the other labels. The held-out labels are then added by name only (`add_labels`), and the
test split (all 26 labels) is scored, every row choosing among all 26 labels:

- accuracy on the held-out labels' rows (the zero-shot number), on the seen labels' rows and on all rows;
- chance (1/26) and a nearest-label-embedding baseline on the same rows: the frozen backbone's mean-pooled
  embedding of the text, matched by cosine to the mean-pooled embedding of each label's name;
- how far training moved the seen labels' rows from their text init (cosine), the drift that would stop new rows
  from transferring.

Isolated attention with shared positions keeps the seen labels' logits bitwise unchanged by the added labels, so
the seen rows lose accuracy only to new labels that outscore the right one.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from labeltok_peft.machine import prefer_passive_openmp

prefer_passive_openmp()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from .benchmark_methods import mean_pooled_embeddings  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held_out", type=int, default=6, help="How many labels are held out of training.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the held-out draw, the adapter and training.")
    parser.add_argument("--per_label", type=int, default=200, help="Lexnames rows per label before the split.")
    parser.add_argument("--max_train_rows", type=int, default=None, help="Train on a seeded sample of this many rows.")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=5e-4, help="LoRA rate.")
    parser.add_argument("--label_learning_rate", type=float, default=5e-2)
    parser.add_argument("--head_learning_rate", type=float, default=5e-2)
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--output", default=None, help="Write the results as JSON here.")
    return parser.parse_args(argv)


def mean_pooled(model, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    """`[len(texts), hidden]` mean of the frozen backbone's last hidden states over real tokens (the linear probe's)."""
    return torch.from_numpy(mean_pooled_embeddings(model, tokenizer, texts, max_length))


def accuracies(predicted: np.ndarray, gold: np.ndarray, held_out_ids: set[int]) -> dict[str, float]:
    held = np.isin(gold, sorted(held_out_ids))
    return {
        "accuracy_held_out_rows": float((predicted[held] == gold[held]).mean()),
        "accuracy_seen_rows": float((predicted[~held] == gold[~held]).mean()),
        "accuracy_all_rows": float((predicted == gold).mean()),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModel, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from labeltok_peft import LabelTokConfig, get_labeltok_model
    from labeltok_peft.label_init import initial_label_table
    from labeltok_peft.optim import create_optimizer
    from labeltok_peft.pretrained import resolve_model_path

    from .wordnet import load_wordnet_lexnames

    started = time.perf_counter()
    set_seed(args.seed)
    splits = load_wordnet_lexnames(per_label=args.per_label)
    names = splits["train"].features["label"].names
    held_out = sorted(random.Random(args.seed).sample(names, args.held_out))
    seen = [name for name in names if name not in held_out]
    seen_id = {name: index for index, name in enumerate(seen)}
    train = splits["train"].filter(lambda row: names[row["label"]] in seen_id)
    if args.max_train_rows is not None and args.max_train_rows < len(train):
        train = train.shuffle(seed=args.seed).select(range(args.max_train_rows))
    test = splits["test"]
    print(f"[zero_shot] held out {held_out}; train rows {len(train)} (seen labels only), test rows {len(test)}")

    path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    backbone = AutoModel.from_pretrained(path, add_pooling_layer=False)
    config = LabelTokConfig(
        labels=seen,
        label_init="label_text",
        label_attention="isolated",
        label_positions="shared",
        lora={"r": args.lora_r, "lora_alpha": args.lora_r, "target_modules": ["query", "value"]},
        init_seed=args.seed,
    )
    model = get_labeltok_model(backbone, config, tokenizer=tokenizer)
    init_rows = model.label_tables["default"].detach().clone()

    def tokenize(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=args.max_length)
        encoded["labels"] = [seen_id[names[label]] for label in batch["label"]]
        return encoded

    train_tokens = train.map(tokenize, batched=True, remove_columns=train.column_names)
    optimizer = create_optimizer(
        model,
        args.learning_rate,
        label_learning_rate=args.label_learning_rate,
        head_learning_rate=args.head_learning_rate,
    )
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=args.batch_size,
            num_train_epochs=args.epochs,
            learning_rate=args.learning_rate,
            warmup_steps=0.06,
            lr_scheduler_type="linear",
            logging_steps=20,
            save_strategy="no",
            report_to=[],
            label_names=["labels"],
            seed=args.seed,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train_tokens,
            data_collator=DataCollatorWithPadding(tokenizer),
            optimizers=(optimizer, None),
        )
        train_seconds = trainer.train().metrics["train_runtime"]
    model.eval()

    # Drift of the trained rows away from their text init (cosine per seen label).
    drift = torch.nn.functional.cosine_similarity(model.label_tables["default"].detach(), init_rows, dim=-1)

    gold = np.asarray(test["label"])
    texts = list(test["text"])

    def logits_of(current) -> np.ndarray:
        rows = []
        with torch.no_grad():
            for start in range(0, len(texts), 64):
                encoded = tokenizer(
                    texts[start : start + 64],
                    truncation=True,
                    max_length=args.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                rows.append(current(**encoded).logits.float().numpy())
        return np.concatenate(rows)

    # Seen labels only (before adding): the trained classifier's own accuracy on the seen labels' rows.
    held_ids = {names.index(name) for name in held_out}
    seen_rows = ~np.isin(gold, sorted(held_ids))
    before = logits_of(model)
    seen_only_accuracy = float(
        (np.asarray(seen)[before[seen_rows].argmax(1)] == np.asarray(names)[gold[seen_rows]]).mean()
    )

    model.add_labels(held_out)  # by name only
    order = [names.index(label) for label in model.labeltok_config.labels]  # logit index -> lexnames id
    after = logits_of(model)
    assert np.array_equal(after[:, : len(seen)], before), "isolated attention: seen logits must not move"
    predicted = np.asarray(order)[after.argmax(1)]
    label_tokens = accuracies(predicted, gold, held_ids)
    new_columns = [model.labeltok_config.labels.index(label) for label in held_out]
    held_rows = ~seen_rows
    among_new = np.asarray([names.index(held_out[i]) for i in after[held_rows][:, new_columns].argmax(1)])
    label_tokens["accuracy_held_out_rows_among_held_out_labels"] = float((among_new == gold[held_rows]).mean())
    new_rows_vs_init = initial_label_table(model.labeltok_config, model.base_model.get_input_embeddings(), tokenizer)
    assert torch.equal(model.label_tables["default"].detach()[len(seen) :], new_rows_vs_init[len(seen) :])

    # Nearest label embedding: frozen mean-pooled text vs mean-pooled label name, cosine.
    frozen = AutoModel.from_pretrained(path, add_pooling_layer=False).eval()
    text_vectors = torch.nn.functional.normalize(mean_pooled(frozen, tokenizer, texts, args.max_length), dim=-1)
    label_vectors = mean_pooled(frozen, tokenizer, [name.replace("_", " ") for name in names], args.max_length)
    similarity = text_vectors @ torch.nn.functional.normalize(label_vectors, dim=-1).T  # [rows, 26]
    nearest = accuracies(similarity.argmax(1).numpy(), gold, held_ids)
    held_columns = sorted(held_ids)
    nearest["accuracy_held_out_rows_among_held_out_labels"] = float(
        (
            np.asarray(held_columns)[similarity[torch.from_numpy(held_rows)][:, held_columns].argmax(1).numpy()]
            == gold[held_rows]
        ).mean()
    )

    result = {
        "setup": vars(args) | {"held_out_labels": held_out, "train_rows": len(train), "test_rows": len(test)},
        "test_rows_held_out": int(held_rows.sum()),
        "chance": {"among_all_labels": 1 / len(names), "among_held_out_labels": 1 / len(held_out)},
        "label_tokens": label_tokens | {"accuracy_seen_rows_before_adding": seen_only_accuracy},
        "nearest_label_embedding": nearest,
        "trained_row_cosine_to_text_init": {
            "mean": float(drift.mean()),
            "min": float(drift.min()),
            "max": float(drift.max()),
        },
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    print(json.dumps(result, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
