"""`train_only_labels`: fine-tuning the rows of some labels (new ones) leaves everything else bitwise unchanged."""

from __future__ import annotations

import pytest
import torch
from tiny_models import optimize_on_batch, tiny_backbone, tokenizer_for

from labeltok_peft import LabelTokConfig, get_labeltok_model
from labeltok_peft.optim import create_optimizer

LABELS = ["sport", "business", "film", "tech"]
NEW = ["music", "election"]
TEXTS = ["the team won the match", "bank profit and market shares", "music award show", "election vote minister"]
TARGETS = torch.tensor([0, 1, 4, 5])
ISOLATED = dict(label_attention="isolated", label_positions="shared")
CASES = {
    "full": dict(lora={"r": 4}),
    "isolated_bias": dict(ISOLATED, lora={"r": 4}, per_label_bias=True),
    "tied_late": dict(ISOLATED, lora={"r": 4}, head_type="tied", label_layers=1),
}


def train_steps(model, tokenizer, optimizer, steps: int = 3, labels: torch.Tensor = TARGETS) -> None:
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"), labels=labels)
    optimize_on_batch(model, batch, optimizer, steps)


def trained_with_new_labels(**config_kwargs):
    """A model trained a few steps on LABELS (so nothing sits at its init), then given the NEW labels."""
    tokenizer = tokenizer_for("bert")
    model = get_labeltok_model(
        tiny_backbone("bert"), LabelTokConfig(labels=LABELS, **config_kwargs), tokenizer=tokenizer
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    train_steps(model, tokenizer, optimizer, labels=torch.tensor([0, 1, 2, 3]))
    model.add_labels(NEW)
    return model, tokenizer


def state(model) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def flags(model) -> dict[str, bool]:
    return {name: parameter.requires_grad for name, parameter in model.named_parameters()}


@pytest.mark.parametrize("case", list(CASES))
def test_adamw_moves_only_the_named_rows(case):
    model, tokenizer = trained_with_new_labels(**CASES[case])
    before = state(model)
    assert any("lora_" in key for key in before)
    handle = model.train_only_labels(NEW)
    # Every parameter goes to the optimizer, with weight decay: frozen ones get no gradient (AdamW skips them), the
    # masked rows get exact zeros. Decay would shrink masked rows too (it ignores gradients), so it is off on the
    # table and the per-label bias, as in `create_optimizer`.
    per_label = [model.label_tables["default"]]
    per_label += [p for n, p in model.named_parameters() if n.endswith(("label_bias", "label_weight"))]
    others = [p for p in model.parameters() if all(p is not q for q in per_label)]
    optimizer = torch.optim.AdamW([{"params": per_label, "weight_decay": 0.0}, {"params": others}], lr=5e-2)
    train_steps(model, tokenizer, optimizer)
    handle.remove()
    after = state(model)
    new = [model.label2id[name] for name in NEW]
    old = [model.label2id[name] for name in LABELS]
    for key, value in before.items():
        if key == "label_tables.default":
            assert torch.equal(after[key][old], value[old])
            assert all(not torch.equal(after[key][index], value[index]) for index in new)
        elif key in ("heads.default.label_bias", "heads.default.label_weight"):  # per-label: rows follow the table
            assert torch.equal(after[key][old], value[old])
            assert all(not torch.equal(after[key][index], value[index]) for index in new)
        else:
            assert torch.equal(after[key], value), key


def test_train_head_also_moves_the_head_but_not_the_other_rows_or_lora():
    model, tokenizer = trained_with_new_labels(**CASES["isolated_bias"])
    before = state(model)
    with model.train_only_labels(NEW, train_head=True):
        train_steps(model, tokenizer, create_optimizer(model, 5e-4, label_learning_rate=5e-2, head_learning_rate=5e-2))
    after = state(model)
    old = [model.label2id[name] for name in LABELS]
    assert not torch.equal(after["heads.default.score.weight"], before["heads.default.score.weight"])
    assert torch.equal(after["label_tables.default"][old], before["label_tables.default"][old])
    assert torch.equal(after["heads.default.label_bias"][old], before["heads.default.label_bias"][old])
    lora = [key for key in before if "lora_" in key]
    assert lora and all(torch.equal(after[key], before[key]) for key in lora)


def test_isolated_old_logits_stay_bitwise_while_new_ones_move():
    model, tokenizer = trained_with_new_labels(**CASES["isolated_bias"])
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**encoded).logits
    with model.train_only_labels(NEW):
        train_steps(model, tokenizer, create_optimizer(model, 5e-4, label_learning_rate=5e-2))
    with torch.no_grad():
        after = model(**encoded).logits
    assert torch.equal(after[:, : len(LABELS)], before[:, : len(LABELS)])
    assert not torch.equal(after[:, len(LABELS) :], before[:, len(LABELS) :])


def test_flags_and_masks_hold_until_remove_then_are_restored():
    model, tokenizer = trained_with_new_labels(**CASES["isolated_bias"])
    previous = flags(model)
    handle = model.train_only_labels("music")
    trainable = {name for name, flag in flags(model).items() if flag}
    assert trainable == {"label_tables.default", "heads.default.label_bias", "heads.default.label_weight"}
    assert handle.names == ["music"] and handle.indices == [model.label2id["music"]]
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"), labels=TARGETS)
    model(**batch).loss.backward()
    grad = model.label_tables["default"].grad
    assert grad[model.label2id["music"]].abs().sum() > 0
    assert torch.count_nonzero(grad[[i for i in range(grad.shape[0]) if i != model.label2id["music"]]]) == 0
    model.zero_grad(set_to_none=True)
    handle.remove()
    handle.remove()  # idempotent
    assert flags(model) == previous
    model(**batch).loss.backward()  # the mask is gone: every row gets its gradient again
    assert torch.count_nonzero(model.label_tables["default"].grad.abs().sum(-1)) == len(LABELS + NEW)


def test_unknown_or_repeated_names_are_refused_and_change_nothing():
    model, _ = trained_with_new_labels()
    previous = flags(model)
    with pytest.raises(ValueError, match=r"\['opera'\] are not labels .*'sport', 'business'.*add_labels"):
        model.train_only_labels(["music", "opera"])
    with pytest.raises(ValueError, match="more than once"):
        model.train_only_labels(["music", "music"])
    with pytest.raises(ValueError, match="no label names"):
        model.train_only_labels([])
    assert flags(model) == previous
    batch = dict(model.tokenizer(TEXTS, padding=True, return_tensors="pt"), labels=TARGETS)
    model(**batch).loss.backward()  # no mask was left behind
    assert torch.count_nonzero(model.label_tables["default"].grad.abs().sum(-1)) == len(LABELS + NEW)
