"""Core behaviour of the label-token model on tiny backbones built from configs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import DECODERS, ENCODERS, tiny_backbone, tokenizer_for

from labeltok_peft import LabelTokConfig, get_labeltok_model

LABELS = ["sport", "business", "film", "tech"]
TEXTS = ["the team won the match", "bank profit and market shares", "film actor award", "phone software chip"]


def build(family: str, **config_kwargs):
    tokenizer = tokenizer_for(family)
    config = LabelTokConfig(labels=LABELS, **config_kwargs)
    return get_labeltok_model(tiny_backbone(family), config, tokenizer=tokenizer), tokenizer


def adam_steps(model, batch, steps: int = 3) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("lora", [None, {"r": 4}])
def test_only_adapter_weights_move(family, lora):
    model, tokenizer = build(family, lora=lora)
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"), labels=torch.tensor([0, 1, 2, 3]))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    adam_steps(model, batch)
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert moved == trainable, f"moved but frozen: {moved - trainable}; trainable but unmoved: {trainable - moved}"
    assert any(name.startswith("label_tables.") for name in moved)
    assert any(name.startswith("heads.") for name in moved)
    assert all("lora_" in name or not name.startswith("backbone.") for name in moved)
    assert any("lora_" in name for name in moved) == (lora is not None)


@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("attention", ["full", "isolated"])
@pytest.mark.parametrize("positions", ["sequential", "shared"])
def test_decoder_left_and_right_padding_agree(family, attention, positions):
    model, tokenizer = build(family, label_attention=attention, label_positions=positions, label_init="random")
    tokenizer.padding_side = "right"
    right = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    tokenizer.padding_side = "left"
    left = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(left, right, atol=1e-5, rtol=0)
    single = model(**tokenizer(TEXTS[:1], return_tensors="pt")).logits
    assert single.shape == (1, len(LABELS))
    torch.testing.assert_close(single, right[:1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ENCODERS + DECODERS)
def test_logits_shape_and_batch_of_one(family):
    model, tokenizer = build(family)
    out = model(**tokenizer(TEXTS[:1], return_tensors="pt"), labels=torch.tensor([2]))
    assert out.logits.shape == (1, len(LABELS))
    assert out.logits.dtype == torch.float32
    assert out.loss.ndim == 0


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
@pytest.mark.parametrize("positions", ["sequential", "shared"])
def test_isolated_label_logits_are_independent(family, positions):
    model, tokenizer = build(family, label_attention="isolated", label_positions=positions, label_init="random")
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    before = model(**batch).logits
    with torch.no_grad():
        model.label_tables["default"][1:] += torch.randn_like(model.label_tables["default"][1:])
    after = model(**batch).logits
    torch.testing.assert_close(after[:, 0], before[:, 0], atol=1e-5, rtol=0)
    assert not torch.allclose(after[:, 1:], before[:, 1:], atol=1e-3)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_full_attention_labels_see_each_other(family):
    """The control for the isolation test: without isolation, changing other labels does change a label's logit."""
    model, tokenizer = build(family, label_attention="full", label_init="random")
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    before = model(**batch).logits
    with torch.no_grad():
        model.label_tables["default"][:-1] += torch.randn_like(model.label_tables["default"][:-1])
    after = model(**batch).logits
    assert not torch.allclose(after[:, -1], before[:, -1], atol=1e-4)


