"""The default label attention, positions and label layers, `auto`: resolved per backbone when the adapter is added,
and saved so."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import TINY, VOCAB_SIZE, tiny_backbone, tokenizer_for
from transformers import DebertaV2Config, DebertaV2Model

from labeltok_peft import LabelTokConfig, LabelTokModel, get_labeltok_model

LABELS = ["sport", "business", "film"]
TEXTS = ["the team won the match", "bank profit and market shares"]


def deberta() -> torch.nn.Module:
    """A tiny DeBERTa-v2: its relative attention takes no custom 4D mask, so no isolated label attention."""
    torch.manual_seed(0)
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return DebertaV2Model(DebertaV2Config(vocab_size=VOCAB_SIZE, max_position_embeddings=64, **no_dropout, **TINY))


BACKBONES = {"bert": lambda: tiny_backbone("bert"), "llama": lambda: tiny_backbone("llama"), "deberta-v2": deberta}
# What `auto` becomes on each backbone: isolated attention with shared positions where the backbone takes it.
RESOLVED = {"bert": ("isolated", "shared"), "llama": ("isolated", "shared"), "deberta-v2": ("full", "sequential")}


def build(family: str, **kwargs) -> LabelTokModel:
    torch.manual_seed(0)
    config = LabelTokConfig(labels=LABELS, label_init="random", lora={"r": 4, "init_lora_weights": False}, **kwargs)
    return get_labeltok_model(BACKBONES[family]().eval(), config)


def batch() -> dict[str, torch.Tensor]:
    """The same ids for every backbone (the tiny word-level vocabulary is shared), padded on the right."""
    encoded = tokenizer_for("bert")(TEXTS, padding=True, return_tensors="pt", return_token_type_ids=False)
    return dict(encoded)


def modes(config: LabelTokConfig) -> tuple[str, str]:
    return config.label_attention.value, config.label_positions.value


@pytest.mark.parametrize("family", sorted(RESOLVED))
def test_auto_resolves_per_backbone_and_the_resolved_modes_are_saved(family, tmp_path):
    assert modes(LabelTokConfig(labels=LABELS)) == ("auto", "auto")  # the default, before a backbone is known
    model = build(family)
    assert modes(model.labeltok_config) == RESOLVED[family]
    attention, positions = RESOLVED[family]
    # The resolved modes are the ones that run: the same logits as naming them.
    named = build(family, label_attention=attention, label_positions=positions)
    with torch.no_grad():
        logits = model(**batch()).logits
        torch.testing.assert_close(logits, named(**batch()).logits, atol=0, rtol=0)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "labeltok_config.json").read_text())["labeltok_config"]
    assert (saved["label_attention"], saved["label_positions"]) == RESOLVED[family]
    loaded = LabelTokModel.from_pretrained(BACKBONES[family]().eval(), tmp_path)
    assert modes(loaded.labeltok_config) == RESOLVED[family]
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch()).logits, logits, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(label_attention="full"), ("full", "sequential")),  # labels that see each other keep their own positions
        (dict(label_attention="isolated"), ("isolated", "shared")),
        (dict(label_positions="sequential"), ("isolated", "sequential")),
    ],
)
def test_auto_fills_in_only_what_was_left_to_it(kwargs, expected):
    assert modes(build("bert", **kwargs).labeltok_config) == expected


@pytest.mark.parametrize("option", [dict(label_layers=1), dict(label_sample_size=2), dict(label_chunk_size=1)])
def test_auto_on_deberta_refuses_options_that_need_isolation_naming_them(option):
    (name,) = option
    with pytest.raises(ValueError, match=rf"LabelTokConfig\.{name} needs isolated label attention.*unset it"):
        build("deberta-v2", **option)
    assert modes(build("bert", **option).labeltok_config) == ("isolated", "shared")  # fine where isolation runs


@pytest.mark.parametrize("kernel", ["flash_attention_2", "flex_attention"])
def test_auto_falls_back_to_full_attention_on_kernels_the_label_pass_cannot_reproduce(kernel):
    """A backbone loaded with flash or flex attention gets full attention from `auto` instead of an error about an
    isolation the user never asked for (asked for explicitly, isolation is still refused with the fix)."""
    backbone = tiny_backbone("llama")
    backbone.config._attn_implementation = kernel
    model = get_labeltok_model(backbone, LabelTokConfig(labels=LABELS, label_init="random"))
    config = model.labeltok_config
    assert (config.label_attention.value, config.label_positions.value) == ("full", "sequential")
    backbone = tiny_backbone("llama")
    backbone.config._attn_implementation = kernel
    with pytest.raises(ValueError, match="attn_implementation='sdpa'"):
        get_labeltok_model(backbone, LabelTokConfig(labels=LABELS, label_init="random", label_attention="isolated"))


# ---------------------------------------------------------------------------------------------- label_layers='auto'


@pytest.mark.parametrize(
    ("family", "kwargs", "expected"),
    [
        ("bert", {}, 1),  # an encoder that takes the label pass: labels in the last layer
        ("bert", dict(label_attention="isolated"), 1),
        ("bert", dict(label_attention="full"), None),  # full attention runs labels through every layer
        ("llama", {}, None),  # causal decoders keep every layer (SmolLM2-135M did not learn in its last layer)
        ("deberta-v2", {}, None),  # no isolated attention, so no late injection
    ],
)
def test_auto_label_layers_resolve_per_backbone(family, kwargs, expected):
    assert LabelTokConfig(labels=LABELS).label_layers == "auto"
    assert build(family, **kwargs).labeltok_config.label_layers == expected


def test_auto_label_layers_are_saved_resolved_and_old_configs_read_as_every_layer(tmp_path):
    model = get_labeltok_model(tiny_backbone("bert"), LabelTokConfig(labels=LABELS), tokenizer=tokenizer_for("bert"))
    model.save_pretrained(tmp_path / "late")
    saved = json.loads((tmp_path / "late" / "labeltok_config.json").read_text())["labeltok_config"]
    assert saved["label_layers"] == 1
    assert "label layers: the last 1 (late injection)" in (tmp_path / "late" / "README.md").read_text()
    loaded = LabelTokModel.from_pretrained(tiny_backbone("bert"), tmp_path / "late")
    assert loaded.labeltok_config.label_layers == 1
    del saved["label_layers"]  # a config written before label_layers existed ran labels through every layer
    assert LabelTokConfig.from_dict(saved).label_layers is None


def test_initial_rows_need_a_resolved_label_layers():
    from labeltok_peft.label_init import initial_label_table

    backbone = tiny_backbone("bert")
    with pytest.raises(ValueError, match="label_layers resolved for the backbone"):
        initial_label_table(LabelTokConfig(labels=LABELS), backbone.get_input_embeddings(), tokenizer_for("bert"))
