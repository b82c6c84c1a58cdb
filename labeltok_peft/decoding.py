"""From logits to decisions, in one place: probabilities, per-label thresholds, predicted labels, the text budget.

`LabelTokModel.predict`, the pipeline, `labeltok predict/evaluate/train` and the metrics all decode through these
functions, so a label can never be paired with another label's probability or threshold in one path only.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger("labeltok_peft")

DEFAULT_THRESHOLD = 0.5

ThresholdSpec = float | Sequence[float] | Mapping[str, float] | None


def probabilities_from_logits(logits: Any, multi_label: bool) -> np.ndarray:
    """Sigmoid (multi-label) or softmax (single-label) of `[num_rows, num_labels]` logits, as float64."""
    logits = np.asarray(logits, dtype=np.float64)
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _checked_threshold(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where} must be a number between 0 and 1; got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{where} must be a probability between 0 and 1; got {value!r}.")
    return value


def resolve_thresholds(threshold: ThresholdSpec, labels: Sequence[str], source: str = "threshold") -> list[float]:
    """One probability threshold per label, checked.

    Args:
        threshold: `None` (0.5 for every label), one number for every label, a list in label order, or a dict
            keyed by label name (labels it leaves out get 0.5).
        labels: the label names, in logit order.
        source: where the thresholds came from (a flag or a file), for messages.

    Returns:
        `[num_labels]` thresholds in `[0, 1]`.

    Raises:
        ValueError: a threshold outside `[0, 1]` or NaN, a list of the wrong length, unknown label names.
        TypeError: a threshold that is not a number.
    """
    labels = list(labels)
    if threshold is None:
        return [DEFAULT_THRESHOLD] * len(labels)
    if isinstance(threshold, Mapping):
        unknown = sorted(set(threshold) - set(labels), key=str)
        if unknown:
            raise ValueError(f"{source}: thresholds given for unknown labels {unknown}; known labels: {labels}.")
        return [_checked_threshold(threshold.get(label, DEFAULT_THRESHOLD), f"{source}[{label!r}]") for label in labels]
    if isinstance(threshold, (str, bytes)):
        raise TypeError(f"{source} must be a number, a list or a dict of numbers; got the string {threshold!r}.")
    if isinstance(threshold, Sequence) or (hasattr(threshold, "tolist") and np.ndim(threshold) == 1):
        values = list(threshold.tolist() if hasattr(threshold, "tolist") else threshold)
        if len(values) != len(labels):
            raise ValueError(f"{source}: got {len(values)} thresholds for {len(labels)} labels; give one per label.")
        return [_checked_threshold(value, f"{source}[{label!r}]") for label, value in zip(labels, values, strict=True)]
    return [_checked_threshold(threshold, source)] * len(labels)


def decide(probabilities: np.ndarray, multi_label: bool, thresholds: Sequence[float] | None = None) -> np.ndarray:
    """Predictions from `[num_rows, num_labels]` probabilities.

    Returns:
        `[num_rows]` class ids (single-label: argmax) or `[num_rows, num_labels]` 0/1 ints (multi-label: label `j`
        is chosen when its probability is at least `thresholds[j]`).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not multi_label:
        return probabilities.argmax(axis=-1)
    limits = np.asarray(DEFAULT_THRESHOLD if thresholds is None else thresholds, dtype=np.float64)
    return (probabilities >= limits).astype(np.int64)


def prediction_rows(
    probabilities: np.ndarray,
    labels: Sequence[str],
    multi_label: bool,
    thresholds: Sequence[float] | None = None,
    digits: int | None = None,
) -> list[dict[str, Any]]:
    """One dict per row. Single-label: `{"label", "score", "scores"}`; multi-label: `{"labels", "scores"}`.

    Args:
        probabilities: `[num_rows, num_labels]` probabilities (`probabilities_from_logits`).
        labels: label names in logit order.
        multi_label: whether the adapter is multi-label.
        thresholds: `[num_labels]` multi-label thresholds (`resolve_thresholds`); default 0.5 each.
        digits: round scores to this many digits (files), or keep them exact (`None`).
    """
    labels = list(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(labels):
        raise ValueError(f"Expected probabilities of shape [rows, {len(labels)}]; got {probabilities.shape}.")
    chosen = decide(probabilities, multi_label, thresholds)

    def score(value: float) -> float:
        return round(float(value), digits) if digits is not None else float(value)

    rows = []
    for row, decision in zip(probabilities, chosen, strict=True):
        scores = {label: score(p) for label, p in zip(labels, row, strict=True)}
        if multi_label:
            rows.append({"labels": [label for label, d in zip(labels, decision, strict=True) if d], "scores": scores})
        else:
            best = labels[int(decision)]
            rows.append({"label": best, "score": scores[best], "scores": scores})
    return rows


def resolve_max_length(
    model, requested: int | None, tokenizer=None, flag: str = "max_length", lower: bool = False
) -> int:
    """How many text tokens to truncate to: the one computation of the text budget beside the labels.

    The budget is `model.max_text_length()` (what the backbone's positions leave beside the adapter's labels; with
    `label_positions='shared'` all labels take one position, so any number of labels fits), further capped by the
    tokenizer's `model_max_length` (a limit on the text alone). Without a request, the default is the budget, at
    most 512.

    Args:
        model: a `LabelTokModel` with an active adapter.
        requested: the length asked for, or `None` for the default.
        tokenizer: the tokenizer, if its own limit should apply.
        flag: the argument or flag that gave `requested`, for messages.
        lower: lower a too-large request to the budget (with a warning) instead of refusing it.

    Raises:
        ValueError: a request below 1 (naming `flag`), or above the budget when `lower` is false.
    """
    limits = []
    if model.max_text_length() is not None:
        limits.append(model.max_text_length())
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:  # tokenizers without a limit report ~1e30
        limits.append(model_max)
    budget = min(limits) if limits else None
    if requested is None:
        return min(512, budget) if budget is not None else 512
    if isinstance(requested, bool) or not isinstance(requested, numbers.Integral) or requested < 1:
        raise ValueError(f"{flag} must be a positive number of tokens; got {requested!r}.")
    if budget is not None and budget < 1:
        raise ValueError(f"No room for text beside the labels (the backbone leaves {budget} positions).")
    if budget is not None and requested > budget:
        if not lower:
            raise ValueError(f"{flag}={requested} does not fit beside the labels; at most {budget} tokens do.")
        logger.warning("%s %d lowered to %d so the label tokens fit.", flag, requested, budget)
        return budget
    return int(requested)
