"""Sampled labels for training with very many labels (`label_sample_size=k`).

Each training step scores one set of labels shared by the whole batch: every label that is positive in some row of the
batch, plus `k` negatives drawn uniformly without replacement from the other labels (all of them when fewer than `k`
are left). A fixed number of negatives per step, whatever the batch's positives: a set filled up to `k` labels in all
left only ~11 negatives per step on a 1,632-label task whose 32-row batches hold ~53 positive labels. The draw uses
torch's global generator, so `transformers.set_seed` / `torch.manual_seed` make it reproducible, as they do for dropout.

The loss on the sampled set: a label enters the set with probability 1 when it is positive in the batch and
`q = negatives drawn / labels available` otherwise, so the set over-represents the batch's positives. Both losses
correct for that the same way, by subtracting the label's log inclusion probability from its logit (`log q` from the
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
        sample_size: k, the number of negatives to draw.
        multi_label: whether `labels` is multi-hot.

    Returns:
        `SampledLabels` with the batch's positives plus `min(k, num_labels - positives)` drawn negatives.
    """
    positive = positive_labels(labels, num_labels, multi_label).cpu()
    others = (~positive).nonzero().flatten()
    draw = min(sample_size, others.numel())
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
