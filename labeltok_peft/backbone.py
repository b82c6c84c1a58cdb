"""What the adapter needs to know about a transformers backbone: encoder or decoder, positions, embeddings."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

# Model types whose attention takes no custom 4D mask (DeBERTa builds its own relative-position attention).
_NO_CUSTOM_4D_MASK_TYPES = {"deberta", "deberta-v2"}

# Model types whose position ids start after the padding index (RoBERTa's convention).
_PADDING_OFFSET_POSITION_TYPES = {
    "roberta",
    "roberta-prelayernorm",
    "xlm-roberta",
    "xlm-roberta-xl",
    "camembert",
    "data2vec-text",
    "longformer",
}


@dataclass(frozen=True)
class BackboneInfo:
    """Facts about a backbone read once when the adapter is built.

    Attributes:
        model_type: `config.model_type` (for example `"bert"` or `"llama"`).
        hidden_size: width of the input embeddings and of the last hidden state.
        is_causal: whether tokens see only earlier tokens (a causal decoder).
        accepts_position_ids: whether the base model's forward takes `position_ids`.
        accepts_token_type_ids: whether the base model's forward takes `token_type_ids`.
        position_offset: the position id of the first token (RoBERTa-style models start after the pad index).
        max_positions: how many positions a sequence may use, or `None` where positions are not a hard limit
            (rotary embeddings).
        supports_custom_4d_mask: whether the backbone accepts the 4D float mask of isolated label attention.
    """

    model_type: str
    hidden_size: int
    is_causal: bool
    accepts_position_ids: bool
    accepts_token_type_ids: bool
    position_offset: int
    max_positions: int | None
    supports_custom_4d_mask: bool = True


def base_transformer(model: nn.Module) -> nn.Module:
    """Returns the bare transformer of a model (`LlamaModel` for a `LlamaForCausalLM`, the model itself otherwise).

    The adapter only needs hidden states, so an LM head over the whole vocabulary would be wasted work.
    """
    if isinstance(model, PreTrainedModel):
        return model.base_model
    return model


def _forward_parameters(model: nn.Module) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def _has_learned_absolute_positions(model: nn.Module) -> bool:
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Embedding) and leaf in {"position_embeddings", "wpe", "embed_positions"}:
            return True
    return False


def inspect_backbone(model: nn.Module) -> BackboneInfo:
    """Reads what the adapter needs from a bare transformer (see `base_transformer`).

    Raises:
        TypeError: if the model has no `config` or its forward does not take `inputs_embeds`.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(
            f"{type(model).__name__} has no `config`; pass a transformers model such as AutoModel.from_pretrained(...)."
        )
    parameters = _forward_parameters(model)
    if "inputs_embeds" not in parameters:
        raise TypeError(
            f"{type(model).__name__}.forward does not accept `inputs_embeds`, which label tokens need to be "
            "spliced into the input. Use a backbone whose forward takes inputs_embeds (BERT, RoBERTa, DeBERTa-v2, "
            "DistilBERT, ModernBERT, Llama, Qwen, Mistral, Gemma, GPT-2, ...)."
        )
    model_type = getattr(config, "model_type", "") or ""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden_size = getattr(text_config, "hidden_size", None) or getattr(text_config, "n_embd", None)
    if hidden_size is None:
        hidden_size = model.get_input_embeddings().embedding_dim
    is_encoder = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
    position_offset = 0
    if model_type in _PADDING_OFFSET_POSITION_TYPES:
        position_offset = (getattr(config, "pad_token_id", None) or 0) + 1
    max_positions = None
    if _has_learned_absolute_positions(model):
        limit = getattr(text_config, "max_position_embeddings", None) or getattr(text_config, "n_positions", None)
        if limit is not None:
            max_positions = int(limit) - position_offset
    return BackboneInfo(
        model_type=model_type,
        hidden_size=int(hidden_size),
        is_causal=not is_encoder,
        accepts_position_ids="position_ids" in parameters,
        accepts_token_type_ids="token_type_ids" in parameters,
        position_offset=position_offset,
        max_positions=max_positions,
        supports_custom_4d_mask=model_type not in _NO_CUSTOM_4D_MASK_TYPES,
    )
