"""`labeltok predict`: classify texts or a file with a trained adapter; write labels and probabilities."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..decoding import prediction_rows as decoded_rows
from ..decoding import probabilities_from_logits
from .arguments import PREDICT_ARGUMENTS, parse_recipe_args
from .common import (
    OutputDirError,
    adapter_thresholds,
    fit_max_length,
    load_adapter_model,
    make_trainer,
    run_cli,
    setup_logging,
    tokenize_splits,
    wait_for_everyone,
)
from .evaluate import evaluation_output_dir

logger = logging.getLogger("labeltok_peft")

DESCRIPTION = """\
Classify texts with a trained label-token adapter; write labels and probabilities as JSONL or CSV.

  labeltok predict --adapter_path my_adapter --texts "Shares fell sharply" "The striker scored twice"
  labeltok predict --adapter_path my_adapter --test_file new.csv --output_file predictions.csv

Default output: <output_dir>/predictions.jsonl (output_dir default: <adapter_path>/predictions). JSONL rows hold
"text", "label" and "score" (multi-label: "labels"), and "scores" for every label; CSV has one probability column
per label.
"""


def prediction_rows(texts: list[str], logits: np.ndarray, labels: list[str], thresholds: list[float] | None):
    """One dict per text: `text` first, then the decoded row of `decoding.prediction_rows` (scores to 6 digits).

    Args:
        texts: the texts, in the order of `logits`.
        logits: `[num_texts, num_labels]` logits.
        labels: label names in logit order.
        thresholds: per-label thresholds for multi-label adapters; `None` for single-label (softmax + argmax).
    """
    multi_label = thresholds is not None
    decoded = decoded_rows(probabilities_from_logits(logits, multi_label), labels, multi_label, thresholds, digits=6)
    return [{"text": text, **row} for text, row in zip(texts, decoded, strict=True)]


def write_predictions(rows: list[dict[str, Any]], path: Path) -> None:
    """Writes rows as JSONL, or as CSV (`text`, label(s), score, one probability column per label)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        labels = list(rows[0]["scores"]) if rows else []
        multi = bool(rows) and "labels" in rows[0]
        fields = (
            ["text", "labels" if multi else "label"] + ([] if multi else ["score"]) + [f"p_{label}" for label in labels]
        )
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(fields)
            for row in rows:
                chosen = "|".join(row["labels"]) if multi else row["label"]
                head = [row["text"], chosen] + ([] if multi else [row["score"]])
                writer.writerow(head + [row["scores"][label] for label in labels])
        return
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _texts_to_classify(data_args, predict_args) -> list[str]:
    from ..data import validate_texts
    from .dataset_loading import check_columns, load_splits, texts_as_strings

    if predict_args.texts:
        return validate_texts(predict_args.texts)
    if data_args.test_file:
        splits = load_splits(test_file=data_args.test_file, text_column=data_args.text_column_name)
    elif data_args.dataset_name:
        splits = load_splits(dataset_name=data_args.dataset_name, dataset_config_name=data_args.dataset_config_name)
    else:
        raise ValueError('Nothing to classify: pass --texts "some text" ... or --test_file file.csv.')
    name = "test" if "test" in splits else "validation" if "validation" in splits else next(iter(splits))
    dataset = splits[name]
    check_columns({name: dataset}, data_args.text_column_name, None, label_required=())
    dataset = texts_as_strings(dataset, data_args.text_column_name)
    texts = dataset[data_args.text_column_name]
    if data_args.max_predict_samples is not None:
        texts = texts[: data_args.max_predict_samples]
    return validate_texts(list(texts))


def predict(model_args, data_args, adapter_args, predict_args, training_args) -> list[dict[str, Any]]:
    """Classifies the texts; returns the prediction rows (also written to the output file)."""
    import datasets

    setup_logging(training_args)
    if not adapter_args.adapter_path:
        raise ValueError("--adapter_path is required: the folder written by `labeltok train` (its --output_dir).")
    output_dir = evaluation_output_dir(training_args, adapter_args.adapter_path, "predictions")
    output_file = Path(predict_args.output_file) if predict_args.output_file else output_dir / "predictions.jsonl"
    if output_file.suffix.lower() not in (".jsonl", ".csv"):
        raise ValueError(f"--output_file {str(output_file)!r} must end in .jsonl or .csv.")
    if output_file.exists() and not training_args.overwrite_output_dir:
        raise OutputDirError(f"{output_file} already exists; pass --overwrite_output_dir to replace it.")
    wait_for_everyone(training_args)
    training_args.output_dir = str(output_dir)

    model, settings = load_adapter_model(model_args, adapter_args)
    # Checked before the (possibly long) forward passes: a bad --threshold or an edited recipe file fails here.
    thresholds = adapter_thresholds(adapter_args.threshold, settings, model.labeltok_config, adapter_args.adapter_path)
    data_args.resolve_defaults(settings)
    texts = _texts_to_classify(data_args, predict_args)
    config = model.labeltok_config
    tokenizer = model.tokenizer
    max_length = fit_max_length(data_args.max_seq_length, model, tokenizer)
    tokenized = tokenize_splits(
        {"predict": datasets.Dataset.from_dict({"text": texts})},
        tokenizer,
        config,
        "text",
        None,
        max_length,
        training_args,
    )
    logits = make_trainer(model, training_args, tokenizer).predict(tokenized["predict"]).predictions
    rows = prediction_rows(texts, logits, config.labels, thresholds)
    if training_args.distributed_state.is_main_process:
        write_predictions(rows, output_file)
        if predict_args.texts:
            for row in rows:
                chosen = row.get("label", row.get("labels"))
                print(f"[labeltok] {chosen}\t{row.get('score', '')}\t{row['text'][:80]}", flush=True)
        print(f"[labeltok] {len(rows)} prediction(s) written to {output_file}", flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parses the arguments (flags and `--config`) and predicts."""
    arguments = parse_recipe_args(PREDICT_ARGUMENTS, argv, prog="labeltok predict", description=DESCRIPTION)
    return predict(*arguments)


def cli(argv: Sequence[str] | None = None) -> int:
    """`main` with input errors reported as one line and exit status 1."""
    return run_cli(main, argv)
