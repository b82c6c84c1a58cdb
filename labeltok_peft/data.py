"""Checking and encoding texts and labels for a label-token adapter."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

from .config import LabelTokConfig


def validate_texts(texts: Sequence[Any], first_row: int = 0) -> list[str]:
    """Checks that every text is a non-empty string.

    Args:
        texts: the texts.
        first_row: row number of `texts[0]` in the caller's data, so errors name the right row.

    Returns:
        The texts as a list.

    Raises:
        TypeError: a text is not a string.
        ValueError: a text is empty or whitespace only.
    """
    if isinstance(texts, str):
        raise TypeError("Expected a list of texts, got a single string; wrap it in a list.")
    texts = list(texts)
    for offset, text in enumerate(texts):
        row = first_row + offset
        if not isinstance(text, str):
            raise TypeError(f"Text in row {row} is a {type(text).__name__} ({text!r}), not a string.")
        if not text.strip():
            raise ValueError(f"Text in row {row} is empty or whitespace only; remove the row or give it text.")
    return texts


def is_integral(value: Any) -> bool:
    """An integer, or a float with an integer value (`3.0`, as readers that upcast a column produce); not a bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer()


def label_value_kind(value: Any) -> str:
    """How one raw label value is written: the one set of rules for the library and the command line.

    Returns:
        `"missing"` (None or NaN), `"empty"` (a blank string), `"name"` (a string; a bool reads as its name),
        `"id"` (an integer, or an integer-valued float), `"empty_list"`, `"name_list"`, `"number_list"` (numbers or
        bools: ids or multi-hot, see `number_list_format`), or `"invalid"` (fractional numbers, mappings, lists
        mixing names and numbers, nested lists).
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    if isinstance(value, str):
        return "name" if value.strip() else "empty"
    if isinstance(value, bool):
        return "name"
    if is_integral(value):
        return "id"
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if not value:
            return "empty_list"
        if all(isinstance(item, str) and item.strip() for item in value):
            return "name_list"
        if all(isinstance(item, numbers.Real) for item in value):
            return "number_list"
    return "invalid"


def number_list_format(rows: Sequence[Sequence[Any]], num_labels: int | None = None) -> str:
    """How lists of numbers are read: as label ids or as multi-hot vectors. The one rule for rows and columns.

    - A value outside [0, 1] can only be an id: the lists are ids (all values must then be integers).
    - A fractional value, a float or a bool is never an id: the lists are multi-hot.
    - Otherwise (integer zeros and ones) they are multi-hot when every list has the width of the label set (given
      by `num_labels`, else by the lists themselves when all have one width of at least 2), else ids. With a label
      set of 2 that reads both ways (`[0, 1]`: both labels, or the second one), which is `"ambiguous"`.

    Args:
        rows: the lists (one row, or a whole column).
        num_labels: the size of the label set when known.

    Returns:
        `"ids"`, `"multi_hot"`, `"ambiguous"` or `"invalid"` (numbers outside [0, 1] that are not all integers).
    """
    flat = [item for row in rows for item in row]
    if any(not 0.0 <= float(item) <= 1.0 for item in flat):
        return "ids" if all(is_integral(item) for item in flat) else "invalid"
    if any(isinstance(item, (float, bool)) or not is_integral(item) for item in flat):
        return "multi_hot"
    widths = {len(row) for row in rows}
    width = num_labels if num_labels is not None else (min(widths) if len(widths) == 1 and min(widths) >= 2 else None)
    if width is None or widths != {width}:
        return "ids"
    return "ambiguous" if width == 2 else "multi_hot"


def _label_id(value: Any, config: LabelTokConfig, row: int) -> int:
    kind = label_value_kind(value)
    if kind in ("missing", "empty"):
        raise ValueError(f"Row {row} has no label ({value!r}); every training row needs a label.")
    if kind == "name":
        value = str(value)
        label_ids = config.label2id
        if value not in label_ids:
            raise ValueError(
                f"Row {row} has label {value!r}, which is not one of the adapter's labels {config.labels}. "
                "Add it to LabelTokConfig.labels or drop the rows that carry it."
            )
        return label_ids[value]
    if kind == "id":
        if not 0 <= int(value) < config.num_labels:
            raise ValueError(
                f"Row {row} has label id {value}, outside 0..{config.num_labels - 1} for the adapter's "
                f"{config.num_labels} labels."
            )
        return int(value)
    raise TypeError(f"Row {row} has label {value!r} of type {type(value).__name__}; expected a label name or id.")


# How a multi-label row of integers is read when that cannot be told from the row itself.
MULTI_LABEL_LIST_FORMATS = ("ids", "multi_hot")


def encode_label(value: Any, config: LabelTokConfig, row: int = 0, list_format: str | None = None) -> int | list[float]:
    """Encodes one row's label: a class id (single-label) or a multi-hot float list (multi-label).

    Single-label rows take a label name, a label id, or a one-element list of either. Multi-label rows take a list
    of label names or ids, a single name or id, or a multi-hot list of `num_labels` numbers. Values are read by
    `label_value_kind` and lists of numbers by `number_list_format`, the rules the command line uses too.

    With two labels, a list of two integer zeros and ones reads both ways (`[0, 1]` is "both labels" as ids and
    "the second label" as multi-hot), so it is refused unless `list_format` says which.

    Args:
        value: the row's label.
        config: the adapter config (labels and problem type).
        row: the row's number in the caller's data, for messages.
        list_format: `"ids"` or `"multi_hot"` to fix how integer lists are read; `None` infers it per row.

    Returns:
        A class id (single-label) or a `[num_labels]` list of floats (multi-label).
    """
    if list_format not in (None, *MULTI_LABEL_LIST_FORMATS):
        raise ValueError(f"list_format must be one of {MULTI_LABEL_LIST_FORMATS} or None; got {list_format!r}.")
    kind = label_value_kind(value)
    if kind in ("missing", "empty"):
        raise ValueError(f"Row {row} has no label ({value!r}); every training row needs a label.")
    is_list = kind.endswith("list") or (kind == "invalid" and isinstance(value, (list, tuple)))
    if is_list:
        value = list(value.tolist() if hasattr(value, "tolist") else value)
    if not config.is_multi_label:
        if is_list:
            if len(value) != 1:
                raise ValueError(
                    f"Row {row} has {len(value)} labels {value!r}, but the adapter is single-label. Use "
                    "problem_type='multi_label_classification' for rows with several labels."
                )
            value = value[0]
        return _label_id(value, config, row)
    if not is_list:
        value = [value]
    if kind == "number_list" and _reads_as_multi_hot(value, config, row, list_format):
        if len(value) != config.num_labels or not all(0.0 <= float(v) <= 1.0 for v in value):
            raise ValueError(
                f"Row {row} has a multi-hot label {value!r} of width {len(value)}, but the adapter has "
                f"{config.num_labels} labels; give one value in [0, 1] per label, in the order of "
                "LabelTokConfig.labels."
            )
        return [float(v) for v in value]
    multi_hot = [0.0] * config.num_labels
    for item in value:
        multi_hot[_label_id(item, config, row)] = 1.0
    return multi_hot


def _reads_as_multi_hot(value: list, config: LabelTokConfig, row: int, list_format: str | None) -> bool:
    if list_format is not None:
        return list_format == "multi_hot"
    reading = number_list_format([value], config.num_labels)
    if reading == "ambiguous":
        as_ids = [config.labels[v] for v in value]
        as_multi_hot = [label for label, v in zip(config.labels, value, strict=True) if v]
        raise ValueError(
            f"Row {row} has label {value!r}, which reads two ways for a 2-label multi-label adapter: as label ids "
            f"({as_ids}) or as a multi-hot vector ({as_multi_hot}). Write label names, or floats for multi-hot "
            "([0.0, 1.0]), or pass list_format='ids' or list_format='multi_hot'."
        )
    return reading == "multi_hot"


def encode_labels(
    values: Sequence[Any], config: LabelTokConfig, first_row: int = 0, list_format: str | None = None
) -> list[int | list[float]]:
    """Encodes a column of labels with `encode_label`, naming the first bad row in errors."""
    return [encode_label(value, config, first_row + offset, list_format) for offset, value in enumerate(values)]


def check_labels_tensor(labels: torch.Tensor, num_labels: int, multi_label: bool) -> torch.Tensor:
    """Checks a batch of encoded labels before the loss.

    Args:
        labels: `[batch]` class ids (single-label) or `[batch, num_labels]` multi-hot values (multi-label).
        num_labels: the adapter's label count.
        multi_label: whether the adapter is multi-label.

    Returns:
        The labels (long for single-label).
    """
    if multi_label:
        if labels.dim() != 2 or labels.shape[1] != num_labels:
            raise ValueError(
                f"Multi-label labels must be multi-hot with shape [batch, {num_labels}]; got {tuple(labels.shape)}. "
                "Encode each row with labeltok_peft.encode_label."
            )
        return labels
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(
            f"Single-label labels must be class ids with shape [batch]; got {labels.dtype} {tuple(labels.shape)}. "
            "For multi-hot labels use problem_type='multi_label_classification'."
        )
    if bool(((labels < 0) | (labels >= num_labels)).any()):
        raise ValueError(f"Label ids must lie in 0..{num_labels - 1}; got {labels.tolist()}.")
    return labels.long()


def tokenize_function(
    tokenizer,
    config: LabelTokConfig,
    text_column: str,
    label_column: str | None,
    max_length: int,
    list_format: str | None = None,
):
    """Returns a batched `datasets.Dataset.map` function that checks, tokenizes and encodes a split.

    Args:
        tokenizer: the backbone's tokenizer.
        config: the adapter config (labels and problem type).
        text_column: column holding the texts.
        label_column: column holding the labels, or `None` for unlabeled data.
        max_length: texts are truncated to this many tokens (leave room for the labels; see
            `LabelTokModel.max_text_length`).
        list_format: how multi-label integer lists are read (`"ids"` or `"multi_hot"`; see `encode_label`).
    """

    def tokenize(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        if text_column not in batch:
            raise KeyError(f"No text column {text_column!r}; the data has columns {sorted(batch)}.")
        first_row = indices[0] if indices else 0
        texts = validate_texts(batch[text_column], first_row)
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
        if label_column is not None:
            if label_column not in batch:
                raise KeyError(f"No label column {label_column!r}; the data has columns {sorted(batch)}.")
            encoded["labels"] = encode_labels(batch[label_column], config, first_row, list_format)
        return dict(encoded)

    return tokenize
