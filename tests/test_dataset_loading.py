"""Loading data files and recognising label formats, label sets and problem types; every bad-input case."""

from __future__ import annotations

import json
from collections import Counter

import datasets
import pytest
from recipe_data import LABELS, make_rows, write_rows

from labeltok_peft.cli.dataset_loading import load_splits, prepare_splits
from labeltok_peft.cli.label_formats import DataError, LabelFormat
from labeltok_peft.config import ProblemType
from labeltok_peft.splits import stratified_split_indices


def prepared(path, **kwargs):
    return prepare_splits(load_splits(train_file=str(path)), **kwargs)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_each_file_format_loads_with_inferred_labels_and_stratified_split(tmp_path, suffix):
    rows = make_rows(20, seed=0)
    data = prepared(write_rows(rows, tmp_path / f"train{suffix}"))
    assert data.labels == LABELS  # sorted, whatever the row order
    assert data.problem_type == ProblemType.SINGLE_LABEL
    assert data.label_format == LabelFormat.NAME
    assert len(data.splits["train"]) + len(data.splits["validation"]) == len(rows)
    assert Counter(data.splits["validation"]["label"]) == {label: 2 for label in LABELS}  # 10% of 20 per label
    assert data.splits["train"]["text"][0] in {row["text"] for row in rows}


def test_integer_labels_sort_numerically_or_index_given_names(tmp_path):
    rows = [{"text": row["text"], "label": [10, 2, 7][i % 3]} for i, row in enumerate(make_rows(6, seed=0))]
    path = write_rows(rows, tmp_path / "train.csv")
    inferred = prepared(path, validation_split_percentage=0)
    assert inferred.label_format == LabelFormat.ID
    assert inferred.labels == ["2", "7", "10"]
    assert inferred.splits["train"]["label"][:3] == ["10", "2", "7"]
    small = write_rows([{"text": r["text"], "label": i % 3} for i, r in enumerate(rows)], tmp_path / "ids.csv")
    named = prepared(small, labels=["neg", "neu", "pos"], validation_split_percentage=0)
    assert named.splits["train"]["label"][:3] == ["neg", "neu", "pos"]


def test_lists_of_names_are_multi_label(tmp_path):
    rows = make_rows(10, seed=0, multi_label=True)
    data = prepared(write_rows(rows, tmp_path / "train.jsonl"))
    assert data.problem_type == ProblemType.MULTI_LABEL
    assert data.label_format == LabelFormat.NAME_LIST
    assert data.labels == LABELS
    assert all(isinstance(value, list) for value in data.splits["validation"]["label"])


def test_multi_hot_column_with_given_names(tmp_path):
    rows = [{"text": r["text"], "label": [int(name in r["label"]) for name in LABELS]} for r in make_rows(5, 0, True)]
    data = prepared(write_rows(rows, tmp_path / "train.jsonl"), labels=LABELS, validation_split_percentage=0)
    assert data.label_format == LabelFormat.MULTI_HOT
    assert data.problem_type == ProblemType.MULTI_LABEL
    assert data.splits["train"]["label"][0] == [float(v) for v in rows[0]["label"]]
    with pytest.raises(DataError, match="width 4, but there are 3 labels"):
        prepared(tmp_path / "train.jsonl", labels=LABELS[:3], validation_split_percentage=0)


def test_list_of_class_label_ids_use_feature_names():
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.List(datasets.ClassLabel(names=["x", "y", "z"]))}
    )
    train = datasets.Dataset.from_dict({"text": ["a b", "c d", "e f"], "label": [[0, 2], [1], []]}, features=features)
    data = prepare_splits(datasets.DatasetDict({"train": train}), validation_split_percentage=0)
    assert data.labels == ["x", "y", "z"]
    assert data.splits["train"]["label"] == [["x", "z"], ["y"], []]


def test_label_separator_turns_csv_strings_into_lists(tmp_path):
    rows = [{"text": r["text"], "label": "|".join(r["label"])} for r in make_rows(5, 0, multi_label=True)]
    data = prepared(write_rows(rows, tmp_path / "train.csv"), label_separator="|", validation_split_percentage=0)
    assert data.problem_type == ProblemType.MULTI_LABEL
    assert data.splits["train"]["label"][0] == rows[0]["label"].split("|")


