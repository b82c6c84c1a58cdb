"""classification_metrics against hand-computed values, including the threshold-free multi-label average precision."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labeltok_peft import classification_metrics


def test_single_label_metrics_by_hand():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    labels = np.array([0, 1, 2, 2])  # one of four wrong: row 2 predicted 1, true 2
    metrics = classification_metrics(logits, labels, multi_label=False)
    assert metrics["accuracy"] == pytest.approx(0.75)
    # per-class F1: class 0 = 1, class 1 = 2/3 (P 1/2, R 1), class 2 = 2/3 (P 1, R 1/2)
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert "macro_average_precision" not in metrics


def test_average_precision_ranks_models_whose_probabilities_all_sit_below_the_threshold():
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    # Every probability is below 0.5, but each label's positives are ranked above its negatives.
    well_ranked = np.array([[-1.0, -5.0, -4.0], [-5.0, -1.0, -4.0], [-1.5, -1.5, -4.0], [-4.0, -4.0, -3.0]])
    metrics = classification_metrics(well_ranked, labels, multi_label=True)
    assert metrics["macro_f1"] == 0.0 and metrics["micro_f1"] == 0.0
    # Label 2 has no positive row and is left out instead of counting as 0.
    assert metrics["macro_average_precision"] == pytest.approx(1.0)

    # Reverse the ranking of label 0: its positives now come last (AP of label 0 = (1/3 + 2/4) / 2).
    badly_ranked = well_ranked.copy()
    badly_ranked[:, 0] = -well_ranked[:, 0]
    worse = classification_metrics(badly_ranked, labels, multi_label=True)
    assert worse["macro_average_precision"] == pytest.approx(((1 / 3 + 2 / 4) / 2 + 1.0) / 2)


def test_average_precision_without_any_positive_is_nan_not_a_number_that_looks_real():
    labels = np.zeros((3, 2))
    metrics = classification_metrics(np.zeros((3, 2)), labels, multi_label=True)
    assert math.isnan(metrics["macro_average_precision"])


def test_ranking_metrics_by_hand():
    from labeltok_peft.metrics import ranking_metrics

    labels = np.array([[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    scores = np.array(
        [
            [0.9, 0.1, 0.8, 0.3, 0.2, 0.0],  # ranked 0 2 3 4 1: top 1 true, top 2 one of two, top 5 both
            [0.5, 0.5, 0.0, 0.0, 0.0, 0.9],  # ranked 5 0 1 ...: the tie 0/1 goes to label 0, so top 2 misses
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # no true label: counts 0 in precision, left out of recall
        ]
    )
    metrics = ranking_metrics(scores, labels, multi_label=True, ks=(1, 2, 5))
    assert metrics["precision_at_1"] == pytest.approx((1 + 0 + 0) / 3)
    assert metrics["precision_at_2"] == pytest.approx((1 / 2 + 0 + 0) / 3)
    assert metrics["precision_at_5"] == pytest.approx((2 / 5 + 1 / 5 + 0) / 3)
    assert metrics["recall_at_1"] == pytest.approx((1 / 2 + 0) / 2)
    assert metrics["recall_at_2"] == pytest.approx((1 / 2 + 0) / 2)
    assert metrics["recall_at_5"] == pytest.approx((1 + 1) / 2)

    # Single-label: precision@1 is the accuracy, recall@k the top-k accuracy, precision@k that over k.
    single_scores = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0], [5.0, 5.0, 0.0]])
    single_labels = np.array([0, 2, 1, 1])  # top 1 right only in row 0; top 2 right in rows 0, 1 and 3
    single = ranking_metrics(single_scores, single_labels, multi_label=False, ks=(1, 2))
    assert single == pytest.approx(
        {"precision_at_1": 1 / 4, "recall_at_1": 1 / 4, "precision_at_2": 3 / 8, "recall_at_2": 3 / 4}
    )
    accuracy = classification_metrics(single_scores, single_labels, multi_label=False)["accuracy"]
    assert single["precision_at_1"] == pytest.approx(accuracy)

    with pytest.raises(ValueError, match="between 1 and the number of labels"):
        ranking_metrics(scores, labels, multi_label=True, ks=(7,))
    with pytest.raises(ValueError, match="do not match"):
        ranking_metrics(scores, labels[:, :3], multi_label=True)
