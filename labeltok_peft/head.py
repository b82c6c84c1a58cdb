"""The logit head shared by all labels of one adapter."""

from __future__ import annotations

import torch
from torch import nn

COSINE_SCALE_INIT = 10.0
"""Initial temperature of the cosine head: logits start within +-10, enough for a softmax to separate labels."""


class LabelHead(nn.Module):
    """One `Linear(hidden, 1)` applied to every label token's output, plus optional per-label, residual and tied terms.

    The logit of label k with output `h_k` is `score(h_k)` (with the cosine head `cosine_scale * cos(h_k, w) + b`
    instead, where `w` and `b` are the weight and bias of `score` and `cosine_scale` a learned temperature), plus
    `label_bias[k]` with a per-label bias, plus `label_weight[k] . h_k` with the residual head
    (`head_type="residual"`, the default), plus `tied_scale * cos(h_k, e_k)` with the tied head, where `e_k` is label
    k's own row of the label table: the row that enters the backbone as the label's token is also the vector its
    output is compared with, so the tied head has no parameter per label. The head always computes in fp32, whatever
    the backbone's dtype, and is never quantized.

    Args:
        hidden_size: width of the backbone's hidden states.
        num_labels: number of labels (used by the per-label bias only).
        per_label_bias: add a learned bias per label.
        tied: add the learned-scale cosine between each label's output and its table row.
        per_label_weight: add `label_weight[k] . h_k`, a weight vector per label that starts at zero (a residual on
            the shared head; a classifier row per label, as a sequence-classification head has).
        cosine: normalise the shared term: `cosine_scale * cos(h_k, w) + b`, with `cosine_scale` learned from
            `COSINE_SCALE_INIT`.
    """

    def __init__(
        self,
        hidden_size: int,
        num_labels: int,
        per_label_bias: bool = False,
        tied: bool = False,
        per_label_weight: bool = False,
        cosine: bool = False,
    ) -> None:
        super().__init__()
        self.score = nn.Linear(hidden_size, 1, dtype=torch.float32)
        self.label_bias = nn.Parameter(torch.zeros(num_labels, dtype=torch.float32)) if per_label_bias else None
        self.tied_scale = nn.Parameter(torch.ones((), dtype=torch.float32)) if tied else None
        self.label_weight = (
            nn.Parameter(torch.zeros(num_labels, hidden_size, dtype=torch.float32)) if per_label_weight else None
        )
        self.cosine_scale = nn.Parameter(torch.full((), COSINE_SCALE_INIT, dtype=torch.float32)) if cosine else None

    def forward(
        self,
        label_hidden: torch.Tensor,
        label_slice: slice | torch.Tensor | None = None,
        label_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores label tokens.

        Args:
            label_hidden: `[batch, num_labels_in_chunk, hidden]` backbone outputs at the label positions.
            label_slice: which labels the chunk holds (for the per-label bias): a slice, a `[num_labels_in_chunk]`
                tensor of label ids (sampled labels), or `None` for all labels.
            label_rows: `[num_labels_in_chunk, hidden]` the chunk's rows of the label table; needed by the tied head.

        Returns:
            `[batch, num_labels_in_chunk]` fp32 logits.
        """
        label_hidden = label_hidden.to(self.score.weight.dtype)
        if self.cosine_scale is not None:
            cosine = torch.cosine_similarity(label_hidden, self.score.weight[0], dim=-1)
            logits = self.cosine_scale * cosine + self.score.bias
        else:
            logits = self.score(label_hidden).squeeze(-1)
        index = label_slice if label_slice is not None else slice(None)
        if self.label_bias is not None:
            logits = logits + self.label_bias[index]
        if self.label_weight is not None:
            logits = logits + (label_hidden * self.label_weight[index][None]).sum(dim=-1)
        if self.tied_scale is not None:
            if label_rows is None:
                raise ValueError("The tied head needs the chunk's label rows (label_rows); none were given.")
            rows = label_rows.to(label_hidden.dtype)[None]  # [1, num_labels_in_chunk, hidden]
            logits = logits + self.tied_scale * torch.cosine_similarity(label_hidden, rows, dim=-1)
        return logits
