"""Sampled labels for training with very many labels (`label_sample_size=k`).

Each training step scores one set of labels shared by the whole batch: every label that is positive in some row of the
batch, plus `k` negatives drawn uniformly without replacement from the other labels (all of them when fewer than `k`
are left). A fixed number of negatives per step, whatever the batch's positives: a set filled up to `k` labels in all
left only ~11 negatives per step on a 1,632-label task whose 32-row batches hold ~53 positive labels. The draw uses
torch's global generator, so `transformers.set_seed` / `torch.manual_seed` make it reproducible, as they do for dropout.

Hard negatives (`label_hard_negatives=share`): a `share` of the k negatives is drawn among the labels nearest the
batch's positives (by the cosine of their label rows), the labels a text is most easily confused with, and the rest
uniformly. Each label then enters independently with its own known probability (`draw_with_hard_negatives`), so the
number of negatives is k on average rather than exactly, and the correction below uses each label's own probability.

The loss on the sampled set: a label enters the set with probability 1 when it is positive in the batch and
`q = negatives drawn / labels available` otherwise (its own `q` with hard negatives), so the set over-represents the
batch's positives. Both losses correct for that the same way, by subtracting the label's log inclusion probability from its logit (`log q` from the
drawn negatives' logits, nothing from the batch's positives) before the loss:

- single-label: sampled softmax with the logQ correction, a cross-entropy over the set. Each drawn negative then
  stands for the `1/q` labels it was drawn from, so the softmax's normaliser estimates the full one; without it every
  score would drift up (the drawn negatives would be under-weighted by `q`, about 1/300 at 32 of 10,000 labels).
- multi-label: binary cross-entropy over the set with the same offset, the correction of negative subsampling. A
  drawn negative is trained at logit `z - log q`, so the model fits `sigmoid(z - log q)` to negatives that were kept
  with probability `q`, and `sigmoid(z)` (what evaluation reads) stays close to the label's true probability: a
  label's learned bias lands near its frequency (tests/test_sampled_labels.py), where a plain mean over the set would
  put rare labels' probabilities several times too high. Unlike weighting each drawn negative's term by `1/q` (an
  unbiased estimate of full BCE, which this module used before), no term's gradient exceeds 1. On the 1,632-label
  WordNet task the weighted loss with a set filled up to 64 labels (about 11 negatives per step, weight about 140)
  learned nothing (precision@5 0.007); positives plus 64 negatives with this offset reach 0.152
  (docs/benchmarks/label_pass.md).

Evaluation (`model.eval()`) and `predict` always score every label.

Labels a step does not score get a zero gradient; `optim.create_optimizer` and `LabelTokTrainer` keep their rows and
optimizer state as they were (`optim.keep_untouched_label_rows`), since Adam would otherwise keep moving them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# Labels nearest each positive that form the pool hard negatives are drawn from (`draw_with_hard_negatives`).
HARD_NEIGHBOURS = 8


@dataclass
class SampledLabels:
    """The labels one training step scores.

    Attributes:
        ids: `[set_size]` sorted label ids: the batch's positives and the drawn negatives.
        log_inclusion: `[set_size]` log-probability that each label entered the set: 0 for the batch's positives,
            `log q` for drawn negatives.
    """

    ids: torch.Tensor
    log_inclusion: torch.Tensor


def positive_labels(labels: torch.Tensor, num_labels: int, multi_label: bool) -> torch.Tensor:
    """`[num_labels]` bool: True for labels positive in at least one row (multi-label: any value above 0)."""
    if multi_label:
        return (labels > 0).any(dim=0)
    positive = torch.zeros(num_labels, dtype=torch.bool, device=labels.device)
    positive[labels] = True
    return positive


def sample_labels(
    labels: torch.Tensor,
    num_labels: int,
    sample_size: int,
    multi_label: bool,
    label_table: torch.Tensor | None = None,
    hard_share: float = 0.0,
) -> SampledLabels:
    """Draws the label set of one training step (see the module docstring).

    Args:
        labels: `[batch]` class ids or `[batch, num_labels]` multi-hot values, already checked.
        num_labels: all labels of the adapter.
        sample_size: k, the number of negatives to draw.
        multi_label: whether `labels` is multi-hot.
        label_table: `[num_labels, hidden]` the adapter's label rows; needed when `hard_share > 0`.
        hard_share: share of the k negatives drawn among the labels nearest the batch's positives (hard negatives,
            `draw_with_hard_negatives`); 0 draws them all uniformly.

    Returns:
        `SampledLabels` with the batch's positives plus `min(k, num_labels - positives)` drawn negatives (about k on
        average with `hard_share > 0`).
    """
    positive = positive_labels(labels, num_labels, multi_label).cpu()
    if hard_share > 0 and positive.any() and not positive.all():
        if label_table is None:
            raise ValueError(
                "sample_labels: hard_share > 0 needs the label_table to find the labels nearest positives."
            )
        return draw_with_hard_negatives(positive, label_table, sample_size, hard_share, labels.device)
    others = (~positive).nonzero().flatten()
    draw = min(sample_size, others.numel())
    drawn = others[torch.randperm(others.numel())[:draw]]
    ids, _ = torch.cat([positive.nonzero().flatten(), drawn]).sort()
    log_inclusion = torch.zeros(ids.numel())
    if draw:
        log_inclusion[~positive[ids]] = math.log(draw / others.numel())
    return SampledLabels(ids=ids.to(labels.device), log_inclusion=log_inclusion.to(labels.device))


def nearest_labels(label_table: torch.Tensor, positive: torch.Tensor, neighbours: int) -> torch.Tensor:
    """`[num_labels]` bool: the `neighbours` labels nearest each positive label, positives excluded.

    Args:
        label_table: `[num_labels, hidden]` label rows; nearness is the cosine of two rows (no gradient).
        positive: `[num_labels]` bool, the batch's positive labels (at least one, not all).
        neighbours: how many nearest other labels each positive contributes.
    """
    rows = nn.functional.normalize(label_table.detach().float().reshape(positive.numel(), -1), dim=-1)
    positive = positive.to(rows.device)
    similarity = rows[positive] @ rows.T  # [positives, num_labels]
    similarity[:, positive] = -float("inf")
    nearest = similarity.topk(min(neighbours, int((~positive).sum())), dim=1).indices
    pool = torch.zeros(positive.numel(), dtype=torch.bool, device=rows.device)
    pool[nearest.flatten()] = True
    return pool.cpu()


def draw_with_hard_negatives(
    positive: torch.Tensor, label_table: torch.Tensor, sample_size: int, hard_share: float, device: torch.device
) -> SampledLabels:
    """The batch's positives plus about k negatives, a `hard_share` of them among the labels nearest the positives.

    Every other label enters the set independently (Poisson sampling), so each one's inclusion probability is exact:
    `1 - (1 - u) * (1 - h)` with `u = (1 - hard_share) * k / others` for every label and `h = min(1, hard_share * k /
    pool)` for the labels of the pool, the `HARD_NEIGHBOURS` labels nearest each positive (`nearest_labels`). The
    logQ correction of `sampled_loss` then uses that probability, so a near label, drawn more often, is corrected by
    less; every label keeps a chance to be drawn (`hard_share < 1`), so none escapes the loss.

    Args:
        positive: `[num_labels]` bool, the batch's positive labels (at least one, not all).
        label_table: `[num_labels, hidden]` label rows.
        sample_size: k, the expected number of negatives.
        hard_share: in (0, 1), the expected share of the k negatives drawn from the pool.
        device: where the returned tensors go.
    """
    others = ~positive
    pool = nearest_labels(label_table, positive, HARD_NEIGHBOURS) & others
    uniform_rate = min(1.0, (1 - hard_share) * sample_size / int(others.sum()))
    pool_rate = min(1.0, hard_share * sample_size / max(int(pool.sum()), 1))
    inclusion = 1 - (1 - uniform_rate) * (1 - pool_rate * pool.float())  # [num_labels]
    drawn = others & (torch.rand(positive.numel()) < inclusion)
    ids = (positive | drawn).nonzero().flatten()
    log_inclusion = torch.where(positive[ids], 0.0, inclusion[ids].log())
    return SampledLabels(ids=ids.to(device), log_inclusion=log_inclusion.to(device))


def sampled_loss(scores: torch.Tensor, labels: torch.Tensor, sampled: SampledLabels, multi_label: bool) -> torch.Tensor:
    """The loss of one training step on its sampled labels.

    Args:
        scores: `[batch, set_size]` fp32 logits of the sampled labels, in the order of `sampled.ids`.
        labels: `[batch]` class ids or `[batch, num_labels]` multi-hot values (all labels).
        sampled: the step's `SampledLabels`.
        multi_label: BCE over the set instead of the sampled softmax (both with the inclusion correction).

    Returns:
        Scalar loss.
    """
    logits = scores - sampled.log_inclusion.to(scores.dtype)  # the inclusion correction, see the module docstring
    if multi_label:
        return nn.functional.binary_cross_entropy_with_logits(logits, labels[:, sampled.ids].to(scores.dtype))
    targets = torch.searchsorted(sampled.ids, labels)  # every row's class is in the set
    return nn.functional.cross_entropy(logits, targets)


def scatter_scores(scores: torch.Tensor, sampled: SampledLabels, num_labels: int) -> torch.Tensor:
    """`[batch, num_labels]` logits: the sampled labels' scores, the dtype's minimum (finite) everywhere else."""
    logits = scores.new_full((scores.shape[0], num_labels), torch.finfo(scores.dtype).min)
    return logits.index_copy(1, sampled.ids, scores)
