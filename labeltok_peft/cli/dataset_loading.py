"""Loading classification data (local files, built-in offline datasets, the hub) and checking it before training.

`load_splits` reads the raw splits; `prepare_splits` checks the text and label columns, infers (or checks) the
label set and problem type, normalises the labels and makes a stratified validation split when none is given.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ProblemType
from ..data import validate_texts
from ..splits import stratified_split_indices
from .label_formats import (
    DataError,
    LabelFormat,
    detect_format,
    fit_to_problem_type,
    infer_label_set,
    infer_problem_type,
    row_label_names,
    to_label_names,
)

logger = logging.getLogger(__name__)

FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _load_bbc_news():
    import datasets

    from ..corpora import load_bbc_news

    splits = load_bbc_news()
    return datasets.DatasetDict({"train": splits["train"], "validation": splits["test"]})


# Datasets that install from package registries and load offline: name -> loader returning a DatasetDict.
BUILTIN_DATASETS: dict[str, Callable[[], Any]] = {"bbc_news": _load_bbc_news}


def load_data_file(path: str, flag: str, text_column: str | None = None):
    """Reads one CSV, TSV, JSON, JSONL or parquet file into a `datasets.Dataset`.

    Args:
        path: the file.
        flag: the option that named it (for messages), e.g. `"--train_file"`.
        text_column: a CSV/TSV column read as strings whatever it holds (so `0042` stays `0042`).

    Raises:
        DataError: the file does not exist, is a folder, cannot be read, is empty, has an unknown extension, cannot
            be parsed, or has no rows.
    """
    import datasets

    file = Path(path).expanduser()
    extension = file.suffix.lower()
    if not file.exists():
        raise DataError(f"{flag} {path!r} does not exist.")
    if file.is_dir():
        raise DataError(f"{flag} {path!r} is a folder; give a CSV, TSV, JSON, JSONL or parquet file.")
    if extension not in FILE_FORMATS:
        raise DataError(
            f"{flag} {path!r} has extension {extension or '(none)'!r}; use one of {', '.join(sorted(FILE_FORMATS))}."
        )
    if not os.access(file, os.R_OK):
        raise DataError(f"{flag} {path!r} is not readable (check its permissions).")
    if file.stat().st_size == 0:
        raise DataError(f"{flag} {path!r} is empty.")
    builder = FILE_FORMATS[extension]
    kwargs = {}
    if builder == "csv":
        # pandas reads NA, None, null, n/a, ... as missing by default, so a label written "None" would be lost:
        # only a truly empty cell is missing.
        kwargs.update(keep_default_na=False, na_values=[""])
        if extension == ".tsv":
            kwargs["delimiter"] = "\t"
        if text_column is not None:
            kwargs["converters"] = {text_column: str}
    try:
        dataset = datasets.load_dataset(builder, data_files={"data": str(file)}, split="data", **kwargs)
    except Exception as error:  # datasets wraps parser errors in DatasetGenerationError; the cause says what broke
        if "corresponds to no data" in str(error):  # how datasets reports a file without rows
            raise DataError(f"{flag} {path!r} has no rows (only a header?).") from error
        cause = error.__cause__ or error
        raise DataError(f"Could not read {flag} {path!r} as {builder}: {type(cause).__name__}: {cause}") from error
    if len(dataset) == 0:
        raise DataError(f"{flag} {path!r} has no rows (only a header?).")
    return dataset


def load_splits(
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    cache_dir: str | None = None,
    text_column: str | None = None,
):
    """Reads the raw splits from files, a built-in dataset or the hub.

    Files win over `dataset_name` when both are given. Built-in names (`BUILTIN_DATASETS`) load offline; other
    names go to `datasets.load_dataset` (needs internet unless cached).

    Returns:
        `datasets.DatasetDict` with some of the splits `train`, `validation`, `test`.
    """
    import datasets

    files = {"train": (train_file, "--train_file"), "validation": (validation_file, "--validation_file")}
    files["test"] = (test_file, "--test_file")
    if any(path for path, _ in files.values()):
        return datasets.DatasetDict(
            {
                split: load_data_file(path, flag, text_column)
                for split, (path, flag) in files.items()
                if path is not None
            }
        )
    if dataset_name is None:
        raise DataError(
            "No data given: pass --train_file/--validation_file/--test_file (CSV, TSV, JSON, JSONL or parquet) or "
            f"--dataset_name (built in: {', '.join(sorted(BUILTIN_DATASETS))}; or a hub dataset)."
        )
    if dataset_name in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[dataset_name]()
    try:
        return datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
    except Exception as error:
        raise DataError(
            f"Could not load dataset {dataset_name!r} from the hub: {error}. Built-in offline datasets: "
            f"{', '.join(sorted(BUILTIN_DATASETS))}; or give local files with --train_file."
        ) from error


@dataclass
class PreparedData:
    """Checked splits with normalised labels.

    Attributes:
        splits: `datasets.DatasetDict`; the label column holds names (single-label), lists of names or multi-hot
            float vectors (multi-label). Splits without a label column (unlabelled test data) are kept as they are.
        labels: the label set, in logit order.
        problem_type: single- or multi-label.
        label_format: how the training labels were written.
    """

    splits: Any
    labels: list[str]
    problem_type: ProblemType
    label_format: LabelFormat | None


def _class_names(dataset, column: str) -> list[str] | None:
    feature = dataset.features.get(column)
    feature = getattr(feature, "feature", feature)  # List(ClassLabel) -> ClassLabel
    names = getattr(feature, "names", None)
    return list(names) if names else None


def check_columns(splits, text_column: str, label_column: str | None, label_required: tuple[str, ...]) -> None:
    """Checks that each split has the text column and, where required, the label column.

    Raises:
        DataError: naming the split, the missing column and the columns that exist.
    """
    for name, dataset in splits.items():
        needed = [text_column] + ([label_column] if label_column and name in label_required else [])
        for column in needed:
            if column not in dataset.column_names:
                flag = "--text_column_name" if column == text_column else "--label_column_name"
                raise DataError(
                    f"The {name} data has no column {column!r}; its columns are {dataset.column_names}. "
                    f"Name the right one with {flag}."
                )


def texts_as_strings(dataset, text_column: str):
    """The dataset with its text column read as text: a column of numbers (`123`, `4.5`) becomes strings.

    File readers infer column types, so a text column that happens to hold only numbers arrives as integers or
    floats; texts are texts whatever they look like. Missing cells stay missing (and are reported by the checks).
    """
    import datasets

    feature = dataset.features.get(text_column)
    if isinstance(feature, datasets.Value) and feature.dtype not in ("string", "large_string"):
        logger.info("Column %r holds numbers; reading them as text.", text_column)
        return dataset.cast_column(text_column, datasets.Value("string"))
    return dataset


def _check_texts(splits, text_column: str) -> None:
    for name, dataset in splits.items():
        try:
            validate_texts(dataset[text_column])
        except (TypeError, ValueError) as error:
            raise DataError(f"In the {name} data, column {text_column!r}: {error}") from error


def prepare_splits(
    splits,
    text_column: str = "text",
    label_column: str = "label",
    labels: list[str] | None = None,
    problem_type: str | ProblemType | None = None,
    label_separator: str | None = None,
    validation_split_percentage: float = 10.0,
    drop_unknown_labels: bool = False,
    seed: int = 42,
    labels_from: str = "the training data",
) -> PreparedData:
    """Checks and normalises raw splits for training or evaluation.

    Args:
        splits: `datasets.DatasetDict` from `load_splits`.
        text_column: column holding the texts.
        label_column: column holding the labels.
        labels: the label set in logit order; inferred from the `train` split when `None` (then a `train` split is
            required). Integer labels index into it.
        problem_type: forces single- or multi-label; inferred from the label format when `None`.
        label_separator: split string labels on it into lists (multi-label labels in CSV files).
        validation_split_percentage: share of `train` held out (stratified) when there is no `validation` split;
            0 makes none.
        drop_unknown_labels: drop `validation`/`test` rows with labels outside the label set instead of failing.
        seed: seed of the validation split.
        labels_from: where a given label set came from, for messages (for example the adapter folder).

    Raises:
        DataError: for any problem with the data; the message names the split, row or label and the fix.
    """
    import datasets

    splits = datasets.DatasetDict(dict(splits))
    if labels is None and "train" not in splits:
        raise DataError("Training needs training data: pass --train_file or --dataset_name.")
    check_columns(splits, text_column, label_column, label_required=("train", "validation"))
    for name in list(splits):
        splits[name] = texts_as_strings(splits[name], text_column)
    _check_texts(splits, text_column)
    labelled = [
        name for name in ("train", "validation", "test") if name in splits and label_column in splits[name].column_names
    ]
    raw = {name: splits[name][label_column] for name in labelled}
    if label_separator:
        raw = {name: [_split_names(value, label_separator) for value in values] for name, values in raw.items()}
    reference = "train" if "train" in labelled else labelled[0] if labelled else None
    if reference is None:
        return PreparedData(splits, list(labels or []), infer_problem_type(LabelFormat.NAME, problem_type), None)
    where = {name: f"column {label_column!r} of the {name} data" for name in labelled}
    class_names = _class_names(splits[reference], label_column)
    label_format = detect_format(raw[reference], where[reference], class_names)
    # Integer ids index into the dataset's own ClassLabel names, else into a given label set.
    id_names = class_names or (list(labels) if labels is not None else None)
    match_names = class_names is None and labels is not None
    if labels is None:
        labels = infer_label_set(raw[reference], label_format, class_names)
        if label_format in (LabelFormat.ID, LabelFormat.ID_LIST, LabelFormat.MULTI_HOT) and class_names is None:
            logger.warning("Labels are numbers without names; the label set is %s. Name them with --labels.", labels)
    labels = list(labels)
    warn_near_duplicate_labels(labels, labels_from)
    problem = infer_problem_type(label_format, problem_type)
    normalised = {}
    for name in labelled:
        split_format = detect_format(raw[name], where[name], _class_names(splits[name], label_column))
        if split_format != label_format and raw[name]:
            raise DataError(
                f"The labels in {where[name]} are written as {split_format.value!r} but those in {where[reference]} "
                f"as {label_format.value!r}; write them the same way in every split."
            )
        values = [
            to_label_names(value, label_format, id_names, f"Row {row} of {where[name]}", match_names)
            for row, value in enumerate(raw[name])
        ]
        normalised[name] = _check_known(values, labels, name, where[name], drop_unknown_labels, labels_from)
    for name, (keep, values) in normalised.items():
        values = [
            fit_to_problem_type(v, problem, labels, f"Row {r} of {where[name]}")
            for r, v in zip(keep, values, strict=True)
        ]
        dataset = splits[name].select(keep) if len(keep) != len(splits[name]) else splits[name]
        splits[name] = dataset.remove_columns(label_column).add_column(label_column, values)
    if "validation" not in splits and "train" in splits and validation_split_percentage > 0:
        splits["train"], splits["validation"] = _split_validation(
            splits["train"], label_column, validation_split_percentage, seed
        )
    return PreparedData(splits, labels, problem, label_format)


def near_duplicate_labels(labels: list[str]) -> list[list[str]]:
    """Groups of labels that differ only by letter case or surrounding whitespace (`sport`, `Sport`, `sport `)."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        if isinstance(label, str):
            groups.setdefault(label.strip().casefold(), []).append(label)
    return [group for group in groups.values() if len(group) > 1]


