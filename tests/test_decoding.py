"""One implementation of each shared step: threshold checks, the text budget, label-format rules, stratified splits."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from tiny_models import tiny_backbone, tokenizer_for

from labeltok_peft import LabelTokConfig, encode_label, get_labeltok_model
from labeltok_peft.cli.label_formats import DataError, LabelFormat, detect_format
from labeltok_peft.decoding import decide, probabilities_from_logits, resolve_max_length, resolve_thresholds
from labeltok_peft.metrics import classification_metrics
from labeltok_peft.splits import stratified_split_indices

LABELS = ["a", "b", "c"]


@pytest.mark.parametrize("bad", [1.01, -0.1, math.nan, math.inf, [0.5, 0.5, 2.0], {"b": math.nan}])
def test_thresholds_outside_zero_one_or_nan_are_refused(bad):
    with pytest.raises(ValueError, match="between 0 and 1"):
        resolve_thresholds(bad, LABELS)
    if not isinstance(bad, dict):  # metrics know label positions, not names
        with pytest.raises(ValueError, match="between 0 and 1"):
            classification_metrics(np.zeros((2, 3)), np.zeros((2, 3)), multi_label=True, threshold=bad)


def test_threshold_forms_and_their_errors():
    assert resolve_thresholds(None, LABELS) == [0.5, 0.5, 0.5]
    assert resolve_thresholds(0.25, LABELS) == [0.25, 0.25, 0.25]
    assert resolve_thresholds({"c": 0.0, "a": 1.0}, LABELS) == [1.0, 0.5, 0.0]
    assert resolve_thresholds(np.array([0.1, 0.2, 0.3]), LABELS) == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="2 thresholds for 3 labels"):
        resolve_thresholds([0.1, 0.2], LABELS)
    with pytest.raises(ValueError, match=r"unknown labels \['z'\]"):
        resolve_thresholds({"z": 0.5}, LABELS)
    with pytest.raises(TypeError, match="string"):
        resolve_thresholds("0.5", LABELS)
    with pytest.raises(TypeError, match="number between 0 and 1"):
        resolve_thresholds([0.5, True, 0.5], LABELS)


def test_decide_pairs_each_probability_with_its_own_threshold():
    probabilities = np.array([[0.30, 0.60, 0.90]])
    # Label a passes at 0.2, b fails at 0.7, c passes at 0.8: an asymmetric pattern no label swap can keep.
    assert decide(probabilities, True, [0.2, 0.7, 0.8]).tolist() == [[1, 0, 1]]
    assert decide(probabilities, False).tolist() == [2]
    softmax = probabilities_from_logits(np.array([[0.0, math.log(3.0)]]), multi_label=False)
    assert softmax[0].tolist() == pytest.approx([0.25, 0.75])


def test_shared_positions_leave_the_same_text_budget_for_any_number_of_labels():
    tokenizer = tokenizer_for("bert")  # the tiny BERT has 64 positions
    many = [f"label_{i}" for i in range(100)]
    config = LabelTokConfig(labels=many, label_init="random", label_positions="shared", label_attention="isolated")
    model = get_labeltok_model(tiny_backbone("bert"), config, tokenizer=tokenizer)
    assert resolve_max_length(model, 128, tokenizer, lower=True) == 63  # 64 positions, one shared by the labels
    assert resolve_max_length(model, None, tokenizer) == 63
    with pytest.raises(ValueError, match="max_length=64 does not fit beside the labels; at most 63"):
        resolve_max_length(model, 64, tokenizer)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="--max_seq_length must be a positive number of tokens"):
            resolve_max_length(model, bad, tokenizer, flag="--max_seq_length", lower=True)
    sequential_config = LabelTokConfig(labels=LABELS, label_positions="sequential")
    sequential = get_labeltok_model(tiny_backbone("bert"), sequential_config, tokenizer=tokenizer)
    assert resolve_max_length(sequential, 128, tokenizer, lower=True) == 64 - len(LABELS)
    # The default ('auto' is isolated + shared on BERT) leaves the shared budget too, for any number of labels.
    default = get_labeltok_model(tiny_backbone("bert"), LabelTokConfig(labels=many), tokenizer=tokenizer)
    assert resolve_max_length(default, 128, tokenizer, lower=True) == 63


# Lists of numbers read the same way by the library (`encode_label`) and the command line (`detect_format`).
ROWS_AND_READINGS = [
    ([0, 1, 1], "multi_hot"),  # integer zeros and ones of the label count's width
    ([0.0, 1.0, 0.0], "multi_hot"),  # floats are never ids
    ([0.2, 0.9, 0.0], "multi_hot"),
    ([True, False, True], "multi_hot"),
    ([0, 2], "ids"),  # a value outside [0, 1] can only be an id
    ([2.0, 0.0], "ids"),  # ... also when a reader upcast it to float
]


@pytest.mark.parametrize("row, reading", ROWS_AND_READINGS)
def test_library_and_command_line_read_number_lists_alike(row, reading):
    config = LabelTokConfig(labels=LABELS, problem_type="multi_label_classification")
    encoded = encode_label(row, config)
    column_format = detect_format([row, row], "column 'label'")
    if reading == "multi_hot":
        assert encoded == [float(v) for v in row]
        assert column_format == LabelFormat.MULTI_HOT
    else:
        assert encoded == [1.0 if i in {int(v) for v in row} else 0.0 for i in range(len(LABELS))]
        assert column_format == LabelFormat.ID_LIST


def test_two_wide_integer_lists_are_ambiguous_for_both():
    config = LabelTokConfig(labels=["neg", "pos"], problem_type="multi_label_classification")
    with pytest.raises(ValueError, match="reads two ways"):
        encode_label([0, 1], config)
    with pytest.raises(DataError, match="read two ways"):
        detect_format([[0, 1], [1, 0]], "column 'label'")


@pytest.mark.parametrize("value", [None, math.nan, "  "])
def test_missing_labels_are_missing_for_both(value):
    with pytest.raises(ValueError, match="has no label"):
        encode_label(value, LabelTokConfig(labels=LABELS))
    with pytest.raises(DataError, match="(no|empty) label"):
        detect_format(["a", value], "column 'label'")


def test_scalars_read_alike():
    config = LabelTokConfig(labels=["False", "True", "x"])
    assert encode_label(True, config) == 1  # a bool is its name, as in a CSV column of true/false
    assert detect_format([True, False], "c") == LabelFormat.NAME
    assert encode_label(2.0, config) == 2  # an integer-valued float is an id
    assert detect_format([2.0, 1.0], "c") == LabelFormat.ID


def test_stratified_split_with_a_hash_order_keeps_every_key_share():
    keys = ["x"] * 10 + ["y"] * 5 + ["z"]
    ids = [f"row{i}" for i in range(len(keys))]

    def order(index: int) -> str:
        return hashlib.sha256(ids[index].encode()).hexdigest()

    kept, held_out = stratified_split_indices(keys, 0.2, order_key=order, keep_one_in_train=False)
    assert sorted(kept + held_out) == list(range(len(keys)))
    assert sorted(keys[i] for i in held_out) == ["x", "x", "y"]  # round(10*0.2), round(5*0.2), round(1*0.2)
    expected_x = sorted(range(10), key=order)[:2]
    assert [i for i in held_out if keys[i] == "x"] == sorted(expected_x)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        stratified_split_indices(keys, 1.0)
