"""Head variants: the tied head (a label's own table row is also its output vector), the residual head, the cosine head."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_backbone, tokenizer_for

from labeltok_peft import LabelTokConfig, LabelTokModel, get_labeltok_model

LABELS = ["sport", "business", "film", "tech"]
TEXTS = ["the team won the match", "bank profit and market shares", "film actor award", "phone software chip"]


def build(family: str = "bert", **config_kwargs) -> tuple[LabelTokModel, object]:
    tokenizer = tokenizer_for(family)
    config = LabelTokConfig(labels=LABELS, head_type="tied", label_init="random", **config_kwargs)
    return get_labeltok_model(tiny_backbone(family), config, tokenizer=tokenizer), tokenizer


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("attention", ["full", "isolated"])
def test_tied_logit_is_linear_plus_scaled_cosine_with_own_row(family, attention):
    """The logits equal score(h_k) + tied_scale * cos(h_k, e_k), computed here from the label outputs by hand."""
    model, tokenizer = build(family, label_attention=attention)
    model.eval()
    head = model.heads["default"]
    with torch.no_grad():
        head.tied_scale.fill_(3.0)
    captured = []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    hook.remove()
    label_hidden = torch.cat(captured, dim=1)  # [batch, num_labels, hidden]
    table = model.label_tables["default"]
    expected = head.score(label_hidden).squeeze(-1) + 3.0 * torch.nn.functional.cosine_similarity(
        label_hidden, table[None], dim=-1
    )
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    linear_only = head.score(label_hidden).squeeze(-1)
    assert (logits - linear_only).abs().max() > 0.1  # the tied term is really there


def test_tied_scale_and_rows_learn_through_the_tied_term():
    model, tokenizer = build(lora={"r": 4})
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"), labels=torch.tensor([0, 1, 2, 3]))
    model.train()
    model(**batch).loss.backward()
    head = model.heads["default"]
    assert head.tied_scale.grad is not None and head.tied_scale.grad.abs() > 0


@pytest.mark.parametrize("attention", ["full", "isolated"])
def test_tied_adapter_round_trips_and_refuses_a_linear_config(tmp_path, attention):
    model, tokenizer = build(label_attention=attention, lora={"r": 4})
    with torch.no_grad():
        model.heads["default"].tied_scale.fill_(2.5)
    model.eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    expected = model(**batch).logits
    model.save_pretrained(tmp_path / "tied")
    loaded = LabelTokModel.from_pretrained(tiny_backbone("bert"), tmp_path / "tied")
    loaded.eval()
    assert loaded.labeltok_config.head_type.value == "tied"
    assert float(loaded.heads["default"].tied_scale) == 2.5
    torch.testing.assert_close(loaded(**batch).logits, expected, atol=1e-6, rtol=0)
    assert "cosine with each label's own row" in (tmp_path / "tied" / "README.md").read_text()


def test_added_label_is_scored_with_its_own_row():
    """A label added by name has no per-label head weight: its tied term uses its new row like every other label."""
    model, tokenizer = build(label_attention="isolated")
    model.eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    before = model(**batch).logits
    model.add_labels(["music"])
    after = model(**batch).logits
    assert after.shape == (len(TEXTS), len(LABELS) + 1)
    torch.testing.assert_close(after[:, : len(LABELS)], before, atol=1e-5, rtol=0)  # isolated: old labels unchanged
    head = model.heads["default"]
    captured = []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    with torch.no_grad():
        model(**batch)
    hook.remove()
    new_hidden = torch.cat(captured, dim=1)[:, -1]
    row = model.label_tables["default"][-1]
    expected = head.score(new_hidden).squeeze(-1) + head.tied_scale * torch.cosine_similarity(new_hidden, row[None])
    torch.testing.assert_close(after[:, -1], expected.detach(), atol=1e-5, rtol=0)


def test_unknown_head_type_names_the_choices():
    with pytest.raises(ValueError, match="head_type must be one of 'linear', 'tied', 'residual', 'cosine'"):
        LabelTokConfig(labels=LABELS, head_type="angular")


def build_residual(**config_kwargs) -> tuple[LabelTokModel, object]:
    tokenizer = tokenizer_for("bert")
    config = LabelTokConfig(labels=LABELS, head_type="residual", label_init="random", **config_kwargs)
    return get_labeltok_model(tiny_backbone("bert"), config, tokenizer=tokenizer), tokenizer


def label_outputs(model: LabelTokModel, batch) -> torch.Tensor:
    """`[batch, num_labels, hidden]` what the head receives."""
    captured = []
    hook = model.heads["default"].register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    with torch.no_grad():
        model(**batch)
    hook.remove()
    return torch.cat(captured, dim=1)


@pytest.mark.parametrize("attention", ["full", "isolated"])
def test_residual_logit_adds_each_labels_own_weight_vector(attention):
    model, tokenizer = build_residual(label_attention=attention)
    model.eval()
    head = model.heads["default"]
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert head.label_weight.shape == (len(LABELS), model.backbone_info.hidden_size)
    assert not head.label_weight.any()  # starts as the shared head alone
    with torch.no_grad():
        head.label_weight.normal_()
        logits = model(**batch).logits
    hidden = label_outputs(model, batch)
    expected = head.score(hidden).squeeze(-1) + (hidden * head.label_weight[None]).sum(-1)
    torch.testing.assert_close(logits, expected.detach(), atol=1e-5, rtol=0)
    assert (logits - head.score(hidden).squeeze(-1)).abs().max() > 0.1


def test_residual_weights_follow_added_and_removed_labels_and_round_trip(tmp_path, caplog):
    model, tokenizer = build_residual(label_attention="isolated", per_label_bias=True, lora={"r": 4})
    model.eval()
    head = model.heads["default"]
    with torch.no_grad():
        head.label_weight.normal_()
        head.label_bias.normal_()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    before = model(**batch).logits
    trained = head.label_weight.detach().clone()
    with caplog.at_level("WARNING", logger="labeltok_peft.label_set"):
        model.add_labels(["music"])
    assert "start at zero and rarely outscore them" in caplog.text and "train_only_labels" in caplog.text
    assert head.label_weight.shape[0] == len(LABELS) + 1
    assert torch.equal(head.label_weight[: len(LABELS)], trained) and not head.label_weight[-1].any()
    torch.testing.assert_close(model(**batch).logits[:, : len(LABELS)], before, atol=1e-5, rtol=0)
    model.remove_labels(["film"])
    kept = [0, 1, 3, 4]
    assert torch.equal(head.label_weight, torch.cat([trained, torch.zeros_like(trained[:1])])[kept])
    expected = model(**batch).logits
    model.save_pretrained(tmp_path / "residual")
    loaded = LabelTokModel.from_pretrained(tiny_backbone("bert"), tmp_path / "residual")
    loaded.eval()
    assert loaded.labeltok_config.labels == ["sport", "business", "tech", "music"]
    torch.testing.assert_close(loaded(**batch).logits, expected, atol=1e-6, rtol=0)
    assert "a weight vector per label (residual)" in (tmp_path / "residual" / "README.md").read_text()


def test_train_only_labels_masks_the_other_labels_weight_vectors():
    model, tokenizer = build_residual(label_attention="isolated")
    model.add_labels(["music"])
    head = model.heads["default"]
    before = head.label_weight.detach().clone()
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"), labels=torch.tensor([4, 4, 0, 1]))
    with model.train_only_labels(["music"]):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
        model.train()
        for _ in range(3):
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    assert torch.equal(head.label_weight[: len(LABELS)], before[: len(LABELS)])
    assert head.label_weight[-1].abs().sum() > 0


@pytest.mark.parametrize("attention", ["full", "isolated"])
def test_cosine_logit_is_learned_temperature_times_cosine_plus_bias(attention):
    """The cosine head ignores the norm of a label's output: logits equal scale * cos(h_k, w) + b, by hand."""
    tokenizer = tokenizer_for("bert")
    config = LabelTokConfig(labels=LABELS, head_type="cosine", label_attention=attention, label_init="random")
    model = get_labeltok_model(tiny_backbone("bert"), config, tokenizer=tokenizer)
    model.eval()
    head = model.heads["default"]
    assert float(head.cosine_scale.detach()) == 10.0
    with torch.no_grad():
        head.cosine_scale.fill_(4.0)
        head.score.bias.fill_(0.5)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    hidden = label_outputs(model, batch)
    weight = head.score.weight[0]
    expected = 4.0 * (hidden @ weight) / (hidden.norm(dim=-1) * weight.norm()) + 0.5
    torch.testing.assert_close(logits, expected.detach(), atol=1e-5, rtol=0)
    assert (logits - head.score(hidden).squeeze(-1)).abs().max() > 0.1  # not the plain linear head