def warn_near_duplicate_labels(labels: list[str], labels_from: str) -> None:
    """Logs a warning naming labels that are probably one class written several ways; they stay separate classes."""
    groups = near_duplicate_labels(labels)
    if groups:
        listed = "; ".join(", ".join(repr(label) for label in group) for group in groups)
        logger.warning(
            "Labels of %s that differ only by case or surrounding whitespace are separate classes: %s. If each group "
            "is one class, write it the same way in the data (or in --labels).",
            labels_from,
            listed,
        )


def _split_names(value: Any, separator: str) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(separator) if part.strip()]
    return value


def _check_known(
    values: list[Any], labels: list[str], split: str, where: str, drop: bool, labels_from: str
) -> tuple[list[int], list[Any]]:
    """Returns `(kept row indices, kept values)`, failing or dropping rows with labels outside `labels`."""
    known = set(labels)
    unknown: dict[str, int] = {}
    keep, kept_values = [], []
    for row, value in enumerate(values):
        if not isinstance(value, str) and value and not isinstance(value[0], str):
            if len(value) != len(labels):
                raise DataError(
                    f"Row {row} of {where} is a multi-hot vector of width {len(value)}, but there are {len(labels)} "
                    f"labels ({labels_from}): {labels}."
                )
            names = []
        else:
            names = row_label_names(value, labels)
        missing = [name for name in names if name not in known]
        for name in missing:
            unknown.setdefault(name, row)
        if not missing:
            keep.append(row)
            kept_values.append(value)
    if unknown:
        listed = ", ".join(f"{name!r} (first in row {row})" for name, row in sorted(unknown.items()))
        if split != "train" and drop:
            logger.warning(
                "Dropping %d row(s) of the %s data with unknown labels: %s", len(values) - len(keep), split, listed
            )
        else:
            fix = "pass --drop_unknown_labels to drop those rows, or " if split != "train" else ""
            raise DataError(
                f"The {split} data has label(s) {listed} that are not among the {len(labels)} labels of {labels_from}: "
                f"{labels}. Is it data (or an adapter) from another task? Otherwise {fix}add the label to --labels "
                "or to the training data."
            )
    if not keep:
        raise DataError(f"No rows of the {split} data are left after dropping rows with unknown labels.")
    return keep, kept_values


