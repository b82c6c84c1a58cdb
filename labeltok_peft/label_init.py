"""Initial values of the label table: random, CLS, vocabulary mean or the mean embedding of the label's text.

With late injection (`label_layers = n` below the backbone's depth L) label rows enter at layer L-n, so 'label_text'
starts each row from the hidden state entering layer L-n instead of the input embedding: the label's text (or
description) is tokenized as its own sequence with the special tokens the tokenizer adds (so the backbone sees the
kind of input it was trained on), run through the frozen backbone (LoRA off) up to that layer, and averaged over the
label text's own tokens; the special tokens give context but are left out of the mean (a decoder's BOS state is an
outlier, an attention sink, that would dominate it). 'random', 'vocab_mean' and 'cls' keep their input-embedding
values, whose scale may differ from the layer's hidden states.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .config import AUTO, LabelInit, LabelTokConfig
from .late_injection import layer_input, num_layers


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


@torch.no_grad()
def layer_label_text_rows(
    texts: list[str], backbone: nn.Module, tokenizer, layer_index: int, batch_size: int = 64
) -> torch.Tensor:
    """`[len(texts), hidden]` fp32: each text's mean hidden state entering layer `layer_index`, over its own tokens.

    Args:
        texts: one text per label.
        backbone: the backbone as the model calls it (a `PeftModel`, whose adapters are switched off here, or the bare
            transformer).
        tokenizer: the backbone's tokenizer (with a pad token).
        layer_index: L-n for late injection into the last n layers.
        batch_size: texts per backbone call (right-padded, so real tokens keep positions 0, 1, ...).
    """
    disabled = backbone.disable_adapter() if hasattr(backbone, "disable_adapter") else contextlib.nullcontext()
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    rows = []
    try:
        with disabled:
            for start in range(0, len(texts), batch_size):
                encoded = tokenizer(
                    texts[start : start + batch_size],
                    padding=True,
                    padding_side="right",
                    return_special_tokens_mask=True,
                    return_tensors="pt",
                ).to(device)
                own_tokens = encoded["attention_mask"].bool() & ~encoded.pop("special_tokens_mask").bool()
                hidden = layer_input(
                    backbone, layer_index, input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]
                ).float()
                weights = own_tokens[:, :, None].to(hidden.dtype)
                rows.append((hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1))
    finally:
        backbone.train(was_training)
    return torch.cat(rows)


def initial_label_table(
    config: LabelTokConfig, embeddings: nn.Module, tokenizer=None, backbone: nn.Module | None = None
) -> torch.Tensor:
    """Computes the starting label table.

    Args:
        config: the adapter config (labels, `label_init`, optional `label_descriptions`, `init_seed`, `label_layers`),
            resolved for the backbone (`LabelTokModel` resolves `label_layers='auto'` before it calls this).
        embeddings: the backbone's input embedding module (`backbone.get_input_embeddings()`).
        tokenizer: the backbone's tokenizer; needed by the 'label_text' and 'cls' initialisations.
        backbone: the backbone as the model calls it; needed by 'label_text' with late injection (`label_layers`
            below the backbone's depth), whose rows are hidden states of layer L-n.

    Returns:
        `[num_labels, hidden]` fp32 tensor on the embedding's device.
    """
    weight = embeddings.weight
    num_labels, hidden = config.num_labels, weight.shape[1]
    init = config.label_init
    if init == LabelInit.LABEL_TEXT and config.label_layers == AUTO:
        raise ValueError(
            "initial_label_table needs label_layers resolved for the backbone (where label rows enter depends on "
            "it), got 'auto': pass config.resolve_modes(...) or a concrete label_layers (None for every layer)."
        )
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
    texts = label_texts(config)
    for label, text in zip(config.labels, texts, strict=True):
        token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not token_ids:
            raise ValueError(
                f"The text {text!r} of label {label!r} tokenizes to nothing, so label_init='label_text' cannot use "
                "it; give the label a description in label_descriptions or use another label_init."
            )
        rows.append(token_ids)
    bare = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
    depth = num_layers(bare) if bare is not None else None
    if config.label_layers is not None and (depth is None or config.label_layers < depth):
        if backbone is None:
            raise ValueError(
                "label_init='label_text' with label_layers needs the backbone (rows start from a hidden state of "
                "layer L-n): pass backbone=... to initial_label_table."
            )
        return layer_label_text_rows(texts, backbone, tokenizer, depth - config.label_layers).to(weight.device)
    return torch.stack([_embed_ids(embeddings, token_ids).mean(dim=0) for token_ids in rows])
