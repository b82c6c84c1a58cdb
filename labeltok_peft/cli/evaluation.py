"""Scoring labelled splits with a Trainer: metrics files, tuned multi-label thresholds and the report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report import SplitReport, build_split_report, tune_thresholds, write_report

logger = logging.getLogger("labeltok_peft")

# Metric-file prefix per split, as transformers' examples name them (eval_results.json, test_results.json).
SPLIT_PREFIXES = {"validation": "eval", "test": "test"}


def evaluate_splits(
    trainer,
    datasets: dict[str, Any],
    labels: list[str],
    multi_label: bool,
    thresholds: Sequence[float] | None = None,
    tune_on: str | None = None,
) -> tuple[list[SplitReport], dict[str, dict[str, float]], list[float] | None]:
    """Predicts every labelled `validation`/`test` split once and writes `<prefix>_results.json` for each.

    Multi-label metrics (`eval_accuracy`, `eval_macro_f1`, ...) use threshold 0.5 on every label. With `tune_on`,
    per-label thresholds are tuned on that split and later splits are also scored with them (`test_tuned_*`
    metrics, an honest estimate); the tuned split's own `*_tuned_*` metrics are optimistic.

    Args:
        trainer: a `transformers.Trainer` holding the model.
        datasets: tokenized splits by name; splits without `labels` are skipped.
        labels: label names in logit order.
        multi_label: whether the task is multi-label.
        thresholds: per-label thresholds to score with (multi-label), for example from training.
        tune_on: split on which to tune thresholds (multi-label; ignored when `thresholds` are given).

    Returns:
        `(reports, metrics by prefix, thresholds used)`.
    """
    reports, results = [], {}
    thresholds = list(thresholds) if thresholds is not None else None
    for split, prefix in SPLIT_PREFIXES.items():
        dataset = datasets.get(split)
        if dataset is None or "labels" not in dataset.column_names:
            continue
        output = trainer.predict(dataset, metric_key_prefix=prefix)
        metrics = dict(output.metrics)
        if multi_label and thresholds is None and split == tune_on:
            thresholds = tune_thresholds(output.predictions, output.label_ids)
            logger.info("Per-label thresholds tuned on %s: %s", split, dict(zip(labels, thresholds, strict=True)))
        report = build_split_report(split, output.predictions, output.label_ids, labels, multi_label, thresholds)
        if report.metrics_at_half is not None:
            metrics.update({f"{prefix}_tuned_{name}": value for name, value in report.metrics.items()})
        trainer.log_metrics(prefix, metrics)
        trainer.save_metrics(prefix, metrics)
        reports.append(report)
        results[prefix] = metrics
    return reports, results, thresholds


def write_run_report(
    reports: list[SplitReport], output_dir: str | Path, title: str, notes: Sequence[str]
) -> Path | None:
    """Writes the markdown report and plots; logs and returns its path (`None` when nothing was scored)."""
    if not reports:
        logger.warning("No labelled validation or test data: no report written.")
        return None
    path = write_report(reports, output_dir, title, notes)
    logger.info("Report written to %s", path)
    return path