@pytest.mark.parametrize("family", ["bert", "roberta", "llama", "qwen2"])
@pytest.mark.parametrize("positions", ["sequential", "shared"])
def test_chunked_scoring_matches_one_pass(family, positions):
    model, tokenizer = build(family, label_attention="isolated", label_positions=positions, label_init="random")
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    one_pass = model(**batch).logits
    for chunk in (1, 3):
        model.labeltok_config.label_chunk_size = chunk
        torch.testing.assert_close(model(**batch).logits, one_pass, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("lora", [None, {"r": 4}])
def test_trainable_state_round_trip(tmp_path, family, lora):
    model, tokenizer = build(family, lora=lora, per_label_bias=True)
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"), labels=torch.tensor([0, 1, 2, 3]))
    adam_steps(model, batch)
    model.eval()
    expected = model(**batch).logits
    state = {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    save_file(state, tmp_path / "adapter.safetensors")

    fresh, _ = build(family, lora=lora, per_label_bias=True)
    fresh.eval()
    assert not torch.equal(fresh(**batch).logits, expected)
    result = fresh.load_state_dict(load_file(tmp_path / "adapter.safetensors"), strict=False)
    assert not result.unexpected_keys
    torch.testing.assert_close(fresh(**batch).logits, expected, atol=0, rtol=0)


def test_bf16_backbone_keeps_fp32_adapter():
    tokenizer = tokenizer_for("llama")
    backbone = tiny_backbone("llama").to(torch.bfloat16)
    model = get_labeltok_model(backbone, LabelTokConfig(labels=LABELS, lora={"r": 4}), tokenizer=tokenizer)
    assert model.label_tables["default"].dtype == torch.float32
    assert model.heads["default"].score.weight.dtype == torch.float32
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"), labels=torch.tensor([0, 1, 2, 3]))
    out = model(**batch)
    assert out.logits.dtype == torch.float32
    out.loss.backward()
    assert model.label_tables["default"].grad is not None
    assert torch.isfinite(model.label_tables["default"].grad).all()


def test_multi_label_loss_and_predict():
    model, tokenizer = build("bert", problem_type="multi_label_classification")
    batch = dict(tokenizer(TEXTS[:2], padding=True, return_tensors="pt"))
    labels = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    out = model(**batch, labels=labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels)
    torch.testing.assert_close(out.loss, expected)
    everything = model.predict(TEXTS[:2], threshold=0.0)
    assert [row["labels"] for row in everything] == [LABELS, LABELS]
    nothing = model.predict(TEXTS[:2], threshold={label: 1.0 for label in LABELS})
    assert [row["labels"] for row in nothing] == [[], []]  # sigmoid scores of a random head stay below 1


def test_multi_label_predict_pairs_each_label_with_its_probability_and_threshold():
    # Random rows: the label texts 'sport', 'business' and 'tech' are all [UNK] to the tiny tokenizer, so their
    # label_text rows are equal, and with isolated attention and shared positions (the default) so are their logits.
    model, tokenizer = build("bert", problem_type="multi_label_classification", label_init="random")
    probabilities = model(**tokenizer(TEXTS[:1], return_tensors="pt")).logits.sigmoid()[0].tolist()
    # Asymmetric per-label thresholds just below (labels 0, 2) or just above (1, 3) each label's own probability:
    # only the right pairing of label, probability and threshold selects exactly labels 0 and 2.
    margin = 1e-4
    thresholds = [p - margin if i % 2 == 0 else p + margin for i, p in enumerate(probabilities)]
    assert min(abs(a - b) for i, a in enumerate(probabilities) for b in probabilities[i + 1 :]) > 4 * margin
    row = model.predict(TEXTS[0], threshold=thresholds)
    assert row["labels"] == [LABELS[0], LABELS[2]]
    assert row["scores"] == pytest.approx(dict(zip(LABELS, probabilities, strict=True)), abs=1e-6)
    by_name = model.predict(TEXTS[0], threshold=dict(zip(LABELS, thresholds, strict=True)))
    assert by_name["labels"] == [LABELS[0], LABELS[2]]


@pytest.mark.parametrize("threshold", [1.01, -0.5, float("nan"), [0.5, 0.5, 0.5], {"weather": 0.5}])
def test_predict_refuses_thresholds_that_are_not_probabilities(threshold):
    model, _ = build("bert", problem_type="multi_label_classification")
    with pytest.raises(ValueError, match="between 0 and 1|thresholds for 4 labels|unknown labels"):
        model.predict(TEXTS[:1], threshold=threshold)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_predict_refuses_a_batch_size_below_one(batch_size):
    model, _ = build("bert")
    with pytest.raises(ValueError, match=f"batch_size must be a positive integer; got {batch_size}"):
        model.predict(TEXTS, batch_size=batch_size)


def test_predict_single_label_matches_forward():
    model, tokenizer = build("bert")
    logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    predictions = model.predict(TEXTS, batch_size=3)
    assert [p["label"] for p in predictions] == [LABELS[i] for i in logits.argmax(-1).tolist()]
    probabilities = logits.softmax(-1)
    for row, p in zip(probabilities, predictions, strict=True):
        assert abs(p["score"] - float(row.max())) < 1e-5
        assert abs(sum(p["scores"].values()) - 1.0) < 1e-5
    assert model.predict(TEXTS[0])["label"] == predictions[0]["label"]


def test_trainable_parameter_count(capsys):
    model, _ = build("bert")  # the default residual head: table, shared Linear(32, 1), a weight vector per label
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == len(LABELS) * 32 + 32 + 1 + len(LABELS) * 32
    linear, _ = build("bert", head_type="linear")
    assert linear.get_nb_trainable_parameters()[0] == len(LABELS) * 32 + 32 + 1
    model.print_trainable_parameters()
    assert f"trainable params: {trainable:,d}" in capsys.readouterr().out