def test_given_label_order_and_problem_type_overrides(tmp_path):
    path = write_rows(make_rows(5, seed=0), tmp_path / "train.csv")
    order = ["tech", "sport", "politics", "business"]
    data = prepared(path, labels=order, problem_type="multi_label_classification", validation_split_percentage=0)
    assert data.labels == order
    assert data.problem_type == ProblemType.MULTI_LABEL
    assert all(len(value) == 1 for value in data.splits["train"]["label"])
    one_each = write_rows([{"text": "a b", "label": ["x"]}, {"text": "c d", "label": ["y"]}], tmp_path / "one.jsonl")
    single = prepared(one_each, problem_type="single_label_classification", validation_split_percentage=0)
    assert single.splits["train"]["label"] == ["x", "y"]
    two = write_rows([{"text": "a b", "label": ["x", "y"]}, {"text": "c d", "label": ["y"]}], tmp_path / "two.jsonl")
    with pytest.raises(DataError, match="Row 0 .* has 2 labels"):
        prepared(two, problem_type="single_label_classification", validation_split_percentage=0)


def test_stratified_split_is_deterministic_and_keeps_rare_labels_in_train():
    keys = ["a"] * 50 + ["b"] * 10 + ["c"]
    first = stratified_split_indices(keys, 0.2, seed=3)
    assert first == stratified_split_indices(keys, 0.2, seed=3)
    assert first != stratified_split_indices(keys, 0.2, seed=4)
    train, validation = first
    assert sorted(train + validation) == list(range(len(keys)))
    assert Counter(keys[i] for i in validation) == {"a": 10, "b": 2}
    assert 60 in train  # the only 'c' row stays in training


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        (None, ".csv", "does not exist"),
        ("", ".csv", "is empty"),
        ("text,label\n", ".csv", "has no rows"),
        ("text,label\nx,y\n", ".xlsx", "has extension '.xlsx'"),
        ("this is not parquet", ".parquet", "Could not read"),
        ('{"text": "a", "label": ', ".jsonl", "Could not read"),
    ],
)
def test_unusable_files_are_named(tmp_path, content, suffix, message):
    path = tmp_path / f"data{suffix}"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        load_splits(train_file=str(path))
    assert "--train_file" in str(error.value)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        load_splits(validation_file=str(tmp_path))


def test_no_data_at_all():
    with pytest.raises(DataError, match="No data given"):
        load_splits()


@pytest.mark.parametrize("column", ["text", "label"])
def test_missing_column_names_the_columns_and_the_flag(tmp_path, column):
    rows = [{"sentence" if column == "text" else "text": "a b", "category" if column == "label" else "label": "x"}] * 4
    path = write_rows(rows, tmp_path / "train.csv")
    with pytest.raises(DataError, match=f"no column '{column}'.*--{column}_column_name"):
        prepared(path)


@pytest.mark.parametrize(
    "labels, message",
    [
        (["sport", 3], "mix formats \\(row 0 holds a label name; row 1 holds an integer id\\)"),
        (["sport", ["tech"]], "mix formats"),
        ([0.5, 1.5], "fits neither single-label classification"),
        ([{"a": 1}, {"b": 2}], "fits neither"),
        (["sport", None], "Row 1 .* has no label"),
        ([[0.2, 3.0], [1.0, 0.0]], "neither multi-hot vectors"),
    ],
)
def test_bad_label_values(tmp_path, labels, message):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i}", "label": v}) + "\n" for i, v in enumerate(labels)))
    with pytest.raises(DataError, match=message):
        prepared(path, validation_split_percentage=0)


def test_empty_text_names_split_and_row(tmp_path):
    path = write_rows([{"text": "a b", "label": "x"}, {"text": "   ", "label": "y"}], tmp_path / "train.jsonl")
    with pytest.raises(DataError, match="train data.*row 1 is empty"):
        prepared(path, validation_split_percentage=0)


