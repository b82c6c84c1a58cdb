"""Offline classification metrics (no hub download) for single- and multi-label tasks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .decoding import decide, probabilities_from_logits, resolve_thresholds


def predictions_from_logits(
    logits: np.ndarray, multi_label: bool, threshold: float | Sequence[float] = 0.5
) -> np.ndarray:
    """Turns logits into predictions (`decoding.probabilities_from_logits`, then `decoding.decide`).

    Args:
        logits: `[num_rows, num_labels]` logits.
        multi_label: sigmoid and a threshold per label instead of an argmax.
        threshold: probability threshold(s) for multi-label, in [0, 1]; one value or one per label.

    Returns:
        `[num_rows]` class ids (single-label) or `[num_rows, num_labels]` 0/1 ints (multi-label).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if not multi_label:
        return decide(logits, False)
    labels = [str(index) for index in range(logits.shape[-1])]
    thresholds = resolve_thresholds(threshold, labels, source="threshold")
    return decide(probabilities_from_logits(logits, True), True, thresholds)


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


def ranking_metrics(
    scores: np.ndarray, labels: np.ndarray, multi_label: bool, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Precision@k and recall@k of the labels ranked by score, for tasks with many labels.

    Each row's labels are ranked by score, highest first (ties go to the lower label index). With `top_k` the k
    labels ranked first and `Y` the row's true labels:

    - `precision_at_{k}` = mean over rows of |top_k ∩ Y| / k: the fraction of the k best-scored labels that are
      true (P@k of extreme multi-label classification). A row with fewer than k true labels cannot reach 1.
    - `recall_at_{k}` = mean over rows with at least one true label of |top_k ∩ Y| / |Y|.

    A single-label row has one true label, so `precision_at_1` is the accuracy and `recall_at_{k}` the top-k
    accuracy (the true class is among the k best; scikit-learn's `top_k_accuracy_score`), the meaningful number
    there; `precision_at_{k}` is that divided by k.

    Args:
        scores: `[num_rows, num_labels]` logits or probabilities (any monotone transform ranks alike).
        labels: `[num_rows]` class ids (single-label) or `[num_rows, num_labels]` 0/1 multi-hot rows.
        multi_label: whether `labels` is multi-hot.
        ks: the cut-offs, each between 1 and `num_labels`.

    Returns:
        `{"precision_at_{k}": ..., "recall_at_{k}": ...}` for every k in `ks`.

    Raises:
        ValueError: a k outside 1..num_labels, or labels whose shape does not match the scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    num_rows, num_labels = scores.shape
    bad = [k for k in ks if not 1 <= k <= num_labels]
    if bad:
        raise ValueError(f"ks must lie between 1 and the number of labels ({num_labels}); got {bad}. Drop them.")
    if multi_label:
        truth = np.asarray(labels) > 0.5  # [num_rows, num_labels]
    else:
        ids = np.asarray(labels, dtype=np.int64).reshape(-1)
        truth = np.zeros((num_rows, num_labels), dtype=bool)
        truth[np.arange(ids.shape[0]), ids] = True
    if truth.shape != scores.shape:
        raise ValueError(
            f"labels of shape {np.shape(labels)} do not match scores of shape {scores.shape}: pass class ids "
            "[num_rows] with multi_label=False, or multi-hot rows [num_rows, num_labels] with multi_label=True."
        )
    order = np.argsort(-scores, axis=1, kind="stable")[:, : max(ks)]  # [num_rows, max(ks)] label ids, best first
    hits = np.cumsum(np.take_along_axis(truth, order, axis=1), axis=1)  # [num_rows, max(ks)] true labels in top k
    positives = truth.sum(axis=1)
    has_positive = positives > 0
    metrics = {}
    for k in ks:
        metrics[f"precision_at_{k}"] = float(hits[:, k - 1].mean() / k)
        recall = hits[has_positive, k - 1] / positives[has_positive]
        metrics[f"recall_at_{k}"] = float(recall.mean()) if recall.size else float("nan")
    return metrics
