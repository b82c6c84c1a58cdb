"""The logit head shared by all labels of one adapter."""

from __future__ import annotations

import torch
from torch import nn


class LabelHead(nn.Module):
    """One `Linear(hidden, 1)` applied to every label token's output, plus an optional bias per label.

    The head always computes in fp32, whatever the backbone's dtype, and is never quantized.

    Args:
        hidden_size: width of the backbone's hidden states.
        num_labels: number of labels (used by the per-label bias only).
        per_label_bias: add a learned bias per label.
    """

    def __init__(self, hidden_size: int, num_labels: int, per_label_bias: bool = False) -> None:
        super().__init__()
        self.score = nn.Linear(hidden_size, 1, dtype=torch.float32)
        self.label_bias = nn.Parameter(torch.zeros(num_labels, dtype=torch.float32)) if per_label_bias else None

    def forward(self, label_hidden: torch.Tensor, label_slice: slice | torch.Tensor | None = None) -> torch.Tensor:
        """Scores label tokens.

        Args:
            label_hidden: `[batch, num_labels_in_chunk, hidden]` backbone outputs at the label positions.
            label_slice: which labels the chunk holds (for the per-label bias): a slice, a `[num_labels_in_chunk]`
                tensor of label ids (sampled labels), or `None` for all labels.

        Returns:
            `[batch, num_labels_in_chunk]` fp32 logits.
        """
        logits = self.score(label_hidden.to(self.score.weight.dtype)).squeeze(-1)
        if self.label_bias is not None:
            logits = logits + self.label_bias[label_slice if label_slice is not None else slice(None)]
        return logits
