"""Sampled labels for training with very many labels (`label_sample_size=k`).

Each training step scores one set of labels shared by the whole batch: every label that is positive in some row of the
batch, plus negatives drawn uniformly without replacement from the other labels until the set holds `k` labels (when
the batch's positives number `k` or more, the set is just the positives). The draw uses torch's global generator, so
`transformers.set_seed` / `torch.manual_seed` make it reproducible, as they do for dropout.

The loss on the sampled set:

- single-label: sampled softmax, a cross-entropy over the set with the logQ correction. A label enters the set with
  probability 1 when it is positive in the batch and `q = negatives drawn / labels available` otherwise, so the set
  is not a uniform sample of the other classes. Subtracting `log q` from the logits of the drawn negatives (and
  nothing from the batch's positives) makes each drawn negative stand for the `1/q` labels it was drawn from, so the
  softmax's normaliser estimates the full one and the loss approaches full cross-entropy; without it the drawn
  negatives would be under-weighted by `q` (about 1/300 at 32 of 10,000 labels) and every score would drift up.
- multi-label: binary cross-entropy on the set, importance-weighted. Each drawn negative label's terms are weighted
  by `1/q` (it stands for the `1/q` labels it was drawn from; the batch's positives weigh 1), and the weighted sum is
  divided by `batch * num_labels`, so the loss and its gradient are unbiased estimates of full BCE over every label.
  An unweighted mean over the set would over-represent the batch's positives by about `K/k`, so its probabilities
  would run high at any fixed threshold.

Evaluation (`model.eval()`) and `predict` always score every label.

Labels a step does not score get a zero gradient; `optim.create_optimizer` and `LabelTokTrainer` keep their rows and
optimizer state as they were (`optim.keep_untouched_label_rows`), since Adam would otherwise keep moving them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


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


def sample_labels(labels: torch.Tensor, num_labels: int, sample_size: int, multi_label: bool) -> SampledLabels:
    """Draws the label set of one training step (see the module docstring).

    Args:
        labels: `[batch]` class ids or `[batch, num_labels]` multi-hot values, already checked.
        num_labels: all labels of the adapter.
        sample_size: k, the set size asked for.
        multi_label: whether `labels` is multi-hot.

    Returns:
        `SampledLabels` with `max(k, positives)` labels (at most `num_labels`).
    """
    positive = positive_labels(labels, num_labels, multi_label).cpu()
    others = (~positive).nonzero().flatten()
    draw = min(max(sample_size - int(positive.sum()), 0), others.numel())
    drawn = others[torch.randperm(others.numel())[:draw]]
    ids, _ = torch.cat([positive.nonzero().flatten(), drawn]).sort()
    log_inclusion = torch.zeros(ids.numel())
    if draw:
        log_inclusion[~positive[ids]] = math.log(draw / others.numel())
    return SampledLabels(ids=ids.to(labels.device), log_inclusion=log_inclusion.to(labels.device))


def sampled_loss(scores: torch.Tensor, labels: torch.Tensor, sampled: SampledLabels, multi_label: bool) -> torch.Tensor:
    """The loss of one training step on its sampled labels.

    Args:
        scores: `[batch, set_size]` fp32 logits of the sampled labels, in the order of `sampled.ids`.
        labels: `[batch]` class ids or `[batch, num_labels]` multi-hot values (all labels).
        sampled: the step's `SampledLabels`.
        multi_label: importance-weighted BCE on the set instead of the corrected sampled softmax.

    Returns:
        Scalar loss.
    """
    if multi_label:
        targets = labels[:, sampled.ids].to(scores.dtype)
        weights = torch.exp(-sampled.log_inclusion.to(scores.dtype))  # [set_size]: 1, or 1/q for drawn negatives
        terms = nn.functional.binary_cross_entropy_with_logits(scores, targets, reduction="none")
        return (terms * weights).sum() / (labels.shape[0] * labels.shape[1])
    targets = torch.searchsorted(sampled.ids, labels)  # every row's class is in the set
    return nn.functional.cross_entropy(scores - sampled.log_inclusion.to(scores.dtype), targets)


def scatter_scores(scores: torch.Tensor, sampled: SampledLabels, num_labels: int) -> torch.Tensor:
    """`[batch, num_labels]` logits: the sampled labels' scores, the dtype's minimum (finite) everywhere else."""
    logits = scores.new_full((scores.shape[0], num_labels), torch.finfo(scores.dtype).min)
    return logits.index_copy(1, sampled.ids, scores)
