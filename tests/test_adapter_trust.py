"""Loading trusts only what it expects (issue 13 §1, §2): exactly the LoRA tensors of the adapter's own config, plain
LoRA only, files that match the hashes recorded when they were saved, finite numbers, no symlinks out of the
folder, and state dicts (Trainer checkpoints) of this model only. After any failed load the model is bitwise what
it was: every parameter and buffer (the frozen backbone's included), the module tree and the flags."""

from __future__ import annotations

import copy
import json
import os
import shutil
from itertools import chain
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from test_serialization import LABELS, TEXTS, logits, reseal, tokenizer, trained
from tiny_models import tiny_backbone, tokenizer_for
from transformers import BertConfig, BertModel

from labeltok_peft import LabelTokConfig, LabelTokModel, get_labeltok_model
from labeltok_peft.adapters import StateDictMismatchError
from labeltok_peft.serialization import AdapterFormatError, BackboneMismatchError

WORD_EMBEDDINGS = "base_model.model.embeddings.word_embeddings.weight"
QUERY_A = "base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"


def full_snapshot(model: LabelTokModel) -> dict:
    """Every parameter and buffer (backbone included), requires_grad flags, the module tree and the registry."""
    tensors = chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
    return {
        "tensors": {name: tensor.detach().clone() for name, tensor in tensors},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "tree": [(name, type(module).__name__) for name, module in model.named_modules()],
        "adapters": model.adapters,
        "active": model.active_adapter,
        "configs": copy.deepcopy(model.labeltok_configs),
        "peft": sorted(model.backbone.peft_config) if isinstance(model.backbone, PeftModel) else None,
        "training": model.training,
    }


def assert_bitwise_unchanged(model: LabelTokModel, before: dict) -> None:
    after = full_snapshot(model)
    for key in ("requires_grad", "tree", "adapters", "active", "configs", "peft", "training"):
        assert after[key] == before[key], key
    assert after["tensors"].keys() == before["tensors"].keys()
    for name, tensor in before["tensors"].items():
        assert after["tensors"][name].dtype == tensor.dtype and torch.equal(after["tensors"][name], tensor), name


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trust") / "adapter"
    trained("bert", lora={"r": 4}).save_pretrained(folder)
    return folder


@pytest.fixture
def copy_of(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "copy"))


@pytest.fixture(params=["bare", "with_lora", "frozen"])
def host(request, tmp_path) -> LabelTokModel:
    """A model a bad adapter is loaded onto: without LoRA (the first LoRA would wrap it), with a trainable LoRA
    adapter, or loaded for inference (frozen: a failed load must not make its weights trainable)."""
    model = trained("bert", labels=["yes", "no"], lora=None if request.param == "bare" else {"r": 2})
    if request.param != "frozen":
        return model
    model.save_pretrained(tmp_path / "host")
    return LabelTokModel.from_pretrained(tiny_backbone("bert"), tmp_path / "host")


def edit_json(path: Path, edit) -> None:
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def edit_tensors(path: Path, edit) -> None:
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def refused(model: LabelTokModel, folder: Path, error=AdapterFormatError, match: str | None = None) -> None:
    """Loading `folder` fails with `error` and leaves `model` bitwise as it was; a good adapter still loads after."""
    before = full_snapshot(model)
    with pytest.raises(error, match=match):
        model.load_adapter(folder, "new")
    assert_bitwise_unchanged(model, before)


# --------------------------------------------------------------------------------------------------- LoRA keys


@pytest.mark.parametrize(
    "key", [WORD_EMBEDDINGS, "base_model.model.encoder.layer.0.attention.self.query.lora_A.other.weight"]
)
@pytest.mark.parametrize("sealed", [True, False])
def test_a_key_that_is_not_this_adapters_lora_is_refused(host, copy_of, saved, key, sealed):
    """A foreign key would overwrite the shared backbone or another adapter; refused naming it, hashes or not."""
    edit_tensors(copy_of / "lora" / "adapter_model.safetensors", lambda t: t.update({key: torch.ones(64, 32)}))
    if sealed:
        reseal(copy_of)
    refused(host, copy_of, match=(r"'" + key.replace(".", r"\.") + "'") if sealed else "sha256")
    host.load_adapter(saved, "good")  # the model is still usable
    host.set_adapter("good")
    assert torch.equal(logits(host), logits(LabelTokModel.from_pretrained(tiny_backbone("bert"), saved)))


