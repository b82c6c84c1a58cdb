"""Label descriptions: `--label_descriptions FILE` (JSON, YAML, CSV) for `labeltok train`, the config, the card."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from recipe_data import LABELS, make_rows, save_tiny_backbone, write_rows
from transformers import AutoModel, AutoTokenizer

from labeltok_peft import LabelTokConfig, cli
from labeltok_peft.cli.label_descriptions import (
    LabelDescriptionsError,
    check_label_descriptions,
    read_label_descriptions,
)
from labeltok_peft.label_init import initial_label_table
from labeltok_peft.model_card import ModelCardInfo, model_card_text

# Words of the tiny word-level tokenizer, so each description embeds differently from its label's name.
DESCRIPTIONS = {"business": "market bank profit", "sport": "match goal team won"}
QUICK = ["--max_steps", "2", "--per_device_train_batch_size", "8", "--lora_r", "4", "--save_strategy", "no"]
QUICK += ["--disable_tqdm", "true", "--report_to", "none", "--label_learning_rate", "0"]


def write_descriptions(path, descriptions: dict) -> str:
    if path.suffix == ".json":
        path.write_text(json.dumps(descriptions), encoding="utf-8")
    elif path.suffix in (".yaml", ".yml"):
        path.write_text("".join(f"{label}: {text}\n" for label, text in descriptions.items()), encoding="utf-8")
    else:
        rows = ["label,description"] + [f"{label},{text}" for label, text in descriptions.items()]
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("descriptions")
    save_tiny_backbone(root / "tiny")
    write_rows(make_rows(8, seed=0), root / "train.csv")
    write_rows(make_rows(3, seed=1), root / "dev.csv")
    return root


def train(workspace, output_dir, *extra) -> int:
    argv = ["train", "--model_name_or_path", workspace / "tiny", "--train_file", workspace / "train.csv"]
    argv += ["--validation_file", workspace / "dev.csv", "--output_dir", output_dir, *QUICK, *extra]
    return cli.main([str(arg) for arg in argv])


# ------------------------------------------------------------------------------------------------ reading files


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml", ".csv"])
def test_every_format_reads_the_same_mapping(tmp_path, suffix):
    path = write_descriptions(tmp_path / f"d{suffix}", {"business": " market bank profit ", "tech": "phone chip"})
    assert read_label_descriptions(path) == {"business": "market bank profit", "tech": "phone chip"}


def test_csv_with_quotes_commas_and_extra_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('count,description,label\n3,"money, markets",business\n1,"games, players",sport\n')
    assert read_label_descriptions(path) == {"business": "money, markets", "sport": "games, players"}


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("d.json", '{"business": ""}', r"description of label 'business' is empty"),
        ("d.json", '{"business": 3}', r"description of label 'business' is empty or not text"),
        ("d.json", '["business"]', "must map each label"),
        ("d.json", "{not json", "is not valid JSON"),
        ("d.json", "{}", "describes no label"),
        ("d.yaml", "yes: agreement\n", "quote the label name"),
        ("d.yaml", "business: [a, b]\n", "empty or not text"),
        ("d.csv", "label,description\nbusiness,money\nbusiness,markets\n", r"\['business'\] more than once"),
        ("d.csv", "label,text\nbusiness,money\n", r"missing \['description'\]"),
        ("d.csv", "label,description\n,money\n", "line 2 has no label"),
        ("d.csv", "label,description\nbusiness,\n", "description of label 'business' is empty"),
        ("d.txt", "business: money", "unknown file type '.txt'"),
    ],
)
def test_bad_files_are_named_with_the_problem(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LabelDescriptionsError, match=match):
        read_label_descriptions(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(LabelDescriptionsError, match="does not exist"):
        read_label_descriptions(tmp_path / "nothing.json")


def test_unknown_labels_are_refused_and_missing_ones_start_from_their_names(caplog):
    with pytest.raises(LabelDescriptionsError, match=r"\['sprot'\] that the task does not have"):
        check_label_descriptions({"sprot": "match goal"}, LABELS, "label_text")
    with caplog.at_level("WARNING", logger="labeltok_peft"):
        checked = check_label_descriptions({"tech": "phone", "business": "bank"}, LABELS, "label_text")
    assert list(checked) == ["business", "tech"]  # label order
    assert "no description for ['politics', 'sport']" in caplog.text


# ------------------------------------------------------------------------------------------------ labeltok train


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_train_stores_descriptions_and_starts_rows_from_them(workspace, tmp_path, suffix):
    path = write_descriptions(tmp_path / f"d{suffix}", DESCRIPTIONS)
    assert train(workspace, tmp_path / "out", "--label_descriptions", path) == 0
    saved = json.loads((tmp_path / "out" / "labeltok_config.json").read_text())
    assert json.dumps(saved).count("match goal team won") == 1  # stored once, in the config
    from labeltok_peft import LabelTokModel

    backbone = AutoModel.from_pretrained(workspace / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(workspace / "tiny")
    model = LabelTokModel.from_pretrained(backbone, tmp_path / "out", tokenizer=tokenizer)
    assert model.labeltok_config.label_descriptions == DESCRIPTIONS
    # The label table trained at rate 0, so it still holds its init: from the descriptions, not the names.
    embeddings = model.base_model.get_input_embeddings()
    config = model.labeltok_config  # resolved for this backbone: rows may be input embeddings or layer states
    described = initial_label_table(config, embeddings, tokenizer, model.backbone)
    named = initial_label_table(
        dataclasses.replace(config, label_descriptions=None), embeddings, tokenizer, model.backbone
    )
    table = model.label_tables["default"].detach()
    # Close rather than equal: on a GPU machine training computed the init on CUDA, here it runs on the CPU.
    torch.testing.assert_close(table, described, atol=1e-5, rtol=1e-5)
    assert (table - named).abs().max() > 1e-2
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| 0 | business | market bank profit |" in card and "| 1 | politics | (its name) |" in card


def test_yaml_config_takes_a_file_or_an_inline_mapping(workspace, tmp_path):
    path = write_descriptions(tmp_path / "d.yaml", {"tech": "phone chip"})
    config = tmp_path / "c.yaml"
    config.write_text(f"label_descriptions: {path}\n")
    assert train(workspace, tmp_path / "a", "--config", config) == 0
    saved = json.loads((tmp_path / "a" / "labeltok_config.json").read_text())
    assert saved["labeltok_config"]["label_descriptions"] == {"tech": "phone chip"}

    config.write_text("label_descriptions:\n  politics: election vote\n")
    assert train(workspace, tmp_path / "b", "--config", config) == 0
    saved = json.loads((tmp_path / "b" / "labeltok_config.json").read_text())
    assert saved["labeltok_config"]["label_descriptions"] == {"politics": "election vote"}


@pytest.mark.parametrize(
    ("content", "match"),
    [('{"sprot": "match"}', r"\['sprot'\] that the task does not have"), ('{"sport": ""}', "is empty")],
)
def test_train_refuses_bad_descriptions_before_writing(workspace, tmp_path, capsys, content, match):
    path = tmp_path / "d.json"
    path.write_text(content)
    assert train(workspace, tmp_path / "out", "--label_descriptions", path) == 1
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "out" / "labeltok_config.json").exists()


# ------------------------------------------------------------------------------------------------ model card


def test_card_lists_short_descriptions_and_plain_labels_without():
    long = "a very long description " * 10
    config = LabelTokConfig(labels=["a|b", "c"], label_descriptions={"a|b": long})
    card = model_card_text(ModelCardInfo("default", config, None, 8, "0"))
    row = next(line for line in card.splitlines() if line.startswith("| 0 |"))
    assert row.startswith("| 0 | a\\|b | a very long description") and row.endswith("… |") and len(row) < 110
    assert "| 1 | c | (its name) |" in card
    plain = model_card_text(ModelCardInfo("default", LabelTokConfig(labels=["a", "c"]), None, 8, "0"))
    assert "| id | label |" in plain and "description" not in plain.split("## Labels")[1].split("##")[0]
