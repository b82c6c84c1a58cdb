"""Bad input gets a clear error that names the problem and the fix."""

from __future__ import annotations

import pytest
import torch
from tiny_models import WORDS, tiny_backbone, tokenizer_for
from torch import nn

from labeltok_peft import LabelTokConfig, encode_label, get_labeltok_model, tokenize_function, validate_texts

LABELS = ["sport", "business", "film"]


def test_empty_label_list():
    with pytest.raises(ValueError, match="at least two labels"):
        LabelTokConfig(labels=[])


def test_duplicate_labels():
    with pytest.raises(ValueError, match=r"duplicate labels \['sport'\]"):
        LabelTokConfig(labels=["sport", "film", "sport"])


def test_labels_given_as_a_string():
    with pytest.raises(TypeError, match="list of label names"):
        LabelTokConfig(labels="sport,film")


@pytest.mark.parametrize(
    "field,value", [("problem_type", "regression"), ("label_init", "zeros"), ("label_attention", "sparse")]
)
def test_unknown_mode_names_field_and_choices(field, value):
    with pytest.raises(ValueError, match=rf"LabelTokConfig\.{field} must be one of .*got '{value}'"):
        LabelTokConfig(labels=LABELS, **{field: value})


def test_chunks_need_isolated_attention():
    with pytest.raises(ValueError, match="label_attention='isolated'"):
        LabelTokConfig(labels=LABELS, label_attention="full", label_chunk_size=2)


def test_unknown_label_in_data():
    config = LabelTokConfig(labels=LABELS)
    with pytest.raises(ValueError, match=r"Row 7 has label 'weather'.*Add it to LabelTokConfig.labels"):
        encode_label("weather", config, row=7)


def test_several_labels_for_single_label_task():
    config = LabelTokConfig(labels=LABELS)
    with pytest.raises(ValueError, match="problem_type='multi_label_classification'"):
        encode_label(["sport", "film"], config, row=0)
    assert encode_label(["film"], config) == 2


def test_multi_hot_of_wrong_width():
    config = LabelTokConfig(labels=LABELS, problem_type="multi_label_classification")
    with pytest.raises(ValueError, match="width 2, but the adapter has 3 labels"):
        encode_label([1.0, 0.0], config, row=3)
    assert encode_label([0, 1, 1], config) == [0.0, 1.0, 1.0]
    assert encode_label(["sport", "film"], config) == [1.0, 0.0, 1.0]


def test_two_label_integer_list_is_refused_as_ambiguous():
    config = LabelTokConfig(labels=["negative", "positive"], problem_type="multi_label_classification")
    both_readings = r"Row 4 .*reads two ways.*\['negative', 'positive'\].*\['positive'\].*list_format"
    with pytest.raises(ValueError, match=both_readings):
        encode_label([0, 1], config, row=4)
    # The caller says which reading is meant, and gets it.
    assert encode_label([0, 1], config, list_format="ids") == [1.0, 1.0]
    assert encode_label([0, 1], config, list_format="multi_hot") == [0.0, 1.0]
    # Unambiguous rows still need no hint: floats and booleans are multi-hot, names and single ids are ids.
    assert encode_label([0.0, 1.0], config) == [0.0, 1.0]
    assert encode_label([True, False], config) == [1.0, 0.0]
    assert encode_label(["negative", "positive"], config) == [1.0, 1.0]
    assert encode_label([1], config) == [0.0, 1.0]
    with pytest.raises(ValueError, match="list_format must be one of"):
        encode_label([1], config, list_format="multihot")


def test_tokenize_function_passes_the_list_format_on(encoder_tokenizer):
    tokenizer = encoder_tokenizer
    config = LabelTokConfig(labels=["negative", "positive"], problem_type="multi_label_classification")
    batch = {"text": [WORDS[0], WORDS[1]], "label": [[0, 1], [1]]}
    with pytest.raises(ValueError, match="reads two ways"):
        tokenize_function(tokenizer, config, "text", "label", 16)(batch, [0, 1])
    encoded = tokenize_function(tokenizer, config, "text", "label", 16, list_format="ids")(batch, [0, 1])
    assert encoded["labels"] == [[1.0, 1.0], [0.0, 1.0]]


def test_multi_hot_tensor_of_wrong_width_in_forward():
    tokenizer = tokenizer_for("bert")
    config = LabelTokConfig(labels=LABELS, problem_type="multi_label_classification")
    model = get_labeltok_model(tiny_backbone("bert"), config, tokenizer=tokenizer)
    batch = tokenizer(["team won", "bank profit"], padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match=r"shape \[batch, 3\]"):
        model(**batch, labels=torch.ones(2, 4))


