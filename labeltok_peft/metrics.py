"""Offline classification metrics (no hub download) for single- and multi-label tasks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def predictions_from_logits(
    logits: np.ndarray, multi_label: bool, threshold: float | Sequence[float] = 0.5
) -> np.ndarray:
    """Turns logits into predictions.

    Args:
        logits: `[num_rows, num_labels]` logits.
        multi_label: sigmoid and a threshold per label instead of an argmax.
        threshold: probability threshold(s) for multi-label; one value or one per label.

    Returns:
        `[num_rows]` class ids (single-label) or `[num_rows, num_labels]` 0/1 ints (multi-label).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if not multi_label:
        return logits.argmax(axis=-1)
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    return (probabilities >= np.asarray(threshold, dtype=np.float64)).astype(np.int64)


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, multi_label: bool, threshold: float | Sequence[float] = 0.5
) -> dict[str, float]:
    """Accuracy, macro-F1 and micro-F1 (multi-label: accuracy is subset accuracy, also reported as such).

    Multi-label tasks also get `macro_average_precision`: the mean over labels (those with at least one positive
    row) of the area under each label's precision-recall curve. It needs no threshold, so it still ranks models
    whose probabilities all sit below the threshold, as rare labels early in training do.

    Args:
        logits: `[num_rows, num_labels]` logits.
        labels: `[num_rows]` class ids or `[num_rows, num_labels]` multi-hot values.
        multi_label: whether the task is multi-label.
        threshold: probability threshold(s) for multi-label.
    """
    from sklearn.metrics import accuracy_score, f1_score

    predictions = predictions_from_logits(logits, multi_label, threshold)
    labels = np.asarray(labels)
    if multi_label:
        labels = (labels >= 0.5).astype(np.int64)
        subset_accuracy = float(accuracy_score(labels, predictions))
        return {
            "accuracy": subset_accuracy,
            "subset_accuracy": subset_accuracy,
            "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
            "micro_f1": float(f1_score(labels, predictions, average="micro", zero_division=0)),
            "macro_average_precision": _macro_average_precision(np.asarray(logits, dtype=np.float64), labels),
        }
    label_ids = list(range(np.asarray(logits).shape[-1]))
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=label_ids, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(labels, predictions, labels=label_ids, average="micro", zero_division=0)),
    }


def _macro_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean average precision over the labels that have a positive row; `scores` `[rows, labels]` rank rows."""
    from sklearn.metrics import average_precision_score

    present = labels.sum(axis=0) > 0
    if not present.any():
        return float("nan")
    return float(average_precision_score(labels[:, present], scores[:, present], average="macro"))


def make_compute_metrics(multi_label: bool, threshold: float | Sequence[float] = 0.5) -> Callable:
    """Returns a `compute_metrics` function for `transformers.Trainer`."""

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        if isinstance(logits, tuple):
            logits = logits[0]
        return classification_metrics(logits, eval_prediction.label_ids, multi_label, threshold)

    return compute_metrics
