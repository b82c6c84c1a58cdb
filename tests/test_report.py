"""Per-label scores, threshold tuning and the written report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from labeltok_peft.cli.report import build_split_report, tune_thresholds, write_report

NAMES = ["a", "b", "c"]


def logit(p):
    p = np.asarray(p, dtype=np.float64)
    return np.log(p / (1 - p))


def test_single_label_report_matches_sklearn_and_counts_confusions():
    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 5.0
    report = build_split_report("validation", logits, labels, NAMES, multi_label=False)
    assert report.confusion_matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    predictions = logits.argmax(-1)
    expected = f1_score(labels, predictions, average=None)
    assert [row["f1"] for row in report.per_label] == pytest.approx(list(expected))
    assert [row["support"] for row in report.per_label] == [2, 2, 2]
    assert report.metrics["accuracy"] == pytest.approx(4 / 6)
    assert report.thresholds is None


def test_thresholds_tuned_per_label_and_left_alone_without_positives():
    labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]])
    # Label a's positives score 0.3 (below 0.5, above its negatives); label b is already separated at 0.5.
    probabilities = np.array([[0.3, 0.1, 0.2], [0.32, 0.2, 0.2], [0.1, 0.9, 0.2], [0.12, 0.8, 0.2]])
    thresholds = tune_thresholds(logit(probabilities), labels)
    assert 0.12 < thresholds[0] <= 0.3
    assert thresholds[1] == 0.5  # ties resolve to the threshold closest to 0.5
    assert thresholds[2] == 0.5  # no positives: no evidence
    report = build_split_report("validation", logit(probabilities), labels, NAMES, True, thresholds)
    assert report.metrics["macro_f1"] > report.metrics_at_half["macro_f1"]
    assert report.per_label[0]["f1"] == 1.0


def test_write_report_markdown_json_and_plots(tmp_path):
    labels = np.array([0, 1, 2, 2])
    logits = np.eye(3)[[0, 1, 2, 1]]
    single = build_split_report("validation", logits, labels, NAMES, multi_label=False)
    multi = build_split_report("test", logit(np.full((2, 3), 0.7)), np.array([[1, 0, 1], [0, 1, 0]]), NAMES, True)
    path = write_report([single, multi], tmp_path, "Title", notes=["- a note"])
    text = path.read_text()
    assert text.startswith("# Title")
    assert "- a note" in text
    assert "| c | 1.000 | 0.500 | 0.667 | 2 |" in text
    assert "![validation_confusion](validation_confusion.png)" in text
    for name in ("validation_f1.png", "validation_confusion.png", "test_f1.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "test_confusion.png").exists()  # multi-label has no confusion matrix
    saved = json.loads((tmp_path / "report.json").read_text())
    assert [entry["split"] for entry in saved] == ["validation", "test"]
