"""`label_anchor_weight`: a penalty that keeps the label table near the rows it started from (L2-SP)."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import tiny_backbone, tokenizer_for

from labeltok_peft import LabelTokConfig, LabelTokModel, get_labeltok_model
from labeltok_peft.cli.arguments import LabelTokArguments

LABELS = ["sport", "business", "film", "tech"]
TEXTS = ["the team won the match", "bank profit and market shares", "film actor award", "phone software chip"]
TARGETS = torch.tensor([0, 1, 2, 3])


def build(**config_kwargs) -> tuple[LabelTokModel, dict]:
    tokenizer = tokenizer_for("bert")
    config = LabelTokConfig(labels=LABELS, lora={"r": 4}, **config_kwargs)
    model = get_labeltok_model(tiny_backbone("bert"), config, tokenizer=tokenizer)
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"), labels=TARGETS)
    return model, batch


def train(model: LabelTokModel, batch: dict, steps: int) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    model.train()
    for _ in range(steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def loss_with_weight(model: LabelTokModel, batch: dict, weight: float) -> torch.Tensor:
    model.labeltok_config.label_anchor_weight = weight
    torch.manual_seed(0)  # the same sampled labels for every call
    return model(**batch).loss


@pytest.mark.parametrize("options", [{}, dict(label_attention="isolated", label_sample_size=2)], ids=["all", "sampled"])
def test_training_loss_adds_the_weighted_mean_squared_drift(options):
    model, batch = build(label_anchor_weight=0.5, **options)
    delta = torch.randn_like(model.label_tables["default"])
    with torch.no_grad():
        model.label_tables["default"] += delta
    model.train()
    penalty = loss_with_weight(model, batch, 0.5) - loss_with_weight(model, batch, 0.0)
    assert math.isclose(penalty.item(), 0.5 * delta.pow(2).sum(-1).mean().item(), rel_tol=1e-5)
    model.eval()  # evaluation reports the task loss alone
    assert torch.equal(loss_with_weight(model, batch, 0.5), loss_with_weight(model, batch, 0.0))


def test_training_keeps_rows_nearer_their_start():
    drift = {}
    for weight in (0.0, 10.0):
        model, batch = build(label_anchor_weight=weight)
        start = model.label_tables["default"].detach().clone()
        train(model, batch, steps=30)
        drift[weight] = (model.label_tables["default"].detach() - start).norm(dim=-1).mean().item()
    assert drift[10.0] < 0.5 * drift[0.0], drift


def test_added_labels_anchor_at_their_init_and_removed_labels_take_theirs_along():
    model, batch = build(label_anchor_weight=1.0)
    start = model.label_tables["default"].detach().clone()
    train(model, batch, steps=3)
    assert not torch.equal(model.label_tables["default"], start)
    model.add_labels(["music", "election"])
    anchor = model.label_anchors["default"]
    assert torch.equal(anchor[:4], start)  # the trained rows keep their starting rows, not their trained ones
    assert torch.equal(anchor[4:], model.label_tables["default"].detach()[4:])
    model.remove_labels(["business", "music"])
    assert torch.equal(model.label_anchors["default"], anchor[[0, 2, 3, 5]])
    model.train()
    assert torch.isfinite(model(**dict(batch, labels=torch.tensor([0, 1, 2, 3]))).loss)


def test_a_loaded_adapter_anchors_at_its_saved_rows(tmp_path):
    model, batch = build(label_anchor_weight=2.0)
    train(model, batch, steps=3)
    model.save_pretrained(tmp_path)
    loaded = LabelTokModel.from_pretrained(tiny_backbone("bert"), tmp_path, tokenizer=tokenizer_for("bert"))
    assert loaded.labeltok_config.label_anchor_weight == 2.0
    assert torch.equal(loaded.label_anchors["default"], model.label_tables["default"].detach())
    loaded.load_adapter(tmp_path, adapter_name="task_2")
    loaded.set_adapter("task_2")
    loaded.delete_adapter("default")
    assert list(loaded.label_anchors) == ["task_2"]


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf"), True, "0.5"])
def test_a_bad_weight_is_refused(weight):
    with pytest.raises(ValueError, match="label_anchor_weight must be a finite number >= 0"):
        LabelTokConfig(labels=LABELS, label_anchor_weight=weight)


def test_the_command_line_refuses_a_negative_weight():
    with pytest.raises(ValueError, match="--label_anchor_weight must be a finite, non-negative number"):
        LabelTokArguments(label_anchor_weight=-0.1)


def test_configs_saved_without_the_field_load_without_a_penalty():
    values = LabelTokConfig(labels=LABELS, label_anchor_weight=3).to_dict()
    assert LabelTokConfig.from_dict(values).label_anchor_weight == 3.0
    del values["label_anchor_weight"]
    assert LabelTokConfig.from_dict(values).label_anchor_weight == 0.0