def test_an_extra_lora_tensor_of_a_module_the_config_does_not_target_is_refused(host, copy_of):
    key = "base_model.model.encoder.layer.0.attention.self.key.lora_A.weight"  # default targets: query, value
    edit_tensors(copy_of / "lora" / "adapter_model.safetensors", lambda t: t.update({key: torch.zeros(4, 32)}))
    reseal(copy_of)
    refused(host, copy_of, match="which its LoRA config does not create")


@pytest.mark.parametrize("rank", [2, 8])
def test_an_edited_lora_rank_is_a_clear_error(host, copy_of, rank):
    edit_json(copy_of / "lora" / "adapter_config.json", lambda d: d.update(r=rank))
    refused(host, copy_of, match=r"lora/adapter_config\.json does not match the sha256")
    reseal(copy_of)  # consistent hashes, inconsistent shapes
    refused(host, copy_of, match=rf"has shape \[4, 32\], but its LoRA config \(r={rank}\) creates \[{rank}, 32\]")


@pytest.mark.parametrize(
    "option",
    [
        {"layer_replication": [[0, 2], [0, 2]]},
        {"modules_to_save": ["pooler"]},
        {"trainable_token_indices": [1, 2]},
        {"bias": "all"},
        {"init_lora_weights": "pissa"},
        {"task_type": "SEQ_CLS"},
    ],
)
def test_lora_options_that_edit_the_backbone_are_refused_before_anything_changes(host, copy_of, saved, option):
    edit_json(copy_of / "lora" / "adapter_config.json", lambda d: d.update(option))
    reseal(copy_of)
    refused(host, copy_of, match=f"sets {next(iter(option))}=.*plain LoRA only")
    host.load_adapter(saved, "good")
    layers = host.base_model.encoder.layer
    assert len(layers) == 2  # layer_replication would have made 4

    before = full_snapshot(host)
    config = LabelTokConfig(labels=LABELS, lora={"r": 2, **option})
    with pytest.raises(ValueError, match="plain LoRA only"):
        host.add_adapter("added", config)
    assert_bitwise_unchanged(host, before)


# --------------------------------------------------------------------------------------------------- integrity


def test_a_folder_mixed_from_two_saves_is_refused_naming_the_file(host, copy_of, tmp_path):
    other = tmp_path / "other"
    trained("bert", lora={"r": 4}, init_seed=3).save_pretrained(other)
    shutil.copy(other / "labeltok_adapter.safetensors", copy_of / "labeltok_adapter.safetensors")
    refused(host, copy_of, match=r"labeltok_adapter\.safetensors does not match the sha256.*mixes files of two saves")


def test_edited_tensors_are_refused(host, copy_of):
    edit_tensors(copy_of / "labeltok_adapter.safetensors", lambda t: t["label_table"].mul_(2))
    refused(host, copy_of, match=r"labeltok_adapter\.safetensors does not match the sha256")


def test_reordered_labels_are_refused(host, copy_of):
    edit_json(copy_of / "labeltok_config.json", lambda d: d["labeltok_config"]["labels"].reverse())
    refused(host, copy_of, match=r"labeltok_config\.json does not match the sha256 recorded in it")


def test_the_model_card_may_be_edited(copy_of):
    (copy_of / "README.md").write_text("# my own card\n")
    model = LabelTokModel.from_pretrained(tiny_backbone("bert"), copy_of)
    assert model.id2label == dict(enumerate(LABELS))


@pytest.mark.parametrize("version", [0, -1, True, "2", 1.5, None])
def test_invalid_format_versions_are_refused(host, copy_of, version):
    edit_json(copy_of / "labeltok_config.json", lambda d: d.update(format_version=version))
    reseal(copy_of)
    refused(host, copy_of, match="format_version")


