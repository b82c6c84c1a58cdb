"""Recognising how a label column is written, and inferring the label set and problem type from it.

A column holds one of five formats: label names (`"sport"`), integer ids (`3`), lists of names (`["sport", "tech"]`),
lists of ids (`[0, 3]`, as hub datasets with a `List(ClassLabel)` feature store them) or multi-hot vectors
(`[0, 1, 0, 1]`). Every column is normalised to label names (single-label: `str`; multi-label: `list[str]`) or, for
multi-hot, to float vectors, which `labeltok_peft.data.encode_label` then turns into training targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from ..config import ProblemType
from ..data import label_value_kind, number_list_format


class DataError(ValueError):
    """Input data that cannot be used as it is; the message names the file or split, the row and the fix."""


class LabelFormat(str, Enum):
    """How a label column is written."""

    NAME = "name"
    ID = "id"
    NAME_LIST = "name_list"
    ID_LIST = "id_list"
    MULTI_HOT = "multi_hot"

    @property
    def is_list(self) -> bool:
        return self in (LabelFormat.NAME_LIST, LabelFormat.ID_LIST, LabelFormat.MULTI_HOT)


_KIND_DESCRIPTIONS = {
    "name": "a label name",
    "id": "an integer id",
    "name_list": "a list of label names",
    "number_list": "a list of numbers",
    "empty_list": "an empty list",
}


def value_kind(value: Any, where: str) -> str:
    """Classifies one raw label value with the library's rules (`labeltok_peft.data.label_value_kind`).

    Returns:
        One of `"name"`, `"id"`, `"name_list"`, `"number_list"`, `"empty_list"`.

    Raises:
        DataError: a missing label, or a value that fits neither problem type (a fractional number, a mapping, a
            list mixing names and numbers, nested lists).
    """
    kind = label_value_kind(value)
    if kind == "missing":
        raise DataError(f"{where} has no label; give every row a label or remove the row.")
    if kind == "empty":
        raise DataError(f"{where} has an empty label; give every row a label or remove the row.")
    if kind == "invalid":
        raise DataError(
            f"{where} has label {value!r}, which fits neither single-label classification (one label name or "
            "integer id) nor multi-label classification (a list of label names or ids, or a multi-hot list of 0/1 "
            "values). Fractional numbers look like regression targets, which label tokens do not do."
        )
    return kind


def detect_format(values: Sequence[Any], where: str, class_names: list[str] | None = None) -> LabelFormat:
    """Finds the single format of a label column.

    Args:
        values: the raw labels of one split.
        where: what the column is, for messages (for example `"column 'label' of train.csv"`).
        class_names: names from a `ClassLabel` feature, if the column has one.

    Raises:
        DataError: missing or unusable labels, or several formats mixed in one column (naming a row of each).
    """
    first_row: dict[str, int] = {}
    for row, value in enumerate(values):
        kind = value_kind(value, f"Row {row} of {where}")
        first_row.setdefault(kind, row)
    kinds = set(first_row) - {"empty_list"}
    if len(kinds) > 1:
        described = "; ".join(
            f"row {row} holds {_KIND_DESCRIPTIONS[kind]}"
            for kind, row in sorted(first_row.items(), key=lambda item: item[1])
        )
        raise DataError(
            f"The labels in {where} mix formats ({described}). Use one format per column: label names, integer ids, "
            "lists of names or ids (multi-label), or multi-hot lists."
        )
    kind = next(iter(kinds), "name_list")
    if kind == "name":
        return LabelFormat.NAME
    if kind == "id":
        return LabelFormat.ID
    if kind == "name_list":
        return LabelFormat.NAME_LIST
    return _number_list_format(values, where, class_names)


def _number_list_format(values: Sequence[Any], where: str, class_names: list[str] | None) -> LabelFormat:
    if class_names is not None:
        return LabelFormat.ID_LIST
    reading = number_list_format([list(value) for value in values])
    if reading == "multi_hot":
        return LabelFormat.MULTI_HOT
    if reading == "ids":
        return LabelFormat.ID_LIST
    widths = sorted({len(value) for value in values})
    if reading == "ambiguous":
        raise DataError(
            f"The labels in {where} are lists of two integer zeros and ones, which read two ways: as label ids "
            "([0, 1]: labels 0 and 1) or as 2-label multi-hot vectors ([0, 1]: the second label). Write label names, "
            "or floats for multi-hot vectors ([0.0, 1.0])."
        )
    raise DataError(
        f"The labels in {where} are lists of numbers that are neither multi-hot vectors (one value in [0, 1] per "
        f"label, all rows the same width; widths seen: {widths}) nor lists of integer ids."
    )


def infer_label_set(values: Sequence[Any], label_format: LabelFormat, class_names: list[str] | None) -> list[str]:
    """The label set of a training column: `ClassLabel` names, else the sorted distinct labels.

    Names sort as strings; integer ids sort as numbers and become their decimal strings; multi-hot columns get
    `"0" ... "K-1"` (pass `--labels` to name them).
    """
    if class_names is not None:
        return list(class_names)
    if label_format == LabelFormat.MULTI_HOT:
        return [str(index) for index in range(len(values[0]))]
    if label_format == LabelFormat.NAME:
        return sorted({str(value) for value in values})
    if label_format == LabelFormat.NAME_LIST:
        return sorted({item for value in values for item in value})
    if label_format == LabelFormat.ID:
        return [str(value) for value in sorted({int(value) for value in values})]
    return [str(value) for value in sorted({int(item) for value in values for item in value})]


def infer_problem_type(label_format: LabelFormat, override: str | ProblemType | None) -> ProblemType:
    """Lists and multi-hot labels are multi-label, anything else single-label, unless overridden."""
    if override is not None:
        return ProblemType(override)
    return ProblemType.MULTI_LABEL if label_format.is_list else ProblemType.SINGLE_LABEL


def _id_to_name(value: Any, id_names: list[str] | None, where: str, match_names: bool) -> str:
    index = int(value)  # ids may arrive as integer-valued floats (3.0)
    if id_names is None or (match_names and str(index) in id_names):
        return str(index)
    if not 0 <= index < len(id_names):
        raise DataError(
            f"{where} has label id {index}, outside 0..{len(id_names) - 1} for the {len(id_names)} labels "
            f"{id_names}. Integer labels index into the label list (--labels)."
        )
    return id_names[index]


def to_label_names(
    value: Any, label_format: LabelFormat, id_names: list[str] | None, where: str, match_names: bool = False
) -> Any:
    """Normalises one raw label: a name (single format), a list of names, or a float vector (multi-hot).

    Args:
        value: the raw label.
        label_format: the column's format.
        id_names: names integer ids index into (`ClassLabel` names or `--labels`); `None` turns ids into their
            decimal strings.
        where: the row, for messages.
        match_names: an id whose decimal string is one of `id_names` maps to that name rather than indexing (for a
            given label set that was itself inferred from integer labels, such as an adapter's).
    """
    if label_format == LabelFormat.NAME:
        return str(value)
    if label_format == LabelFormat.ID:
        return _id_to_name(value, id_names, where, match_names)
    if label_format == LabelFormat.NAME_LIST:
        return list(value)
    if label_format == LabelFormat.ID_LIST:
        return [_id_to_name(item, id_names, where, match_names) for item in value]
    return [float(item) for item in value]


def row_label_names(normalised: Any, labels: list[str]) -> list[str]:
    """The label names of one normalised row (a multi-hot row lists the names of its non-zero entries)."""
    if isinstance(normalised, str):
        return [normalised]
    if normalised and not isinstance(normalised[0], str):
        return [label for label, weight in zip(labels, normalised, strict=True) if weight > 0]
    return list(normalised)


def fit_to_problem_type(normalised: Any, problem_type: ProblemType, labels: list[str], where: str) -> Any:
    """Reshapes a normalised label for the problem type: a single name (single-label) or a list (multi-label).

    Raises:
        DataError: a row with several (or no) labels under single-label classification.
    """
    if problem_type == ProblemType.MULTI_LABEL:
        return [normalised] if isinstance(normalised, str) else normalised
    if isinstance(normalised, str):
        return normalised
    names = row_label_names(normalised, labels)
    if len(names) != 1:
        raise DataError(
            f"{where} has {len(names)} labels {names}, but the problem type is single-label classification. Drop "
            "--problem_type single_label_classification (lists are multi-label) or give each row one label."
        )
    return names[0]