def _describe_key(key: Any) -> str:
    """A stratification key for messages: a label name, or the label set of a multi-label row."""
    if isinstance(key, str):
        return repr(key)
    if key and not isinstance(key[0], str):
        return "multi-hot " + repr(list(key))
    return repr(list(key))


def _split_validation(train, label_column: str, percentage: float, seed: int):
    if not 0 < percentage < 100:
        raise DataError(f"--validation_split_percentage must lie between 0 and 100; got {percentage}.")
    keys = [value if isinstance(value, str) else tuple(value) for value in train[label_column]]
    fraction = percentage / 100
    train_rows, validation_rows = stratified_split_indices(keys, fraction, seed)
    counts = Counter(keys)
    # A class gives validation a row when round(n * fraction) >= 1 and one row still stays in training.
    too_few = {key: count for key, count in counts.items() if min(round(count * fraction), count - 1) < 1}
    listed = ", ".join(
        f"{_describe_key(key)} ({count} row{'s' if count != 1 else ''})"
        for key, count in sorted(too_few.items(), key=lambda item: repr(item[0]))
    )
    if not validation_rows or not train_rows:
        raise DataError(
            f"The training data ({len(train)} rows) is too small for a {percentage}% validation split: no class has "
            f"enough rows to hold one out. Classes with too few rows: {listed}. Give --validation_file (or more "
            "training rows, or a larger --validation_split_percentage)."
        )
    if too_few:
        logger.warning(
            "Classes without a row in the %s%% validation split (too few rows): %s. Their validation scores are "
            "missing; give --validation_file to score them.",
            percentage,
            listed,
        )
    logger.info(
        "No validation data given: held out %d of %d training rows (stratified).", len(validation_rows), len(train)
    )
    return train.select(train_rows), train.select(validation_rows)
