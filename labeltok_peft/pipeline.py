"""`transformers` text-classification pipelines over a label-token adapter.

`transformers.pipeline("text-classification", model=...)` reads the label names and the problem type from
`model.config`, which a `LabelTokModel` does not have. `labeltok_pipeline(model)` wraps the model in a module that
carries such a config, so the standard `TextClassificationPipeline` (batching, `top_k`, devices) works unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, TextClassificationPipeline

from .decoding import resolve_max_length


class LabelTokPipelineModel(nn.Module):
    """A `LabelTokModel` as the pipeline sees it: a module with a `config` and a forward returning logits.

    The config is built from the active adapter each time it is read, so `set_adapter` on the wrapped model is
    picked up.

    Args:
        model: a `LabelTokModel` with an active adapter.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def config(self) -> PretrainedConfig:
        labeltok_config = self.model.labeltok_config
        return PretrainedConfig(
            id2label=labeltok_config.id2label,
            label2id=labeltok_config.label2id,
            problem_type=labeltok_config.problem_type.value,
        )

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def can_generate(self) -> bool:
        return False

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        """Scores `[batch, seq_len]` token ids; returns `SequenceClassifierOutput` with `[batch, num_labels]` logits."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


class LabelTokClassificationPipeline(TextClassificationPipeline):
    """`TextClassificationPipeline` that accepts a `LabelTokPipelineModel` (not in transformers' model registry)."""

    def check_model_type(self, supported_models) -> None:
        # The registry lists *ForSequenceClassification classes only; a LabelTokPipelineModel returns the same
        # outputs, so the check (which only logs an error) does not apply.
        return None


def labeltok_pipeline(model: nn.Module, tokenizer=None, max_length: int | None = None, **kwargs: Any):
    """A `transformers.TextClassificationPipeline` over a `LabelTokModel`.

    Example:

    ```python
    >>> classifier = labeltok_pipeline(model)
    >>> classifier("Shares fell after the bank's profit warning")
    [{'label': 'business', 'score': 0.97}]
    >>> classifier("...", top_k=None)  # every label with its score
    ```

    Single-label adapters get softmax scores and multi-label adapters sigmoid scores (from the adapter's problem
    type). Texts are truncated to what fits beside the label tokens.

    Args:
        model: a `LabelTokModel` (for example from `LabelTokModel.from_pretrained`).
        tokenizer: the backbone's tokenizer; defaults to `model.tokenizer`.
        max_length: truncate texts to this many tokens; default: what fits beside the labels, at most 512.
        **kwargs: passed to `TextClassificationPipeline` (for example `device`, `batch_size`, `top_k`).

    Returns:
        A `LabelTokClassificationPipeline` (a `TextClassificationPipeline`); call it on a text or a list of texts.
    """
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("labeltok_pipeline needs a tokenizer: pass tokenizer=... or load the model with one.")
    max_length = resolve_max_length(model, max_length, tokenizer, flag="max_length")
    kwargs.setdefault("truncation", True)
    kwargs.setdefault("max_length", max_length)
    model.eval()
    return LabelTokClassificationPipeline(model=LabelTokPipelineModel(model), tokenizer=tokenizer, **kwargs)
