"""Which backbone families take label tokens: every option on tiny random models of each family."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    DebertaV2Config,
    DebertaV2Model,
    DistilBertConfig,
    DistilBertModel,
    ElectraConfig,
    ElectraModel,
    Gemma3TextConfig,
    Gemma3TextModel,
    MistralConfig,
    MistralModel,
    ModernBertConfig,
    ModernBertModel,
    Qwen3Config,
    Qwen3Model,
)

from labeltok_peft import LabelTokConfig, get_labeltok_model

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
SPECIAL_IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)

FAMILIES = {
    "distilbert": lambda: DistilBertModel(
        DistilBertConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64)
    ),
    "electra": lambda: ElectraModel(
        ElectraConfig(vocab_size=64, embedding_size=32, max_position_embeddings=64, **NO_DROPOUT, **TINY)
    ),
    "modernbert": lambda: ModernBertModel(
        ModernBertConfig(
            vocab_size=64, max_position_embeddings=64, cls_token_id=1, sep_token_id=2, **SPECIAL_IDS, **TINY
        )
    ),
    "deberta-v2": lambda: DebertaV2Model(
        DebertaV2Config(vocab_size=64, max_position_embeddings=64, **NO_DROPOUT, **TINY)
    ),
    "mistral": lambda: MistralModel(MistralConfig(vocab_size=64, num_key_value_heads=2, **SPECIAL_IDS, **TINY)),
    "qwen3": lambda: Qwen3Model(Qwen3Config(vocab_size=64, num_key_value_heads=2, head_dim=8, **SPECIAL_IDS, **TINY)),
    "gemma3": lambda: Gemma3TextModel(
        Gemma3TextConfig(vocab_size=64, num_key_value_heads=2, head_dim=8, **SPECIAL_IDS, **TINY)
    ),
}
DECODER_FAMILIES = {"mistral", "qwen3", "gemma3"}
LABELS = ["a", "b", "c"]


def build(family: str, **kwargs):
    torch.manual_seed(0)
    config = LabelTokConfig(labels=LABELS, label_init="random", **kwargs)
    return get_labeltok_model(FAMILIES[family]().eval(), config)


def batch(padding_side: str = "right") -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, 64, (2, 6), generator=generator)
    mask = torch.ones(2, 6, dtype=torch.long)
    if padding_side == "right":
        mask[1, 4:] = 0
    else:
        input_ids[1] = torch.cat([input_ids[1, 4:], input_ids[1, :4]])
        mask[1, :2] = 0
    return {"input_ids": input_ids, "attention_mask": mask}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_full_attention_trains(family):
    model = build(family, label_attention="full")
    assert model.backbone_info.is_causal == (family in DECODER_FAMILIES)
    out = model(**batch(), labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, len(LABELS))
    out.loss.backward()
    assert model.label_tables["default"].grad.abs().sum() > 0


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"deberta-v2"}))
@pytest.mark.parametrize("positions", ["sequential", "shared"])
def test_isolated_attention_is_exact(family, positions):
    model = build(family, label_attention="isolated", label_positions=positions)
    before = model(**batch()).logits
    with torch.no_grad():
        model.label_tables["default"][1:] += torch.randn_like(model.label_tables["default"][1:])
    after = model(**batch()).logits
    torch.testing.assert_close(after[:, 0], before[:, 0], atol=1e-5, rtol=0)
    model.labeltok_config.label_chunk_size = 1
    torch.testing.assert_close(model(**batch()).logits, after, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", sorted(DECODER_FAMILIES))
def test_decoder_padding_side_does_not_matter(family):
    model = build(family)
    torch.testing.assert_close(model(**batch("left")).logits, model(**batch("right")).logits, atol=1e-5, rtol=0)


def test_deberta_refuses_isolated_attention_with_the_fix():
    with pytest.raises(ValueError, match="use label_attention='full'"):
        build("deberta-v2", label_attention="isolated")
