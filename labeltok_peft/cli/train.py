"""`labeltok train`: train a label-token adapter, save it, evaluate it and write a report.

Reads like a script: set up (arguments, data, backbone, adapter), train, save, evaluate. `recipes/train.py` and the
`labeltok train` console command both run `main`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from .arguments import TRAIN_ARGUMENTS, parse_recipe_args
from .common import (
    fit_max_length,
    format_metrics,
    guard_output_dir,
    load_backbone_from_args,
    make_trainer,
    run_cli,
    setup_logging,
    stored_model_name,
    tokenize_splits,
    wait_for_everyone,
    write_recipe_settings,
)
from .evaluation import evaluate_splits, write_run_report
from .output_lock import output_dir_lock

logger = logging.getLogger("labeltok_peft")

DESCRIPTION = """\
Train a label-token adapter on a frozen backbone, then save it, evaluate it and write a report.

Quick start (offline demo: BBC News, all-MiniLM-L6-v2, a few minutes on a laptop CPU):
  labeltok train --config recipes/configs/bbc_news.yaml

Your own data (CSV/TSV/JSON/JSONL/parquet with a 'text' and a 'label' column):
  labeltok train --model_name_or_path all-MiniLM-L6-v2 --train_file train.csv \\
      --validation_file dev.csv --output_dir my_adapter --num_train_epochs 10   # 10: measured best (BENCHMARKS.md)

