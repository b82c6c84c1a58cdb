"""The four label initialisations compute what they promise."""

from __future__ import annotations

import torch
from tiny_models import tiny_backbone, tokenizer_for

from labeltok_peft import LabelTokConfig, get_labeltok_model

LABELS = ["team", "bank profit", "film"]


def build(init: str, **kwargs):
    """Labels through every layer, so rows are input embeddings (late-injection rows: test_late_injection.py)."""
    kwargs.setdefault("label_layers", None)
    tokenizer = tokenizer_for("bert")
    backbone = tiny_backbone("bert")
    model = get_labeltok_model(backbone, LabelTokConfig(labels=LABELS, label_init=init, **kwargs), tokenizer=tokenizer)
    return model, backbone.get_input_embeddings().weight.detach(), tokenizer


def test_label_text_is_mean_of_label_token_embeddings():
    model, weight, tokenizer = build("label_text")
    table = model.label_tables["default"].detach()
    for row, label in zip(table, LABELS, strict=True):
        ids = tokenizer(label, add_special_tokens=False)["input_ids"]
        torch.testing.assert_close(row, weight[ids].mean(0))


def test_label_descriptions_replace_names():
    model, weight, tokenizer = build("label_text", label_descriptions={"film": "actor award star"})
    ids = tokenizer("actor award star", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(model.label_tables["default"][2].detach(), weight[ids].mean(0))


def test_cls_init():
    model, weight, tokenizer = build("cls")
    expected = weight[tokenizer.cls_token_id].expand(len(LABELS), -1)
    torch.testing.assert_close(model.label_tables["default"].detach(), expected)


def test_vocab_mean_init():
    model, weight, _ = build("vocab_mean")
    torch.testing.assert_close(model.label_tables["default"].detach(), weight.mean(0).expand(len(LABELS), -1))


def test_random_init_is_seeded_and_scaled():
    first, weight, _ = build("random", init_seed=3)
    second, _, _ = build("random", init_seed=3)
    other, _, _ = build("random", init_seed=4)
    torch.testing.assert_close(first.label_tables["default"], second.label_tables["default"])
    assert not torch.equal(first.label_tables["default"], other.label_tables["default"])
    std = float(first.label_tables["default"].std())
    assert 0.3 * float(weight.std()) < std < 3 * float(weight.std())
