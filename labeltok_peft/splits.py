"""Stratified train/held-out splits of row indices: the one implementation the command line and corpora share."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any


def stratified_split_indices(
    keys: Sequence[Hashable],
    fraction: float,
    seed: int = 0,
    order_key: Callable[[int], Any] | None = None,
    keep_one_in_train: bool = True,
) -> tuple[list[int], list[int]]:
    """Splits row indices into (kept, held out), holding out `round(n * fraction)` rows of each key's `n` rows.

    Deterministic: within each key, rows are held out in a seeded random order (`numpy.random.default_rng(seed)`,
    keys visited in the order of their `repr`), or in the order of `order_key(row_index)` when given (a hash of a
    stable row id keeps a split unchanged when other rows are added).

    Args:
        keys: one hashable stratification key per row (the label, or the tuple of a row's labels).
        fraction: share of each key's rows to hold out, in (0, 1).
        seed: seed of the random order (ignored with `order_key`).
        order_key: sort key of a row index; the first rows in this order are held out.
        keep_one_in_train: every key keeps at least one row (a key with one row is never held out).

    Returns:
        `(kept, held_out)`: sorted row indices.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie strictly between 0 and 1; got {fraction!r}.")
    import numpy as np

    rng = np.random.default_rng(seed)
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    kept, held_out = [], []
    for key in sorted(groups, key=repr):
        rows = groups[key]
        if order_key is not None:
            rows = sorted(rows, key=order_key)
        else:
            rows = [rows[i] for i in rng.permutation(len(rows))]
        take = int(round(len(rows) * fraction))
        if keep_one_in_train:
            take = min(take, len(rows) - 1)
        held_out.extend(rows[:take])
        kept.extend(rows[take:])
    return sorted(kept), sorted(held_out)