def test_single_label_ids_out_of_range_in_forward():
    tokenizer = tokenizer_for("bert")
    model = get_labeltok_model(tiny_backbone("bert"), LabelTokConfig(labels=LABELS), tokenizer=tokenizer)
    batch = tokenizer(["team won", "bank profit"], padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match=r"0\.\.2"):
        model(**batch, labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="multi_label_classification"):
        model(**batch, labels=torch.ones(2, 3))


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text(text):
    with pytest.raises(ValueError, match="Text in row 1 is empty"):
        validate_texts(["fine", text])


def test_non_string_text():
    with pytest.raises(TypeError, match="Text in row 0 is a int"):
        validate_texts([42])


def test_predict_rejects_bad_text():
    tokenizer = tokenizer_for("bert")
    model = get_labeltok_model(tiny_backbone("bert"), LabelTokConfig(labels=LABELS), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="empty"):
        model.predict(["team won", " "])


class NoEmbedsBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = tiny_backbone("bert").config
        self.embed = nn.Embedding(10, 32)

    def forward(self, input_ids):
        return self.embed(input_ids)


def test_backbone_without_inputs_embeds():
    with pytest.raises(TypeError, match="does not accept `inputs_embeds`"):
        get_labeltok_model(NoEmbedsBackbone(), LabelTokConfig(labels=LABELS, label_init="random"))


def test_more_labels_than_positions_names_the_fix():
    many = [f"label_{i}" for i in range(100)]  # the tiny BERT has 64 positions
    with pytest.raises(ValueError, match="label_positions='shared'"):
        get_labeltok_model(
            tiny_backbone("bert"), LabelTokConfig(labels=many, label_init="random", label_attention="full")
        )
    model = get_labeltok_model(
        tiny_backbone("bert"),
        LabelTokConfig(labels=many, label_init="random", label_positions="shared", label_attention="isolated"),
    )
    tokenizer = tokenizer_for("bert")
    logits = model(**tokenizer(["team won the match"], return_tensors="pt")).logits
    assert logits.shape == (1, 100)


def test_text_too_long_for_positions_names_the_limit():
    tokenizer = tokenizer_for("bert")
    config = LabelTokConfig(labels=LABELS, label_attention="full")  # sequential positions: labels take K positions
    model = get_labeltok_model(tiny_backbone("bert"), config, tokenizer=tokenizer)
    input_ids = torch.full((1, 63), 5)
    with pytest.raises(ValueError, match=f"at most {64 - len(LABELS)} tokens"):
        model(input_ids=input_ids)


def test_decoder_without_pad_token_is_handled():
    tokenizer = tokenizer_for("llama")
    assert tokenizer.pad_token is None
    model = get_labeltok_model(tiny_backbone("llama"), LabelTokConfig(labels=LABELS), tokenizer=tokenizer)
    assert tokenizer.pad_token == tokenizer.eos_token
    texts = ["team won the match", "bank"]
    predictions = model.predict(texts)  # one padded batch
    alone = [model.predict(text) for text in texts]  # no padding at all
    for padded, single in zip(predictions, alone, strict=True):
        assert padded["scores"] == pytest.approx(single["scores"], abs=1e-5)
        # labels whose text the tiny vocabulary cannot spell tie exactly: the padded winner is one of the top scores
        assert single["scores"][padded["label"]] == pytest.approx(max(single["scores"].values()), abs=1e-5)


def test_label_text_init_without_tokenizer():
    with pytest.raises(ValueError, match="needs the backbone's tokenizer"):
        get_labeltok_model(tiny_backbone("bert"), LabelTokConfig(labels=LABELS))


def test_failed_adapter_adds_nothing():
    tokenizer = tokenizer_for("bert")
    model = get_labeltok_model(tiny_backbone("bert"), LabelTokConfig(labels=LABELS, lora={"r": 4}), tokenizer=tokenizer)
    bad = LabelTokConfig(labels=["x", "y"], lora={"r": 4, "target_modules": ["no_such_module"]})
    with pytest.raises(ValueError, match="no_such_module"):
        model.add_adapter("second", bad)
    assert model.adapters == ["default"]
    assert set(model.label_tables) == {"default"} and set(model.heads) == {"default"}
    assert model.active_adapter == "default"
    assert model(**tokenizer(["team won"], return_tensors="pt")).logits.shape == (1, len(LABELS))