Writes into --output_dir: the adapter (labeltok_config.json, safetensors), labeltok_recipe.json,
eval_results.json (eval_accuracy, eval_macro_f1, eval_micro_f1), report.md with PNG plots.
Several devices: accelerate launch recipes/train.py ... (see docs/distributed.md).
Any flag can also come from --config file.yaml; flags on the command line win.
"""


def train(model_args, data_args, labeltok_args, training_args) -> dict[str, dict[str, float]]:
    """Runs the whole training job; returns the evaluation metrics by prefix (`eval`, `test`).

    Raises:
        OutputDirLockedError: another run is writing into the same --output_dir.
        NonFiniteTrainingError: the loss or the weights became NaN or inf; no adapter is written.
    """
    started = time.perf_counter()
    setup_logging(training_args)

    # ------------------------------------------------------------------ setup: check before anything is written
    if not training_args.output_dir_given:
        raise ValueError("--output_dir is required: the folder the trained adapter is written to.")
    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required (for example all-MiniLM-L6-v2).")
    output_dir = Path(training_args.output_dir)
    # One run per folder: a second `labeltok train` into the same --output_dir is refused while this one runs.
    with output_dir_lock(output_dir, enabled=training_args.distributed_state.is_main_process):
        training_args.resume_from_checkpoint = resume_target(training_args.resume_from_checkpoint)
        resuming = training_args.resume_from_checkpoint is not None
        guard_output_dir(output_dir, training_args.overwrite_output_dir or resuming)
        # Every process has checked the folder before any process writes to it.
        wait_for_everyone(training_args)
        return _train(model_args, data_args, labeltok_args, training_args, output_dir, started)


def resume_target(value: str | bool | None) -> str | bool | None:
    """`--resume_from_checkpoint` as `Trainer.train` takes it: `true` means the newest `checkpoint-N` in
    --output_dir (`True`), `false` or empty means no resuming (`None`), anything else is a checkpoint folder."""
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0", ""):
        return True if value.strip().lower() in ("true", "yes", "1") else None
    return value or None


def _train(model_args, data_args, labeltok_args, training_args, output_dir: Path, started: float):
    """The training job proper, run while the output folder is locked."""
    from transformers import set_seed

    from ..config import LabelTokConfig
    from ..model import get_labeltok_model
    from .dataset_loading import load_splits, prepare_splits
    from .label_descriptions import check_label_descriptions, read_label_descriptions

    set_seed(training_args.seed)
    data_args.resolve_defaults()
    # A bad descriptions file fails before the data is read.
    descriptions = None
    if labeltok_args.label_descriptions is not None:
        descriptions = read_label_descriptions(labeltok_args.label_descriptions)

    raw = load_splits(
        data_args.train_file,
        data_args.validation_file,
        data_args.test_file,
        data_args.dataset_name,
        data_args.dataset_config_name,
        model_args.cache_dir,
        text_column=data_args.text_column_name,
    )
    if "train" not in raw:
        raise ValueError(f"No training data: pass --train_file (the data given has splits {list(raw)}).")
    data = prepare_splits(
        raw,
        text_column=data_args.text_column_name,
        label_column=data_args.label_column_name,
        labels=labeltok_args.labels,
        problem_type=labeltok_args.problem_type,
        label_separator=data_args.label_separator,
        validation_split_percentage=data_args.validation_split_percentage,
        drop_unknown_labels=data_args.drop_unknown_labels,
        seed=training_args.seed,
        labels_from="--labels" if labeltok_args.labels else "the training data",
    )
    splits = data.splits
    if data_args.max_train_samples is not None:
        count = min(data_args.max_train_samples, len(splits["train"]))
        splits["train"] = splits["train"].shuffle(seed=training_args.seed).select(range(count))
    for name in ("validation", "test"):
        if data_args.max_eval_samples is not None and name in splits:
            splits[name] = splits[name].select(range(min(data_args.max_eval_samples, len(splits[name]))))
    logger.info(
        "%d labels (%s): %s; rows: %s",
        len(data.labels),
        data.problem_type.value,
        data.labels,
        {name: len(split) for name, split in splits.items()},
    )

    if descriptions is not None:  # checked against the label set as soon as it is known
        descriptions = check_label_descriptions(descriptions, data.labels, labeltok_args.label_init)

    backbone, tokenizer = load_backbone_from_args(model_args)
    if model_args.precision in ("nf4", "int8"):
        from ..quantization import prepare_kbit_training

        prepare_kbit_training(backbone, gradient_checkpointing=training_args.gradient_checkpointing)
    config = LabelTokConfig(
        labels=data.labels,
        problem_type=data.problem_type,
        label_init=labeltok_args.label_init,
        label_descriptions=descriptions,
        placement=labeltok_args.placement,
        label_attention=labeltok_args.label_attention,
        label_positions=labeltok_args.label_positions,
        label_chunk_size=labeltok_args.label_chunk_size,
        label_layers=labeltok_args.label_layers_value(),
        label_sample_size=labeltok_args.label_sample_size,
        label_anchor_weight=labeltok_args.label_anchor_weight,
        per_label_bias=labeltok_args.per_label_bias,
        head_type=labeltok_args.head_type,
        lora=labeltok_args.lora_kwargs(),
        init_seed=training_args.seed,
    )
    model = get_labeltok_model(backbone, config, tokenizer=tokenizer)
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("Trainable parameters: %s of %s (%.3f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    max_length = fit_max_length(data_args.max_seq_length, model, tokenizer)
    label_column = data_args.label_column_name
    tokenized = tokenize_splits(
        splits, tokenizer, config, data_args.text_column_name, label_column, max_length, training_args
    )

    # ------------------------------------------------------------------ train
    trainer = make_trainer(
        model,
        training_args,
        tokenizer,
        tokenized["train"],
        tokenized.get("validation"),
        label_learning_rate=labeltok_args.label_learning_rate,
        head_learning_rate=labeltok_args.head_learning_rate,
    )
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()

    # ------------------------------------------------------------------ save (before evaluating: keep the training)
    dataset_name = data_args.dataset_name or (Path(data_args.train_file).name if data_args.train_file else None)
    settings = {
        "model_name_or_path": stored_model_name(model_args),
        "precision": model_args.precision or "fp32",
        "text_column_name": data_args.text_column_name,
        "label_column_name": label_column,
        "label_separator": data_args.label_separator,
        "max_seq_length": max_length,
        "thresholds": None,
    }
    if trainer.is_world_process_zero():
        model.save_pretrained(output_dir, dataset_name=dataset_name)
        write_recipe_settings(output_dir, settings)

    # ------------------------------------------------------------------ evaluate and report
    reports, results, thresholds = evaluate_splits(
        trainer, tokenized, data.labels, config.is_multi_label, tune_on="validation"
    )
    if trainer.is_world_process_zero():
        headline = {key: value for key, value in results.get("eval", {}).items() if key.endswith(("accuracy", "_f1"))}
        model.save_pretrained(output_dir, dataset_name=dataset_name, metrics=headline or None)
        # Keyed by label name, so they still apply to the labels that keep them after add_labels/remove_labels.
        by_label = dict(zip(data.labels, thresholds, strict=True)) if thresholds is not None else None
        write_recipe_settings(output_dir, dict(settings, thresholds=by_label))
        minutes = (time.perf_counter() - started) / 60
        notes = [
            f"- backbone: `{model_args.model_name_or_path}`; data: `{dataset_name}`",
            f"- {len(data.labels)} labels, {data.problem_type.value}; train rows: {len(splits['train'])}",
            f"- trainable parameters: {trainable:,}; max text length: {max_length}; wall time: {minutes:.1f} min",
        ]
        report = write_run_report(reports, output_dir, "Label-token adapter: training report", notes)
        keys = ("accuracy", "macro_f1", "micro_f1")
        for prefix, metrics in results.items():
            print(f"[labeltok] {prefix}: {format_metrics(metrics, [f'{prefix}_{key}' for key in keys])}", flush=True)
        print(f"[labeltok] adapter saved to {output_dir}" + (f"; report: {report}" if report else ""), flush=True)
        print(f"[labeltok] wall time {minutes:.1f} min", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Parses the arguments (flags and `--config`) and trains."""
    arguments = parse_recipe_args(TRAIN_ARGUMENTS, argv, prog="labeltok train", description=DESCRIPTION)
    return train(*arguments)


def cli(argv: Sequence[str] | None = None) -> int:
    """`main` with input errors reported as one line and exit status 1."""
    return run_cli(main, argv)