def test_label_only_in_validation_is_named_or_its_rows_dropped(tmp_path):
    train = write_rows(make_rows(5, seed=0), tmp_path / "train.csv")
    validation_rows = make_rows(2, seed=1) + [{"text": "film actor award", "label": "film"}]
    validation = write_rows(validation_rows, tmp_path / "dev.csv")
    splits = load_splits(train_file=str(train), validation_file=str(validation))
    with pytest.raises(
        DataError, match="validation data has label\\(s\\) 'film' \\(first in row 8\\).*--drop_unknown_labels"
    ):
        prepare_splits(splits)
    data = prepare_splits(splits, drop_unknown_labels=True)
    assert len(data.splits["validation"]) == 8
    assert "film" not in data.splits["validation"]["label"]


def test_given_labels_missing_a_training_label_fails_even_with_drop(tmp_path):
    path = write_rows(make_rows(3, seed=0), tmp_path / "train.csv")
    with pytest.raises(DataError, match="train data has label\\(s\\) 'tech'"):
        prepared(path, labels=LABELS[:3], drop_unknown_labels=True)


def test_split_formats_must_agree(tmp_path):
    train = write_rows(make_rows(3, seed=0), tmp_path / "train.jsonl")
    dev = write_rows([{"text": "a b", "label": ["sport"]}], tmp_path / "dev.jsonl")
    with pytest.raises(DataError, match="written as 'name_list' but those in .* as 'name'"):
        prepare_splits(load_splits(train_file=str(train), validation_file=str(dev)))


def test_too_small_for_a_validation_split(tmp_path):
    path = write_rows([{"text": "a b", "label": "x"}, {"text": "c d", "label": "y"}], tmp_path / "train.csv")
    with pytest.raises(DataError, match="too small for a 10.0% validation split"):
        prepared(path)


# ------------------------------------------------------------------------------------------------ issue 13, inputs


def test_labels_written_na_none_null_are_labels_not_missing(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\nteam won,NA\nbank profit,None\nfilm star,null\nmarket shares,N/A\n")
    data = prepared(path, validation_split_percentage=0)
    assert data.labels == ["N/A", "NA", "None", "null"]
    assert data.splits["train"]["label"] == ["NA", "None", "null", "N/A"]
    path.write_text("text,label\nteam won,sport\nbank profit,\n")  # only a truly empty cell is missing
    with pytest.raises(DataError, match="Row 1 .* has no label"):
        prepared(path, validation_split_percentage=0)


def test_labels_differing_only_by_case_or_whitespace_are_named_in_a_warning(tmp_path, caplog):
    rows = [{"text": f"text {i}", "label": label} for i, label in enumerate(["sport", "Sport", "sport ", "tech"] * 2)]
    with caplog.at_level("WARNING", logger="labeltok_peft"):
        data = prepared(write_rows(rows, tmp_path / "train.jsonl"), validation_split_percentage=0)
    assert data.labels == ["Sport", "sport", "sport ", "tech"]  # kept apart, as written
    warning = " ".join(record.getMessage() for record in caplog.records if record.levelname == "WARNING")
    assert "'Sport', 'sport', 'sport '" in warning
    assert "tech" not in warning


def test_a_numeric_text_column_is_read_as_text(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\n123,a\n4.5,b\n0042,a\n99,b\n")
    data = prepare_splits(load_splits(train_file=str(path), text_column="text"), validation_split_percentage=0)
    assert data.splits["train"]["text"] == ["123", "4.5", "0042", "99"]  # as written
    # A reader that typed the column anyway (JSON numbers): the numbers become their text.
    numbers = tmp_path / "train.jsonl"
    numbers.write_text('{"text": 123, "label": "a"}\n{"text": 7, "label": "b"}\n')
    assert prepared(numbers, validation_split_percentage=0).splits["train"]["text"] == ["123", "7"]


def test_too_small_for_a_split_names_the_classes_and_the_flag(tmp_path):
    rows = [{"text": f"t {i}", "label": "x"} for i in range(3)] + [{"text": "u", "label": "y"}]
    with pytest.raises(DataError, match=r"Classes with too few rows: 'x' \(3 rows\), 'y' \(1 row\).*--validation_file"):
        prepared(write_rows(rows, tmp_path / "train.jsonl"))
