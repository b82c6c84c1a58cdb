"""Late injection (`label_layers=n`): label rows enter at layer L-n and run through the last n layers only.

Reference: the spliced sequence with the isolating 4D mask (`model._splice_isolated_labels = True`, all layers), with a
pre-hook on layer L-n that overwrites the label tokens' hidden states with the label rows. Below L-n the text never
sees the labels (isolated mask), so the text is the text alone; from L-n on, the labels see the text and themselves,
exactly what late injection computes, by another route.
"""

from __future__ import annotations

import pytest
import torch
from test_label_pass import BACKBONES, LABELS, assert_same, build, logits_and_grads, make_batch
from tiny_models import TINY, VOCAB_SIZE, tiny_backbone, tokenizer_for
from transformers import AlbertConfig, AlbertModel, BertConfig, BertModel

from labeltok_peft import LabelTokConfig, LabelTokModel, get_labeltok_model
from labeltok_peft.late_injection import find_layer_list
from labeltok_peft.splice import splice_labels


def spliced_late_reference(model: LabelTokModel, batch: dict, label_layers: int) -> tuple[torch.Tensor, dict]:
    """Logits and gradients of the spliced path with the label rows written over the labels' states at layer L-n."""
    config = model.labeltok_config
    table = model.label_tables["default"]
    info = model.backbone_info
    embeds = model.base_model.get_input_embeddings()(batch["input_ids"])
    label_indices = splice_labels(
        embeds,
        batch["attention_mask"],
        table.detach(),
        after_last_token=info.is_causal,
        isolated=True,
        causal=info.is_causal,
        shared_positions=config.label_positions.value == "shared",
    ).label_indices  # [batch, labels] where the labels sit in the spliced sequence
    _, _, layers = find_layer_list(model.base_model)

    def overwrite(module, args, kwargs):
        hidden = args[0]
        index = label_indices[:, :, None].expand(-1, -1, hidden.shape[-1])
        rows = table[None].expand(hidden.shape[0], -1, -1).to(hidden.dtype)
        return (hidden.scatter(1, index, rows), *args[1:]), kwargs

    handle = layers[len(layers) - label_layers].register_forward_pre_hook(overwrite, with_kwargs=True)
    config.label_layers = None
    try:
        return logits_and_grads(model, batch, splice=True)
    finally:
        config.label_layers = label_layers
        handle.remove()


LATE_FAMILIES = ["bert", "roberta", "distilbert", "electra", "modernbert", "llama", "qwen2", "gemma3", "gpt2"]


@pytest.mark.parametrize("family", LATE_FAMILIES)
@pytest.mark.parametrize(("padding_side", "positions"), [("right", "shared"), ("left", "sequential")])
def test_late_injection_equals_the_spliced_reference(family, padding_side, positions):
    model = build(BACKBONES[family](), label_positions=positions, label_layers=1)
    batch = make_batch(padding_side)
    ours = logits_and_grads(model, batch)
    reference = spliced_late_reference(model, batch, label_layers=1)
    assert_same(ours, reference)
    # The labels' rows reach the logits through the last layer only, but the text's keys/values the labels read there
    # come from every layer below, so every layer's LoRA is trained (through the text).
    assert all(grad.abs().max() > 0 for grad in ours[1].values())


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
def test_all_layers_equals_the_full_label_pass(family):
    model = build(BACKBONES[family](), label_positions="sequential", label_layers=TINY["num_hidden_layers"])
    batch = make_batch("left")
    ours = logits_and_grads(model, batch)
    model.labeltok_config.label_layers = None
    assert_same(ours, logits_and_grads(model, batch))


def four_layer_bert() -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **(TINY | {"num_hidden_layers": 4}),
    )
    return BertModel(config, add_pooling_layer=False).eval()


