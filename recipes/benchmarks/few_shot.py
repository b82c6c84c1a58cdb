"""Few-shot training sets for the benchmark: N labelled rows per class (or per label), sampled reproducibly.

`python -m recipes.benchmarks.benchmark --shots_per_class 8,16 ...` trains every method on such a sample of the
train split and evaluates it on the whole, unchanged test split.

The sampling rule:

- **Single-label**: the train rows of each class are put in a fixed pseudo-random order, the SHA-256 of
  `"<seed>:<class name>:<row index>"`, and the first N are taken. Each class is sampled on its own (its order does
  not depend on the other classes or on the label order), and for one seed the 8-shot sample is contained in the
  16-shot sample, so results across shots differ by the added rows only.
- **Multi-label** (shots per label; a row counts once for each of its labels): labels are visited from the rarest
  in the train split to the most frequent (ties by name). For each label, rows carrying it are taken in the same
  hash order (keyed by that label) until the sample holds N rows with the label, counting rows already taken for
  other labels. Every label then has at least N rows; the rarest label has exactly N, frequent labels that ride
  along on other labels' rows can have more (`shot_counts` reports them). No row is taken that its label did not
  need at the moment it was taken.

The seed is the run's training seed unless `--sample_seed` fixes one, so `--seeds 0,1,2` trains on three different
samples. No randomness from a library generator is used: the sample does not change with numpy or Python versions.
Imports neither torch nor datasets, so the renderer and the tests can use it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _order_key(seed: int, label: str, index: int) -> str:
    return hashlib.sha256(f"{seed}:{label}:{index}".encode()).hexdigest()


def _too_few(label: str, available: int, shots: int) -> ValueError:
    return ValueError(
        f"Label {label!r} has only {available} train row(s), fewer than --shots_per_class {shots}; lower "
        f"--shots_per_class to at most {available} or load more rows per label (--per_label)."
    )


def sample_shots(
    row_labels: Sequence[int] | Sequence[Sequence[int]],
    label_names: Sequence[str],
    shots: int,
    seed: int,
    multi_label: bool,
) -> list[int]:
    """Picks the train rows of a few-shot sample (the rules are in the module docstring).

    Args:
        row_labels: one entry per train row: its class id (single-label), or the list of its label ids
            (multi-label).
        label_names: the names of the `num_labels` labels, in id order (they key each label's row order).
        shots: N, the number of rows per class (single-label) or the least number of rows per label (multi-label).
        seed: the sample seed.
        multi_label: whether `row_labels` holds lists of label ids.

    Returns:
        The sorted indices of the chosen rows.

    Raises:
        ValueError: `shots` below 1, or a label with fewer than `shots` train rows.
    """
    if shots < 1:
        raise ValueError(f"--shots_per_class must be at least 1, got {shots}.")
    rows_of: list[list[int]] = [[] for _ in label_names]
    for index, value in enumerate(row_labels):
        for label_id in value if multi_label else [value]:
            rows_of[label_id].append(index)
    for label_id, rows in enumerate(rows_of):
        if len(rows) < shots:
            raise _too_few(label_names[label_id], len(rows), shots)
    if not multi_label:
        chosen = []
        for label_id, rows in enumerate(rows_of):
            name = label_names[label_id]
            chosen += sorted(rows, key=lambda index: _order_key(seed, name, index))[:shots]
        return sorted(chosen)
    chosen_set: set[int] = set()
    counts = [0] * len(label_names)
    rarest_first = sorted(range(len(label_names)), key=lambda label_id: (len(rows_of[label_id]), label_names[label_id]))
    for label_id in rarest_first:
        name = label_names[label_id]
        for index in sorted(rows_of[label_id], key=lambda row: _order_key(seed, name, row)):
            if counts[label_id] >= shots:
                break
            if index in chosen_set:
                continue  # already counted for this label
            chosen_set.add(index)
            for other in row_labels[index]:
                counts[other] += 1
    return sorted(chosen_set)


def shot_counts(
    row_labels: Sequence[int] | Sequence[Sequence[int]], num_labels: int, chosen: Sequence[int], multi_label: bool
) -> list[int]:
    """How many of the `chosen` rows carry each label: `[num_labels]` counts."""
    counts = [0] * num_labels
    for index in chosen:
        for label_id in row_labels[index] if multi_label else [row_labels[index]]:
            counts[label_id] += 1
    return counts


def few_shot_train(splits, labels: list[str], multi_label: bool, shots: int, seed: int):
    """`splits` with its `train` split replaced by the few-shot sample; `test` is left whole.

    Args:
        splits: a `datasets.DatasetDict` with `train` and `test` (column `label`: class ids or lists of ids).
        labels: the label names in id order.
        multi_label: whether the task is multi-label.
        shots: rows per class (per label for multi-label).
        seed: the sample seed.
    """
    chosen = sample_shots(list(splits["train"]["label"]), labels, shots, seed, multi_label)
    sampled = dict(splits)
    sampled["train"] = splits["train"].select(chosen)
    return type(splits)(sampled)


def parse_shots(text: str | None) -> list[int]:
    """`"8,16"` -> `[8, 16]`; `None` or empty -> `[]` (train on the whole train split)."""
    if not text:
        return []
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--shots_per_class takes comma-separated integers such as 8,16; got {text!r}.") from None
    if any(value < 1 for value in values):
        raise ValueError(f"--shots_per_class values must be at least 1; got {text!r}.")
    return values
