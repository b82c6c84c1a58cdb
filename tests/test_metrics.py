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
