"""The pure helpers of recipes/benchmarks/zero_shot.py: the new-label few-shot sample and the per-group F1."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from recipes.benchmarks.zero_shot import group_f1, new_label_sample

NAMES = ["act", "animal", "event", "food", "plant", "time"]
HELD_OUT = ["event", "time"]


def rows(seed: int = 0, per_label: int = 20) -> list[int]:
    labels = [index for index in range(len(NAMES)) for _ in range(per_label)]
    random.Random(seed).shuffle(labels)
    return labels


@pytest.mark.parametrize(("shots", "replay"), [(8, 8), (4, 2), (3, 0)])
def test_sample_takes_shots_per_new_label_and_replay_per_seen_label(shots, replay):
    labels = rows()
    sample = new_label_sample(labels, NAMES, HELD_OUT, shots, replay, seed=0)
    assert sample == sorted(set(sample))
    counts = Counter(NAMES[labels[index]] for index in sample)
    assert counts == {name: shots if name in HELD_OUT else replay for name in NAMES if name in HELD_OUT or replay}


def test_sample_is_seeded_and_nested_across_shots():
    labels = rows()
    assert new_label_sample(labels, NAMES, HELD_OUT, 8, 8, seed=1) == new_label_sample(labels, NAMES, HELD_OUT, 8, 8, 1)
    assert new_label_sample(labels, NAMES, HELD_OUT, 8, 8, seed=1) != new_label_sample(labels, NAMES, HELD_OUT, 8, 8, 2)
    small = set(new_label_sample(labels, NAMES, HELD_OUT, 4, 0, seed=3))
    assert small < set(new_label_sample(labels, NAMES, HELD_OUT, 8, 0, seed=3))


def test_sample_refuses_too_few_rows_naming_the_label():
    labels = rows()
    labels[labels.index(NAMES.index("event"))] = NAMES.index("act")  # 'event' keeps 19 rows, 'act' gets 21
    with pytest.raises(ValueError, match=r"--new_label_shots 20: the label\(s\) \{'event': 19\}"):
        new_label_sample(labels, NAMES, HELD_OUT, 20, 0, seed=0)
    with pytest.raises(ValueError, match=r"--replay_shots 21: .*'animal': 20"):
        new_label_sample(labels, NAMES, HELD_OUT, 2, 21, seed=0)
    # Only the labels a group draws from need the rows: 21 replay rows is too many for most seen labels, but 19
    # new-label shots fit 'event' (19) and 'time' (20).
    assert len(new_label_sample(labels, NAMES, HELD_OUT, 19, 0, seed=0)) == 2 * 19


def test_group_f1_averages_new_and_old_labels_separately():
    gold = np.asarray(rows(per_label=5))
    held = [NAMES.index(name) for name in HELD_OUT]
    # New labels all right; every old label's row predicted as the next old label (F1 0 for each old label).
    old = [index for index in range(len(NAMES)) if index not in held]
    shift = {label: old[(position + 1) % len(old)] for position, label in enumerate(old)}
    predicted = np.asarray([label if label in held else shift[label] for label in gold])
    result = group_f1(predicted, gold, NAMES, HELD_OUT)
    assert result["new_labels_macro_f1"] == 1.0 and result["old_labels_macro_f1"] == 0.0
    assert result["all_labels_macro_f1"] == pytest.approx(len(held) / len(NAMES))
    assert set(result["per_label_f1"]) == set(NAMES)
    # One new label never predicted (its rows go to an old label): F1 0 for it, and the old label's precision drops.
    predicted = np.where(gold == held[0], old[0], gold)
    result = group_f1(predicted, gold, NAMES, HELD_OUT)
    assert result["new_labels_macro_f1"] == pytest.approx(0.5)
    assert result["per_label_f1"][NAMES[old[0]]] == pytest.approx(2 * 0.5 / 1.5, abs=1e-4)
