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

Then a few-shot phase (`--new_label_shots K`, default 8; 0 skips it): K train rows per new label (the
`few_shot.sample_shots` rule, seeded) plus `--replay_shots` rows per seen label (default K), and
`model.train_only_labels(new labels)` fine-tunes only the new labels' rows (and the head with `--train_head`) for
`--new_label_epochs` epochs. The replay rows are there because the softmax runs over all labels: trained on rows of
new labels only, it would learn that a new label is always the answer and raise the new logits on every row. Only
the new rows change (the old rows and LoRA are checked bitwise), so without `--train_head` the old labels' logits
stay bitwise the same and the old labels lose F1 only to new labels that now outscore them. Reported, on the whole
test split with 26-way predictions: macro-F1 over the new labels and over the old labels, right after `add_labels`
and after the fine-tune. `--reference` also trains an adapter on all 26 labels from the start (same recipe and
epochs as the first model, one more full training run) and reports the new labels' F1 over it.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from labeltok_peft.machine import prefer_passive_openmp

prefer_passive_openmp()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from .benchmark_methods import mean_pooled_embeddings  # noqa: E402
from .few_shot import sample_shots  # noqa: E402


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
    parser.add_argument(
        "--head_type", default="linear", choices=["linear", "tied", "residual"], help="LabelTokConfig.head_type."
    )
    parser.add_argument(
        "--label_layers",
        default="all",
        help="LabelTokConfig.label_layers: 'all' (every layer, as the recorded runs), 'auto' or a number N.",
    )
    parser.add_argument(
        "--label_anchor_weight",
        type=float,
        default=0.0,
        help="LabelTokConfig.label_anchor_weight of both trainings: keeps rows near their text init (0: off).",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument(
        "--new_label_shots", type=int, default=8, help="Train rows per new label for the fine-tune; 0 skips it."
    )
    parser.add_argument(
        "--replay_shots", type=int, default=None, help="Train rows per seen label mixed in (default: new_label_shots)."
    )
    parser.add_argument("--new_label_epochs", type=float, default=10.0)
    parser.add_argument(
        "--new_label_learning_rate", type=float, default=5e-2, help="Label-table rate of the fine-tune."
    )
    parser.add_argument("--train_head", action="store_true", help="Fine-tune the shared head with the new rows.")
    parser.add_argument(
        "--reference", action="store_true", help="Also train an adapter on all labels from the start (one more run)."
    )
    parser.add_argument("--output", default=None, help="Write the results as JSON here.")
    return parser.parse_args(argv)


def label_layers(flag: str) -> int | str | None:
    """`LabelTokConfig.label_layers` from `--label_layers`: None for 'all', 'auto', or the number N."""
    return {"all": None, "auto": "auto"}[flag] if flag in ("all", "auto") else int(flag)


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


def _label_sample(row_labels: list[int], names: list[str], group: list[str], shots: int, seed: int, flag: str):
    """`shots` train-row indices of each label in `group`, by `few_shot.sample_shots` over the group's rows."""
    positions = [index for index, label in enumerate(row_labels) if names[label] in group]
    local = [group.index(names[row_labels[index]]) for index in positions]
    counts = Counter(local)
    short = {name: counts[index] for index, name in enumerate(group) if counts[index] < shots}
    if short:
        raise ValueError(
            f"{flag} {shots}: the label(s) {short} have fewer train rows than that; lower {flag} or load more rows "
            "per label (--per_label)."
        )
    return [positions[index] for index in sample_shots(local, group, shots, seed, False)]


def new_label_sample(row_labels: list[int], names: list[str], held_out: list[str], shots: int, replay: int, seed: int):
    """Train-row indices of the fine-tune: `shots` rows of each held-out label and `replay` rows of each other label.

    Both follow the `few_shot.sample_shots` rule (a fixed hash order per label and seed) over the rows of their
    group, so for one seed the 8-shot rows of a label are among its 16-shot rows.

    Args:
        row_labels: `[num_train_rows]` label id (index into `names`) of every train row.
        names: all label names, in id order.
        held_out: the new labels.
        shots: rows per new label (at least 1).
        replay: rows per seen label (0 for none).
        seed: the sample seed.

    Returns:
        The sorted row indices.

    Raises:
        ValueError: a label with fewer train rows than asked (named, with the flag to lower).
    """
    chosen = _label_sample(row_labels, names, list(held_out), shots, seed, "--new_label_shots")
    if replay > 0:
        seen = [name for name in names if name not in held_out]
        chosen += _label_sample(row_labels, names, seen, replay, seed, "--replay_shots")
    return sorted(chosen)


def group_f1(predicted: np.ndarray, gold: np.ndarray, names: list[str], held_out: list[str]) -> dict:
    """Per-label F1 over all rows (ids into `names`), averaged over the new (held-out) and over the old labels."""
    from sklearn.metrics import f1_score

    per_label = f1_score(gold, predicted, labels=list(range(len(names))), average=None, zero_division=0)
    new = [names.index(name) for name in held_out]
    old = [index for index in range(len(names)) if index not in set(new)]
    return {
        "new_labels_macro_f1": float(per_label[new].mean()),
        "old_labels_macro_f1": float(per_label[old].mean()),
        "all_labels_macro_f1": float(per_label.mean()),
        "per_label_f1": {names[index]: round(float(per_label[index]), 4) for index in range(len(names))},
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
    full_train = splits["train"]  # the few-shot sample's pool; the reference trains on it (capped as phase one is)
    reference_train = full_train
    if args.max_train_rows is not None and args.max_train_rows < len(full_train):
        reference_train = full_train.shuffle(seed=args.seed).select(range(args.max_train_rows))
    train = splits["train"].filter(lambda row: names[row["label"]] in seen)
    if args.max_train_rows is not None and args.max_train_rows < len(train):
        train = train.shuffle(seed=args.seed).select(range(args.max_train_rows))
    test = splits["test"]
    print(f"[zero_shot] held out {held_out}; train rows {len(train)} (seen labels only), test rows {len(test)}")

    path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)

    def new_model(labels: list[str]):
        config = LabelTokConfig(
            labels=labels,
            label_init="label_text",
            label_attention="isolated",
            label_positions="shared",
            head_type=args.head_type,
            label_layers=label_layers(args.label_layers),
            label_anchor_weight=args.label_anchor_weight,
            lora={"r": args.lora_r, "lora_alpha": args.lora_r, "target_modules": ["query", "value"]},
            init_seed=args.seed,
        )
        return get_labeltok_model(AutoModel.from_pretrained(path, add_pooling_layer=False), config, tokenizer=tokenizer)

    def tokenized(rows, labels: list[str]):
        """`rows` tokenized, with targets as indices into `labels` (the model's logit order)."""
        logit_of = {name: index for index, name in enumerate(labels)}

        def tokenize(batch):
            encoded = tokenizer(batch["text"], truncation=True, max_length=args.max_length)
            encoded["labels"] = [logit_of[names[label]] for label in batch["label"]]
            return encoded

        return rows.map(tokenize, batched=True, remove_columns=rows.column_names)

    def train_model(model, rows, epochs: float, label_learning_rate: float) -> float:
        """Trains the model's trainable parameters on `rows` (already tokenized); returns the train seconds."""
        optimizer = create_optimizer(
            model,
            args.learning_rate,
            label_learning_rate=label_learning_rate,
            head_learning_rate=args.head_learning_rate,
        )
        with tempfile.TemporaryDirectory() as output_dir:
            training_args = TrainingArguments(
                output_dir=output_dir,
                per_device_train_batch_size=args.batch_size,
                num_train_epochs=epochs,
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
                train_dataset=rows,
                data_collator=DataCollatorWithPadding(tokenizer),
                optimizers=(optimizer, None),
            )
            seconds = trainer.train().metrics["train_runtime"]
        model.eval()
        return seconds

    model = new_model(seen)
    init_rows = model.label_tables["default"].detach().clone()
    train_seconds = train_model(model, tokenized(train, seen), args.epochs, args.label_learning_rate)

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

    def predictions_of(current, logits: np.ndarray) -> np.ndarray:
        """Predicted lexnames ids, from logits in the order of `current`'s labels."""
        return np.asarray([names.index(label) for label in current.labeltok_config.labels])[logits.argmax(1)]

    # Seen labels only (before adding): the trained classifier's own accuracy on the seen labels' rows.
    held_ids = {names.index(name) for name in held_out}
    seen_rows = ~np.isin(gold, sorted(held_ids))
    before = logits_of(model)
    seen_only_accuracy = float(
        (np.asarray(seen)[before[seen_rows].argmax(1)] == np.asarray(names)[gold[seen_rows]]).mean()
    )
    old_f1_before_adding = group_f1(predictions_of(model, before), gold, names, held_out)["old_labels_macro_f1"]

    model.add_labels(held_out)  # by name only
    after = logits_of(model)
    assert np.array_equal(after[:, : len(seen)], before), "isolated attention: seen logits must not move"
    predicted = predictions_of(model, after)
    label_tokens = accuracies(predicted, gold, held_ids)
    new_columns = [model.labeltok_config.labels.index(label) for label in held_out]
    held_rows = ~seen_rows
    among_new = np.asarray([names.index(held_out[i]) for i in after[held_rows][:, new_columns].argmax(1)])
    label_tokens["accuracy_held_out_rows_among_held_out_labels"] = float((among_new == gold[held_rows]).mean())
    new_rows_vs_init = initial_label_table(model.labeltok_config, model.base_model.get_input_embeddings(), tokenizer)
    assert torch.equal(model.label_tables["default"].detach()[len(seen) :], new_rows_vs_init[len(seen) :])
    zero_shot_f1 = group_f1(predicted, gold, names, held_out)

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
    del frozen

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
    }

    if args.new_label_shots > 0:
        replay = args.new_label_shots if args.replay_shots is None else args.replay_shots
        set_seed(args.seed)
        sample = new_label_sample(list(full_train["label"]), names, held_out, args.new_label_shots, replay, args.seed)
        labels_now = model.labeltok_config.labels
        frozen_state = {key: value.clone() for key, value in model.state_dict().items()}
        with model.train_only_labels(held_out, train_head=args.train_head):
            few_seconds = train_model(
                model,
                tokenized(full_train.select(sample), labels_now),
                args.new_label_epochs,
                args.new_label_learning_rate,
            )
        for key, value in model.state_dict().items():  # only the new rows (and the head, if asked) may have moved
            if "label_tables." in key or key.endswith(("label_bias", "label_weight")):  # per-label: rows follow
                assert torch.equal(value[: len(seen)], frozen_state[key][: len(seen)]), "an old label's row moved"
            elif not (args.train_head and "heads." in key):
                assert torch.equal(value, frozen_state[key]), f"{key} moved"
        tuned = predictions_of(model, logits_of(model))
        tuned_f1 = group_f1(tuned, gold, names, held_out)
        result["new_label_fine_tune"] = {
            "train_rows": len(sample),
            "replay_shots": replay,
            "train_seconds": few_seconds,
            "old_labels_macro_f1_before_adding_20_way": old_f1_before_adding,
            "before": zero_shot_f1,
            "after": tuned_f1 | accuracies(tuned, gold, held_ids),
            "old_labels_f1_change_points": 100
            * (tuned_f1["old_labels_macro_f1"] - zero_shot_f1["old_labels_macro_f1"]),
        }
    del model

    if args.reference:
        set_seed(args.seed)
        reference = new_model(names)
        reference_seconds = train_model(
            reference, tokenized(reference_train, names), args.epochs, args.label_learning_rate
        )
        reference_f1 = group_f1(predictions_of(reference, logits_of(reference)), gold, names, held_out)
        result["reference_all_labels_from_start"] = reference_f1 | {
            "train_rows": len(reference_train),
            "train_seconds": reference_seconds,
        }
        if "new_label_fine_tune" in result:
            tuned_new = result["new_label_fine_tune"]["after"]["new_labels_macro_f1"]
            reference_new = reference_f1["new_labels_macro_f1"]
            ratio = tuned_new / reference_new if reference_new > 0 else None  # None: the reference never got one right
            result["new_label_fine_tune"]["new_labels_f1_ratio_to_reference"] = ratio
            result["new_label_fine_tune"]["targets_met"] = {
                "new_labels_f1_at_least_90_percent_of_reference": ratio is not None and ratio >= 0.9,
                "old_labels_lose_at_most_1_point": result["new_label_fine_tune"]["old_labels_f1_change_points"] >= -1,
            }

    result["wall_seconds"] = time.perf_counter() - started
    print(json.dumps(result, indent=2))
    print(summary(result))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def summary(result: dict) -> str:
    """A few lines with the headline numbers of `main`'s result."""
    tokens, nearest = result["label_tokens"], result["nearest_label_embedding"]
    lines = [
        f"[zero_shot] seed {result['setup']['seed']}, held out {result['setup']['held_out_labels']}",
        f"  zero-shot accuracy, held-out rows: {tokens['accuracy_held_out_rows']:.3f} (nearest label embedding "
        f"{nearest['accuracy_held_out_rows']:.3f}, chance {result['chance']['among_all_labels']:.3f}); seen rows "
        f"{tokens['accuracy_seen_rows_before_adding']:.3f} -> {tokens['accuracy_seen_rows']:.3f} after add_labels",
    ]
    tune = result.get("new_label_fine_tune")
    if tune:
        before, after = tune["before"], tune["after"]
        lines.append(
            f"  {result['setup']['new_label_shots']}-shot fine-tune of the new rows ({tune['train_rows']} rows, "
            f"replay {tune['replay_shots']} per seen label): new labels' macro-F1 {before['new_labels_macro_f1']:.3f} "
            f"-> {after['new_labels_macro_f1']:.3f}; old labels' {before['old_labels_macro_f1']:.3f} -> "
            f"{after['old_labels_macro_f1']:.3f} ({tune['old_labels_f1_change_points']:+.1f} points; "
            f"{tune['old_labels_macro_f1_before_adding_20_way']:.3f} before adding, 20-way)"
        )
    reference = result.get("reference_all_labels_from_start")
    if reference:
        lines.append(
            f"  trained from the start on all labels: new labels' macro-F1 {reference['new_labels_macro_f1']:.3f}, "
            f"old labels' {reference['old_labels_macro_f1']:.3f}"
        )
    if tune and "new_labels_f1_ratio_to_reference" in tune:
        ratio = tune["new_labels_f1_ratio_to_reference"]
        lines.append(
            f"  new labels' F1 / reference: {float('nan') if ratio is None else ratio:.3f} (target >= 0.9); old "
            f"labels' change {tune['old_labels_f1_change_points']:+.1f} points (target >= -1); met: "
            f"{tune['targets_met']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