def test_folders_of_format_version_1_still_load(copy_of, saved):
    """Version 1 (before the hashes) keeps loading, with every other check."""
    edit_json(copy_of / "labeltok_config.json", lambda d: [d.pop("integrity"), d.update(format_version=1)])
    loaded = LabelTokModel.from_pretrained(tiny_backbone("bert"), copy_of)
    assert torch.equal(logits(loaded), logits(LabelTokModel.from_pretrained(tiny_backbone("bert"), saved)))
    edit_json(copy_of / "labeltok_config.json", lambda d: d.update(format_version=2))
    with pytest.raises(AdapterFormatError, match="lacks its integrity section"):
        LabelTokModel.from_pretrained(tiny_backbone("bert"), copy_of)


def test_symlinks_out_of_the_folder_are_refused(host, copy_of, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(copy_of / "labeltok_adapter.safetensors", outside)
    os.symlink(outside, copy_of / "labeltok_adapter.safetensors")
    refused(host, copy_of, match="symlink to .*outside the adapter folder")

    # A link that stays inside the folder is fine (the file is the same).
    shutil.move(outside, copy_of / "real.safetensors")
    (copy_of / "labeltok_adapter.safetensors").unlink()
    os.symlink("real.safetensors", copy_of / "labeltok_adapter.safetensors")
    host.load_adapter(copy_of, "inside")


def test_a_symlinked_lora_folder_out_of_the_adapter_is_refused(host, copy_of, tmp_path):
    shutil.move(copy_of / "lora", tmp_path / "lora_elsewhere")
    os.symlink(tmp_path / "lora_elsewhere", copy_of / "lora")
    refused(host, copy_of, match="outside the adapter folder")


# --------------------------------------------------------------------------------------------------- non-finite


@pytest.mark.parametrize(
    ("relative", "key"),
    [
        ("labeltok_adapter.safetensors", "label_table"),
        ("labeltok_adapter.safetensors", "head.score.weight"),
        ("labeltok_adapter.safetensors", "head.score.bias"),
        ("lora/adapter_model.safetensors", QUERY_A),
    ],
)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_tensors_are_refused_naming_the_tensor(host, copy_of, relative, key, value):
    def poison(tensors):
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = value

    edit_tensors(copy_of / relative, poison)
    reseal(copy_of)
    refused(host, copy_of, match=rf"Tensor '{key}' of .* holds 1 NaN or infinite value")


@pytest.mark.parametrize("where", ["label_table", "head", "lora"])
def test_save_refuses_a_non_finite_adapter_and_keeps_the_old_one(tmp_path, where):
    model = trained("bert", lora={"r": 4})
    folder = tmp_path / "adapter"
    model.save_pretrained(folder)
    before = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    with torch.no_grad():
        if where == "label_table":
            model.label_tables["default"][1, 3] = float("nan")
        elif where == "head":
            model.heads["default"].score.weight[0, 0] = float("inf")
        else:
            next(p for name, p in model.named_parameters() if "lora_B" in name)[0, 0] = float("nan")
    with pytest.raises(AdapterFormatError, match="NaN or infinite"):
        model.save_pretrained(folder)
    with pytest.raises(AdapterFormatError, match="NaN or infinite"):
        model.save_pretrained(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    assert {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


# --------------------------------------------------------------------------------------------------- names, paths


@pytest.mark.parametrize("name", ["ok\n", "__class__", "__dict__", "to", "keys", "training", "class", ""])
def test_adapter_names_that_would_clash_are_refused(saved, name):
    model = trained("bert", labels=["yes", "no"])
    before = full_snapshot(model)
    with pytest.raises(ValueError, match="Invalid adapter name"):
        model.load_adapter(saved, name)
    with pytest.raises(ValueError, match="Invalid adapter name"):
        model.add_adapter(name, LabelTokConfig(labels=LABELS))
    assert_bitwise_unchanged(model, before)


def test_saving_to_an_empty_path_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="empty string"):
        trained("bert").save_pretrained("")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------- state dicts


def test_load_state_dict_refuses_backbone_keys_even_with_strict_false():
    """transformers.Trainer resumes with strict=False: a backbone key would silently overwrite the frozen backbone."""
    model = trained("bert", lora={"r": 4})
    state = model.state_dict()
    state["backbone.base_model.model.embeddings.word_embeddings.weight"] = torch.zeros(64, 32)
    before = full_snapshot(model)
    with pytest.raises(StateDictMismatchError, match="word_embeddings.weight'.*not an adapter tensor"):
        model.load_state_dict(state, strict=False)
    assert_bitwise_unchanged(model, before)


def test_load_state_dict_refuses_another_task_with_the_same_shapes():
    source = trained("bert", labels=["a", "b", "c", "d"])
    target = trained("bert")  # LABELS: four other labels, same shapes
    before = full_snapshot(target)
    with pytest.raises(StateDictMismatchError, match=r"another task .*\['labels'\] differ"):
        target.load_state_dict(source.state_dict(), strict=False)
    assert_bitwise_unchanged(target, before)


def test_load_state_dict_refuses_another_backbone():
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
    backbone = BertModel(config, add_pooling_layer=False)
    three_layers = get_labeltok_model(backbone, LabelTokConfig(labels=LABELS), tokenizer_for("bert"))
    target = trained("bert")
    before = full_snapshot(target)
    with pytest.raises(BackboneMismatchError, match="layer count: saved 3, this backbone 2"):
        target.load_state_dict(three_layers.state_dict(), strict=False)
    assert_bitwise_unchanged(target, before)


def test_load_state_dict_checks_shapes_before_it_copies_anything():
    source, target = trained("bert", per_label_bias=True), trained("bert")
    state = source.state_dict()
    state.pop("labeltok_fingerprint.default")
    before = full_snapshot(target)
    with pytest.raises(StateDictMismatchError, match="heads.default.label_bias"):
        target.load_state_dict(state, strict=False)
    assert_bitwise_unchanged(target, before)  # label_tables.default was not copied either


def test_trainer_refuses_to_resume_from_another_tasks_checkpoint(tmp_path):
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    def trainer_for(model, output_dir):
        args = TrainingArguments(
            output_dir=str(output_dir), max_steps=1, save_steps=1, report_to=[], use_cpu=True, disable_tqdm=True
        )
        batch = tokenizer("bert")(TEXTS)
        rows = [{"input_ids": ids, "labels": index % 2} for index, ids in enumerate(batch["input_ids"])]
        return Trainer(
            model=model, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tokenizer("bert"))
        )

    source = get_labeltok_model(tiny_backbone("bert"), LabelTokConfig(labels=["a", "b"]), tokenizer_for("bert"))
    trainer_for(source, tmp_path / "run").train()
    checkpoint = tmp_path / "run" / "checkpoint-1"
    assert "labeltok_fingerprint.default" in load_file(checkpoint / "model.safetensors")

    other_task = get_labeltok_model(tiny_backbone("bert"), LabelTokConfig(labels=["x", "y"]), tokenizer_for("bert"))
    before = full_snapshot(other_task)
    with pytest.raises(StateDictMismatchError, match="another task"):
        trainer_for(other_task, tmp_path / "other").train(resume_from_checkpoint=str(checkpoint))
    assert_bitwise_unchanged(other_task, before)

    tampered = load_file(checkpoint / "model.safetensors")
    tampered["backbone.embeddings.word_embeddings.weight"] = torch.zeros(64, 32)
    save_file(tampered, checkpoint / "model.safetensors", metadata={"format": "pt"})
    same_task = get_labeltok_model(tiny_backbone("bert"), LabelTokConfig(labels=["a", "b"]), tokenizer_for("bert"))
    before = full_snapshot(same_task)
    with pytest.raises(StateDictMismatchError, match="word_embeddings"):
        trainer_for(same_task, tmp_path / "same").train(resume_from_checkpoint=str(checkpoint))
    assert_bitwise_unchanged(same_task, before)
