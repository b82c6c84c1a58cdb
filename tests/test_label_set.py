"""The open label set: `add_labels` / `remove_labels` on a trained adapter, saving, loading, predicting, errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from recipe_data import save_tiny_backbone
from tiny_models import tiny_backbone, tokenizer_for
from transformers import AutoModel, AutoTokenizer

from labeltok_peft import LabelTokConfig, LabelTokModel, cli, get_labeltok_model
from labeltok_peft.label_init import initial_label_table

LABELS = ["sport", "business", "film", "tech"]
NEW = ["music", "election"]
TEXTS = ["the team won the match", "bank profit and market shares", "film actor award", "phone software chip"]
# Shared positions: the text keeps its positions whatever the number of labels (see test_sequential_positions_...).
ISOLATED = dict(label_attention="isolated", label_positions="shared")


def build(family: str = "bert", train_steps: int = 3, **config_kwargs):
    """A model whose adapter was trained a few steps (so its rows, head and LoRA weights are not at their init)."""
    tokenizer = tokenizer_for(family)
    config = LabelTokConfig(labels=LABELS, **config_kwargs)
    model = get_labeltok_model(tiny_backbone(family), config, tokenizer=tokenizer)
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"), labels=torch.tensor([0, 1, 2, 3]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    model.train()
    for _ in range(train_steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), tokenizer


def logits(model, tokenizer, texts=TEXTS) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def snapshot(model) -> dict:
    """Everything add/remove may touch: tensors (bitwise), Parameter objects, flags and configs."""
    return {
        "state": {key: value.clone() for key, value in model.state_dict().items()},
        "objects": {name: id(p) for name, p in model.named_parameters()},
        "grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "configs": {name: config.to_dict() for name, config in model.labeltok_configs.items()},
    }


def assert_same(before: dict, after: dict) -> None:
    assert before["objects"] == after["objects"] and before["grad"] == after["grad"]
    assert before["configs"] == after["configs"]
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key


# ------------------------------------------------------------------------------------------------ adding


@pytest.mark.parametrize("kwargs", [{}, dict(ISOLATED, lora={"r": 4}, per_label_bias=True)])
def test_add_then_predict_scores_the_new_labels(kwargs):
    model, tokenizer = build(**kwargs)
    model.add_labels(NEW)
    assert model.labeltok_config.labels == LABELS + NEW
    assert model.id2label[5] == "election" and model.label2id["music"] == 4
    assert logits(model, tokenizer).shape == (len(TEXTS), 6)
    rows = model.predict(TEXTS)
    assert [list(row["scores"]) for row in rows] == [LABELS + NEW] * len(TEXTS)
    assert all(sum(row["scores"].values()) == pytest.approx(1.0) for row in rows)


@pytest.mark.parametrize("label_init", ["label_text", "random", "vocab_mean", "cls"])
def test_new_rows_are_what_the_init_gives_those_labels(label_init):
    model, tokenizer = build(lora={"r": 4}, label_init=label_init, per_label_bias=True)
    old_table = model.label_tables["default"].detach().clone()
    old_head = {key: value.clone() for key, value in model.heads["default"].state_dict().items()}
    old_lora = {key: value.clone() for key, value in model.state_dict().items() if "lora_" in key}
    model.add_labels(NEW, descriptions={"election": "vote party government"})

    table = model.label_tables["default"].detach()
    config = model.labeltok_config
    expected = initial_label_table(config, model.base_model.get_input_embeddings(), tokenizer, model.backbone)
    assert torch.equal(table[:4], old_table)  # trained rows kept bitwise
    assert torch.equal(table[4:], expected[4:])
    if label_init == "label_text":  # rows are per label: the same as for a config of the new labels alone
        embeddings = model.base_model.get_input_embeddings()
        alone = dataclasses.replace(config, labels=NEW, label_descriptions={"election": "vote party government"})
        # Close, not bitwise: with late injection (the `auto` default here) the rows come from a backbone pass over a
        # batch of 6 label texts, against 2 here, and CPU matmul kernels may block different batch sizes differently.
        alone_rows = initial_label_table(alone, embeddings, tokenizer, model.backbone)
        torch.testing.assert_close(table[4:], alone_rows, rtol=1e-5, atol=1e-6)
        named = dataclasses.replace(config, labels=NEW, label_descriptions=None)
        assert not torch.equal(table[5], initial_label_table(named, embeddings, tokenizer, model.backbone)[1])
    head = model.heads["default"].state_dict()
    assert torch.equal(head["score.weight"], old_head["score.weight"]) and torch.equal(head["score.bias"], old_head["score.bias"])  # fmt: skip
    old_bias = old_head["label_bias"]
    assert torch.equal(head["label_bias"][:4], old_bias) and not torch.equal(old_bias, torch.zeros(4))
    assert torch.equal(head["label_bias"][4:], old_bias.mean().expand(2))
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in old_lora.items())
    assert config.label_descriptions == {"election": "vote party government"}


def test_late_injection_rows_start_from_the_layer_hidden_states():
    model, tokenizer = build(label_attention="isolated", label_positions="shared", label_layers=1, lora={"r": 4})
    before = logits(model, tokenizer)
    model.add_labels(NEW)
    embeddings = model.base_model.get_input_embeddings()
    expected = initial_label_table(model.labeltok_config, embeddings, tokenizer, model.backbone)
    assert torch.equal(model.label_tables["default"].detach()[4:], expected[4:])
    plain = initial_label_table(
        LabelTokConfig(labels=NEW, label_layers=None), embeddings, tokenizer
    )  # input-embedding rows
    assert not torch.allclose(expected[4:], plain, atol=1e-3)
    torch.testing.assert_close(logits(model, tokenizer)[:, :4], before, atol=0, rtol=0)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_isolated_labels_keep_their_logits(family):
    model, tokenizer = build(family, **ISOLATED, lora={"r": 4})
    before = logits(model, tokenizer)
    model.add_labels(NEW)
    torch.testing.assert_close(logits(model, tokenizer)[:, :4], before, atol=0, rtol=0)


@pytest.mark.parametrize(("family", "moves"), [("bert", True), ("llama", False)])
def test_full_attention_old_logits_move_on_encoders_only(family, moves):
    # Encoders: old labels attend to the new ones. Causal decoders: new labels come after the old ones, which the
    # causal mask keeps from seeing them.
    model, tokenizer = build(family, lora={"r": 4}, label_attention="full", label_positions="sequential")
    before = logits(model, tokenizer)
    model.add_labels(NEW)
    change = (logits(model, tokenizer)[:, :4] - before).abs().max()
    assert (change > 1e-4) if moves else (change == 0)


def test_sequential_positions_on_an_encoder_shift_the_text_so_old_logits_move():
    # Labels sit before the text; each added label moves every text token one position on.
    model, tokenizer = build(label_attention="isolated", label_positions="sequential")
    before = logits(model, tokenizer)
    model.add_labels(NEW)
    assert (logits(model, tokenizer)[:, :4] - before).abs().max() > 1e-4


def test_requires_grad_is_kept_and_a_new_optimizer_trains_the_new_rows():
    model, tokenizer = build(lora={"r": 4}, label_layers=1, **ISOLATED)
    old = model.label_tables["default"]
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.add_labels(NEW)
    new = model.label_tables["default"]
    assert new is not old and new.requires_grad  # a new Parameter: optimizers built before hold the old one
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    batch = dict(tokenizer(TEXTS[:2], padding=True, return_tensors="pt"), labels=torch.tensor([4, 5]))
    rows = new.detach()[4:].clone()
    model(**batch).loss.backward()
    optimizer.step()
    assert not torch.equal(new.detach()[4:], rows)


def test_frozen_adapter_stays_frozen(tmp_path):
    model, tokenizer = build(lora={"r": 4}, label_layers=1, **ISOLATED)
    model.save_pretrained(tmp_path / "a")
    loaded = LabelTokModel.from_pretrained(tiny_backbone("bert"), tmp_path / "a", tokenizer=tokenizer)
    loaded.add_labels(NEW)
    assert not any(p.requires_grad for p in loaded.parameters())


# ------------------------------------------------------------------------------------------------ removing


def test_remove_keeps_the_other_rows_biases_and_descriptions():
    model, tokenizer = build(**ISOLATED, per_label_bias=True)
    model.add_labels(NEW, descriptions={"music": "film music show"})
    table = model.label_tables["default"].detach().clone()
    bias = model.heads["default"].label_bias.detach().clone()
    before = logits(model, tokenizer)
    model.remove_labels(["business", "music"])
    keep = [0, 2, 3, 5]
    assert model.labeltok_config.labels == ["sport", "film", "tech", "election"]
    assert model.labeltok_config.label_descriptions is None
    assert torch.equal(model.label_tables["default"].detach(), table[keep])
    assert torch.equal(model.heads["default"].label_bias.detach(), bias[keep])
    torch.testing.assert_close(logits(model, tokenizer), before[:, keep], atol=0, rtol=0)


# ------------------------------------------------------------------------------------------------ saving and loading


@pytest.mark.parametrize("remove", [False, True])
def test_changed_label_set_saves_and_loads_bitwise(tmp_path, remove):
    model, tokenizer = build(lora={"r": 4}, per_label_bias=True)
    model.add_labels(NEW, descriptions={"election": "vote party"})
    if remove:
        model.remove_labels(["sport", "music"])
    expected = logits(model, tokenizer)
    model.save_pretrained(tmp_path / "adapter")
    loaded = LabelTokModel.from_pretrained(tiny_backbone("bert"), tmp_path / "adapter", tokenizer=tokenizer)
    assert loaded.labeltok_config.to_dict() == model.labeltok_config.to_dict()
    assert torch.equal(logits(loaded, tokenizer), expected)
    saved = json.loads((tmp_path / "adapter" / "labeltok_config.json").read_text())
    assert json.dumps(saved).count("vote party") == 1
    assert "| election | vote party |" in (tmp_path / "adapter" / "README.md").read_text()


def test_labeltok_predict_sees_the_new_labels(tmp_path):
    save_tiny_backbone(tmp_path / "tiny")
    backbone = AutoModel.from_pretrained(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tiny")
    model = get_labeltok_model(backbone.eval(), LabelTokConfig(labels=LABELS, lora={"r": 4}), tokenizer=tokenizer)
    model.add_labels(NEW)
    model.save_pretrained(tmp_path / "adapter")
    argv = ["predict", "--adapter_path", tmp_path / "adapter", "--model_name_or_path", tmp_path / "tiny"]
    argv += ["--texts", *TEXTS[:2], "--output_dir", tmp_path / "p", "--report_to", "none"]
    assert cli.main([str(arg) for arg in argv]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    assert [list(row["scores"]) for row in rows] == [LABELS + NEW] * 2
    expected = model.predict(TEXTS[:2])
    for row, direct in zip(rows, expected, strict=True):
        assert row["scores"] == pytest.approx(direct["scores"], abs=1e-5)


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.add_labels(["music", "music"]), "more than once"),
        (lambda m: m.add_labels(["music", "sport"]), r"\['sport'\] are already labels"),
        (lambda m: m.add_labels([]), "no label names"),
        (lambda m: m.add_labels(["music", " "]), "non-empty strings"),
        (lambda m: m.add_labels(["music"], descriptions={"sport": "x"}), "not among the labels being added"),
        (lambda m: m.add_labels(["music"], descriptions={"music": " "}), "empty or not strings"),
        (lambda m: m.add_labels([f"extra{i}" for i in range(60)]), "do not fit in the 64 positions"),
        (lambda m: m.add_labels(["music"], adapter_name="other"), "No adapter named 'other'"),
        (lambda m: m.remove_labels(["music"]), r"\['music'\] are not labels"),
        (lambda m: m.remove_labels(["sport", "film", "tech"]), "would leave 1 label"),
        (lambda m: m.remove_labels(["sport", "sport"]), "more than once"),
    ],
)
def test_errors_leave_the_model_unchanged(call, match):
    # Sequential positions: labels spend the 64 positions (attention is the default, isolated on BERT).
    model, tokenizer = build(lora={"r": 4}, per_label_bias=True, label_positions="sequential")
    before, before_logits = snapshot(model), logits(model, tokenizer)
    with pytest.raises((ValueError, KeyError), match=match):
        call(model)
    assert_same(before, snapshot(model))
    assert torch.equal(logits(model, tokenizer), before_logits)


def test_a_failing_init_leaves_the_model_unchanged():
    model, tokenizer = build(lora={"r": 4}, label_layers=1, **ISOLATED)
    before = snapshot(model)
    model.tokenizer = None  # the label_text init fails after every check on names and positions passed
    with pytest.raises(ValueError, match="needs the backbone's tokenizer"):
        model.add_labels(NEW)
    assert_same(before, snapshot(model))


def test_shared_positions_take_any_number_of_labels():
    model, tokenizer = build(**ISOLATED)
    model.add_labels([f"extra{i}" for i in range(70)])
    assert logits(model, tokenizer).shape == (len(TEXTS), 74)
