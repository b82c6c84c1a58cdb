"""Multi-label thresholds recorded by `labeltok train` are keyed by label name, so they survive a label-set change.

After `remove_labels`/`add_labels` the labels that kept a tuned threshold still use it, new labels use 0.5 (or
`--threshold`), and thresholds of removed labels are ignored, each with a log line. Files written before (a list in
label order) still load while the list fits the labels, and are refused clearly when it no longer does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from recipe_data import LABELS, make_rows, save_tiny_backbone, write_rows

from labeltok_peft import LabelTokConfig
from labeltok_peft.cli import main as cli_main
from labeltok_peft.cli.common import adapter_thresholds

QUICK = ["--num_train_epochs", "2", "--per_device_train_batch_size", "16", "--lora_r", "4", "--learning_rate", "5e-3",
         "--save_strategy", "no", "--disable_tqdm", "true", "--report_to", "none"]  # fmt: skip
TEXT = "the team won the match"


def multi_config(labels: list[str]) -> LabelTokConfig:
    return LabelTokConfig(labels=labels, problem_type="multi_label_classification")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("thresholds")
    save_tiny_backbone(root / "tiny")
    write_rows(make_rows(20, seed=2, multi_label=True), root / "train.jsonl")
    write_rows(make_rows(6, seed=3, multi_label=True), root / "dev.jsonl")
    out = root / "adapter"
    argv = ["train", "--model_name_or_path", root / "tiny", "--train_file", root / "train.jsonl",
            "--validation_file", root / "dev.jsonl", "--output_dir", out, *QUICK]  # fmt: skip
    assert cli_main([str(arg) for arg in argv]) == 0
    return out


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def predict_row(adapter: Path, output_dir: Path, *extra: str) -> dict:
    argv = ["predict", "--adapter_path", adapter, "--texts", TEXT, "--output_dir", output_dir, *extra]
    assert cli_main([str(arg) for arg in argv]) == 0
    return json.loads((output_dir / "predictions.jsonl").read_text())


def test_train_records_thresholds_by_label_name(trained):
    thresholds = read_json(trained / "labeltok_recipe.json")["thresholds"]
    assert isinstance(thresholds, dict) and sorted(thresholds) == sorted(LABELS)
    assert all(0 <= value <= 1 for value in thresholds.values())


def test_thresholds_follow_their_labels_after_the_label_set_changes(trained, tmp_path, caplog):
    from labeltok_peft import LabelTokModel

    recipe = read_json(trained / "labeltok_recipe.json")
    backbone_path = recipe["model_name_or_path"]
    from transformers import AutoModel, AutoTokenizer

    model = LabelTokModel.from_pretrained(
        AutoModel.from_pretrained(backbone_path), trained, tokenizer=AutoTokenizer.from_pretrained(backbone_path)
    )
    model.remove_labels(["politics"])
    model.add_labels(["weather"])
    changed = tmp_path / "changed"
    model.save_pretrained(changed)
    labels = model.labeltok_config.labels
    assert labels == ["business", "sport", "tech", "weather"]

    # The text's probabilities, and thresholds placed just below them for business and tech and just above for
    # sport: only a predict that gives each kept label its own recorded threshold selects exactly business and tech
    # among them. The record lists the labels in reverse (a positional reading mismatches them) and keeps the
    # removed label's entry.
    scores = predict_row(changed, tmp_path / "scores", "--threshold", "0.5")["scores"]
    recorded = {"tech": scores["tech"] - 1e-4, "sport": min(1.0, scores["sport"] + 1e-4), "politics": 0.01,
                "business": scores["business"] - 1e-4}  # fmt: skip
    (changed / "labeltok_recipe.json").write_text(json.dumps(dict(recipe, thresholds=recorded)))

    # An explicit --log_level: with the default ('passive') the command follows transformers' global verbosity,
    # which an in-process benchmark test earlier in the session may have set to 'error'.
    with caplog.at_level(logging.INFO, logger="labeltok_peft"):
        row = predict_row(changed, tmp_path / "p", "--log_level", "info")
    expected = ["business", "tech"] + (["weather"] if scores["weather"] >= 0.5 else [])
    assert row["labels"] == expected
    messages = [record.getMessage() for record in caplog.records]
    assert any("added after training" in message and "'weather'" in message for message in messages), messages
    assert any("no longer has" in message and "'politics'" in message for message in messages), messages

    # --threshold still sets every label, the new one included.
    assert predict_row(changed, tmp_path / "all", "--threshold", "0.0")["labels"] == labels


def test_new_labels_get_one_half_and_removed_labels_drop_out(caplog):
    config = multi_config(["a", "c", "d"])
    with caplog.at_level(logging.INFO, logger="labeltok_peft"):
        thresholds = adapter_thresholds(None, {"thresholds": {"b": 0.9, "c": 0.3, "a": 0.7}}, config, "adapter")
    assert thresholds == [0.7, 0.3, 0.5]
    assert any("'d'" in record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)
    assert adapter_thresholds(0.2, {"thresholds": {"a": 0.7}}, config, "adapter") == [0.2, 0.2, 0.2]


def test_old_list_form_files_still_load_while_they_fit():
    config = multi_config(["a", "b", "c"])
    assert adapter_thresholds(None, {"thresholds": [0.1, 0.2, 0.3]}, config, "adapter") == [0.1, 0.2, 0.3]
    assert adapter_thresholds(None, {"thresholds": None}, config, "adapter") == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="label set changed.*labeltok_recipe|labeltok_recipe.*label set changed"):
        adapter_thresholds(None, {"thresholds": [0.1, 0.2]}, config, "adapter")


def test_tampered_keyed_thresholds_are_refused():
    config = multi_config(["a", "b"])
    for tampered in ({"a": 7.0}, {"a": float("nan")}, {"b": "high"}):
        with pytest.raises(ValueError, match="labeltok_recipe.json"):
            adapter_thresholds(None, {"thresholds": tampered}, config, "adapter")