def test_cosine_scale_learns_without_decay_and_round_trips(tmp_path):
    from labeltok_peft.optim import create_optimizer

    tokenizer = tokenizer_for("bert")
    config = LabelTokConfig(labels=LABELS, head_type="cosine", label_attention="isolated", lora={"r": 4})
    model = get_labeltok_model(tiny_backbone("bert"), config, tokenizer=tokenizer)
    head = model.heads["default"]
    optimizer = create_optimizer(model, learning_rate=1e-3, label_learning_rate=1e-2, weight_decay=0.1)
    decayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    assert id(head.cosine_scale) not in decayed and id(head.score.weight) in decayed
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"), labels=torch.tensor([0, 1, 2, 3]))
    model.train()
    model(**batch).loss.backward()
    assert head.cosine_scale.grad is not None and head.cosine_scale.grad.abs() > 0
    optimizer.step()
    model.eval()
    expected = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    model.save_pretrained(tmp_path / "cosine")
    loaded = LabelTokModel.from_pretrained(tiny_backbone("bert"), tmp_path / "cosine")
    loaded.eval()
    assert loaded.labeltok_config.head_type.value == "cosine"
    assert float(loaded.heads["default"].cosine_scale.detach()) == float(head.cosine_scale.detach())
    torch.testing.assert_close(loaded(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits, expected)
    assert "learned temperature times the cosine" in (tmp_path / "cosine" / "README.md").read_text()


def test_head_learns_at_the_label_rate_unless_told_otherwise():
    from labeltok_peft.optim import adapter_parameter_groups

    config = LabelTokConfig(labels=LABELS, lora={"r": 4})
    model = get_labeltok_model(tiny_backbone("bert"), config, tokenizer=tokenizer_for("bert"))
    rates = {group["name"]: group["lr"] for group in adapter_parameter_groups(model, 1e-3, label_learning_rate=5e-2)}
    assert rates["lora"] == 1e-3 and rates["labels"] == 5e-2
    assert rates["head"] == rates["head_no_decay"] == 5e-2  # the task's new parameters share one rate
    told = adapter_parameter_groups(model, 1e-3, label_learning_rate=5e-2, head_learning_rate=2e-2)
    assert {group["name"]: group["lr"] for group in told}["head"] == 2e-2