@pytest.mark.parametrize("label_layers", [1, 2, 4])
def test_labels_run_through_the_last_n_layers_only(label_layers):
    model = build(four_layer_bert(), label_layers=label_layers, label_chunk_size=2)
    batch = make_batch("right")
    lengths: dict[int, list[int]] = {index: [] for index in range(4)}
    handles = [
        layer.attention.register_forward_pre_hook(
            lambda module, args, index=index: lengths[index].append(args[0].shape[1])
        )
        for index, layer in enumerate(model.base_model.encoder.layer)
    ]
    logits = model(**batch).logits
    for handle in handles:
        handle.remove()
    assert logits.shape == (3, len(LABELS))
    for index in range(4):
        label_calls = [2, 2, 1] if index >= 4 - label_layers else []
        assert lengths[index] == [7, *label_calls], (index, lengths)
    # The stand-in layer list is gone again.
    assert all(type(layer).__name__ == "BertLayer" for layer in model.base_model.encoder.layer)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_late_injection_chunks_and_checkpointing_are_exact(family):
    model = build(BACKBONES[family](), label_layers=1)
    model.train()
    batch = make_batch("left")
    whole = logits_and_grads(model, batch)
    model.labeltok_config.label_chunk_size = 2
    model.gradient_checkpointing_enable()
    assert_same(logits_and_grads(model, batch), whole)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_label_text_init_is_the_layer_input_of_the_label_text(family):
    backbone, tokenizer = tiny_backbone(family), tokenizer_for(family)
    labels = ["match goal", "market", "film actor award"]
    config = LabelTokConfig(
        labels=labels, label_attention="isolated", label_layers=1, label_descriptions={"market": "bank profit"}
    )
    model = get_labeltok_model(backbone, config, tokenizer=tokenizer)
    table = model.label_tables["default"].detach()
    for row, text in zip(table, ["match goal", "bank profit", "film actor award"], strict=True):
        encoded = tokenizer(text, return_tensors="pt", return_special_tokens_mask=True)
        own = ~encoded.pop("special_tokens_mask")[0].bool()
        with torch.no_grad():
            states = backbone(**encoded, output_hidden_states=True).hidden_states
        expected = states[TINY["num_hidden_layers"] - 1][0, own].mean(dim=0)  # input of the last layer
        torch.testing.assert_close(row, expected, atol=1e-5, rtol=1e-5)
        assert (row - states[0][0, own].mean(dim=0)).abs().max() > 1e-2  # not the embedding-stage output
    every_layer = LabelTokConfig(labels=labels, label_layers=None, label_descriptions={"market": "bank profit"})
    full = get_labeltok_model(tiny_backbone(family), every_layer, tokenizer=tokenizer)
    assert ((full.label_tables["default"] - table).abs().amax(dim=-1) > 1e-2).all()  # every row differs


def test_invalid_settings_are_refused_naming_the_field():
    for value in (0, -1, True, 1.5, "2", "all"):
        with pytest.raises(ValueError, match=r"label_layers must be a positive integer, 'auto' or None"):
            LabelTokConfig(labels=LABELS, label_attention="isolated", label_layers=value)
    with pytest.raises(ValueError, match=r"label_layers=1 needs label_attention='isolated'"):
        LabelTokConfig(labels=LABELS, label_attention="full", label_layers=1)
    with pytest.raises(ValueError, match=r"label_layers=3 exceeds the 2 layers"):
        build(BACKBONES["bert"](), label_layers=3)
    albert = AlbertModel(AlbertConfig(vocab_size=VOCAB_SIZE, embedding_size=16, **TINY), add_pooling_layer=False)
    with pytest.raises(ValueError, match=r"Use label_layers=None"):
        build(albert, lora=None, label_layers=1)
    build(albert, lora=None, label_layers=2)  # all layers: the plain label pass, no layer stack needed


def test_label_layers_round_trips_with_the_adapter(tmp_path):
    config = LabelTokConfig(labels=LABELS, label_attention="isolated", label_layers=1, label_sample_size=3)
    assert LabelTokConfig.from_dict(config.to_dict()) == config
    model = build(BACKBONES["bert"](), label_layers=1, label_sample_size=3)
    batch = make_batch("right")
    model.eval()
    expected = model(**batch).logits
    model.save_pretrained(tmp_path / "adapter")
    loaded = LabelTokModel.from_pretrained(BACKBONES["bert"](), tmp_path / "adapter")
    assert loaded.labeltok_config.label_layers == 1 and loaded.labeltok_config.label_sample_size == 3
    torch.testing.assert_close(loaded(**batch).logits, expected, atol=1e-6, rtol=0)


def test_a_checkpoint_of_rows_for_another_layer_is_refused():
    """Label rows trained to enter at the last layer mean nothing at the input: resuming such a state dict into a
    full-depth adapter (same labels, same shapes) is refused instead of silently loaded."""
    late = build(BACKBONES["bert"](), label_layers=1)
    full = build(BACKBONES["bert"](), label_layers=None)
    with pytest.raises(ValueError, match="label_layers"):
        full.load_state_dict(late.state_dict())
    full.load_state_dict(build(BACKBONES["bert"](), label_layers=None).state_dict())  # the same setting loads
