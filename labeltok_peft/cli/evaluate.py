"""`labeltok evaluate`: score a trained adapter on labelled data and write metrics and a report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from .arguments import EVALUATE_ARGUMENTS, parse_recipe_args
from .common import (
    adapter_thresholds,
    fit_max_length,
    format_metrics,
    guard_output_dir,
    load_adapter_model,
    make_trainer,
    run_cli,
    setup_logging,
    tokenize_splits,
    wait_for_everyone,
)
from .evaluation import evaluate_splits, write_run_report

logger = logging.getLogger("labeltok_peft")

DESCRIPTION = """\
Evaluate a trained label-token adapter on labelled data (validation and/or test).

  labeltok evaluate --adapter_path my_adapter --test_file test.csv
  labeltok evaluate --adapter_path outputs/bbc_news --dataset_name bbc_news

The backbone, text/label columns and max length default to those recorded at training. Writes into
--output_dir (default: <adapter_path>/evaluation): eval_results.json and/or test_results.json, report.md, plots.
"""


def evaluation_output_dir(training_args, adapter_path: str, sub_folder: str) -> Path:
    """`--output_dir` when given, else a sub-folder of the adapter (so the adapter's own files stay untouched)."""
    return Path(training_args.output_dir) if training_args.output_dir_given else Path(adapter_path) / sub_folder


def evaluate(model_args, data_args, adapter_args, training_args) -> dict[str, dict[str, float]]:
    """Runs the evaluation; returns the metrics by prefix (`eval` for validation data, `test`)."""
    from .dataset_loading import load_splits, prepare_splits

    setup_logging(training_args)
    if not adapter_args.adapter_path:
        raise ValueError("--adapter_path is required: the folder written by `labeltok train` (its --output_dir).")
    output_dir = evaluation_output_dir(training_args, adapter_args.adapter_path, "evaluation")
    guard_output_dir(output_dir, training_args.overwrite_output_dir)
    wait_for_everyone(training_args)
    training_args.output_dir = str(output_dir)

    model, settings = load_adapter_model(model_args, adapter_args)
    data_args.resolve_defaults(settings)
    config = model.labeltok_config
    thresholds = adapter_thresholds(adapter_args.threshold, settings, config, adapter_args.adapter_path)
    raw = load_splits(
        None,
        data_args.validation_file,
        data_args.test_file,
        data_args.dataset_name if not (data_args.validation_file or data_args.test_file) else None,
        data_args.dataset_config_name,
        model_args.cache_dir,
        text_column=data_args.text_column_name,
    )
    raw.pop("train", None)
    if not raw:
        raise ValueError("Nothing to evaluate: pass --validation_file or --test_file (or a --dataset_name with them).")
    data = prepare_splits(
        raw,
        text_column=data_args.text_column_name,
        label_column=data_args.label_column_name,
        labels=config.labels,
        problem_type=config.problem_type,
        label_separator=data_args.label_separator,
        validation_split_percentage=0,
        drop_unknown_labels=data_args.drop_unknown_labels,
        labels_from=f"the adapter in {adapter_args.adapter_path}",
    )
    splits = data.splits
    if data_args.max_eval_samples is not None:
        for name in list(splits):
            splits[name] = splits[name].select(range(min(data_args.max_eval_samples, len(splits[name]))))
    tokenizer = model.tokenizer
    max_length = fit_max_length(data_args.max_seq_length, model, tokenizer)
    tokenized = tokenize_splits(
        splits, tokenizer, config, data_args.text_column_name, data_args.label_column_name, max_length, training_args
    )

    trainer = make_trainer(model, training_args, tokenizer)
    reports, results, thresholds = evaluate_splits(trainer, tokenized, config.labels, config.is_multi_label, thresholds)
    if trainer.is_world_process_zero():
        notes = [f"- adapter: `{adapter_args.adapter_path}`; backbone: `{model_args.model_name_or_path}`"]
        if thresholds is not None:
            notes.append(f"- multi-label thresholds: {dict(zip(config.labels, thresholds, strict=True))}")
        report = write_run_report(reports, output_dir, "Label-token adapter: evaluation report", notes)
        for prefix, metrics in results.items():
            keys = [f"{prefix}_{key}" for key in ("accuracy", "macro_f1", "micro_f1")]
            print(f"[labeltok] {prefix}: {format_metrics(metrics, keys)}", flush=True)
        if report:
            print(f"[labeltok] report: {report}", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Parses the arguments (flags and `--config`) and evaluates."""
    arguments = parse_recipe_args(EVALUATE_ARGUMENTS, argv, prog="labeltok evaluate", description=DESCRIPTION)
    return evaluate(*arguments)


def cli(argv: Sequence[str] | None = None) -> int:
    """`main` with input errors reported as one line and exit status 1."""
    return run_cli(main, argv)
