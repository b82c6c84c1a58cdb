"""Initial values of the label table: random, CLS, vocabulary mean or the mean embedding of the label's text."""

from __future__ import annotations

import torch
from torch import nn

from .config import LabelInit, LabelTokConfig


def _embed_ids(embeddings: nn.Module, token_ids: list[int]) -> torch.Tensor:
    """`[len(token_ids), hidden]` fp32 outputs of the embedding module (keeps any scaling the module applies)."""
    weight = embeddings.weight
    ids = torch.tensor(token_ids, dtype=torch.long, device=weight.device)
    with torch.no_grad():
        return embeddings(ids).float()


def vocab_mean_embedding(embeddings: nn.Module, chunk_size: int = 32768) -> torch.Tensor:
    """`[hidden]` mean of the embedding module's output over the whole vocabulary."""
    vocab_size = embeddings.weight.shape[0]
    total = None
    for start in range(0, vocab_size, chunk_size):
        rows = _embed_ids(embeddings, list(range(start, min(start + chunk_size, vocab_size))))
        total = rows.sum(dim=0) if total is None else total + rows.sum(dim=0)
    return total / vocab_size


def label_texts(config: LabelTokConfig) -> list[str]:
    """The text each label is initialised from: its description when given, else its name with `_` as spaces."""
    descriptions = config.label_descriptions or {}
    return [descriptions.get(label, label.replace("_", " ")) for label in config.labels]


def _first_special_token_id(tokenizer) -> int:
    for name in ("cls_token_id", "bos_token_id"):
        token_id = getattr(tokenizer, name, None)
        if token_id is not None:
            return token_id
    raise ValueError(
        "label_init='cls' needs a tokenizer with a CLS or BOS token; this tokenizer has neither. "
        "Use label_init='label_text' or 'vocab_mean'."
    )


def initial_label_table(config: LabelTokConfig, embeddings: nn.Module, tokenizer=None) -> torch.Tensor:
    """Computes the starting label table.

    Args:
        config: the adapter config (labels, `label_init`, optional `label_descriptions`, `init_seed`).
        embeddings: the backbone's input embedding module (`backbone.get_input_embeddings()`).
        tokenizer: the backbone's tokenizer; needed by the 'label_text' and 'cls' initialisations.

    Returns:
        `[num_labels, hidden]` fp32 tensor on the embedding's device.
    """
    weight = embeddings.weight
    num_labels, hidden = config.num_labels, weight.shape[1]
    init = config.label_init
    if init in (LabelInit.LABEL_TEXT, LabelInit.CLS) and tokenizer is None:
        raise ValueError(
            f"label_init={init.value!r} needs the backbone's tokenizer: pass tokenizer=... to get_labeltok_model, "
            "or use label_init='vocab_mean' or 'random'."
        )
    if init == LabelInit.RANDOM:
        generator = torch.Generator().manual_seed(config.init_seed)
        std = float(weight.float().std())
        return (torch.randn(num_labels, hidden, generator=generator) * std).to(weight.device)
    if init == LabelInit.VOCAB_MEAN:
        return vocab_mean_embedding(embeddings).expand(num_labels, hidden).clone()
    if init == LabelInit.CLS:
        return _embed_ids(embeddings, [_first_special_token_id(tokenizer)]).expand(num_labels, hidden).clone()
    rows = []
    for label, text in zip(config.labels, label_texts(config), strict=True):
        token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not token_ids:
            raise ValueError(
                f"The text {text!r} of label {label!r} tokenizes to nothing, so label_init='label_text' cannot use "
                "it; give the label a description in label_descriptions or use another label_init."
            )
        rows.append(_embed_ids(embeddings, token_ids).mean(dim=0))
    return torch.stack(rows)
