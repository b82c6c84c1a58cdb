"""Saving, loading, swapping, deleting and sharing adapters (tiny backbones built from configs, CPU fp32)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from tiny_models import optimize_on_batch, tiny_backbone, tokenizer_for
from transformers import BertConfig, BertModel

from labeltok_peft import LabelTokConfig, LabelTokModel, get_labeltok_model
from labeltok_peft.serialization import AdapterFormatError, BackboneMismatchError

LABELS = ["sport", "business", "film", "tech"]
TEXTS = ["the team won the match", "bank profit and market shares", "film actor award", "phone software chip"]


def tokenizer(family: str):
    """The family's tiny tokenizer, with a pad token (decoder tokenizers ship without one)."""
    result = tokenizer_for(family)
    if result.pad_token is None:
        result.pad_token = result.eos_token
    return result


def train_a_little(model: LabelTokModel, family: str, steps: int = 2) -> None:
    """Moves every trainable tensor away from its initial value (LoRA B starts at zero)."""
    labels = torch.arange(len(TEXTS)) % model.labeltok_config.num_labels
    if model.labeltok_config.is_multi_label:
        labels = torch.nn.functional.one_hot(labels, model.labeltok_config.num_labels).float()
    batch = dict(tokenizer(family)(TEXTS, padding=True, return_tensors="pt"), labels=labels)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    optimize_on_batch(model, batch, optimizer, steps)


def trained(family: str = "bert", labels: list[str] = LABELS, **config_kwargs) -> LabelTokModel:
    config = LabelTokConfig(labels=labels, **config_kwargs)
    model = get_labeltok_model(tiny_backbone(family), config, tokenizer=tokenizer_for(family))
    train_a_little(model, family)
    return model


def logits(model: LabelTokModel, family: str = "bert") -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**tokenizer(family)(TEXTS, padding=True, return_tensors="pt")).logits


def snapshot(model: LabelTokModel) -> dict:
    """Everything a failed load must leave unchanged."""
    return {
        "adapters": model.adapters,
        "active": model.active_adapter,
        "backbone_type": type(model.backbone),
        "peft": sorted(model.backbone.peft_config) if isinstance(model.backbone, PeftModel) else None,
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "all_parameter_names": sorted(name for name, _ in model.named_parameters()),
        "logits": logits(model),
    }


def assert_unchanged(model: LabelTokModel, before: dict) -> None:
    after = snapshot(model)
    for key in ("adapters", "active", "backbone_type", "peft", "all_parameter_names"):
        assert after[key] == before[key], key
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    assert torch.equal(after["logits"], before["logits"])


@pytest.fixture(scope="module")
def lora_adapter(tmp_path_factory) -> Path:
    """A saved bert adapter with LoRA and a per-label bias."""
    folder = tmp_path_factory.mktemp("saved") / "lora_adapter"
    trained("bert", lora={"r": 4}, per_label_bias=True).save_pretrained(folder)
    return folder


@pytest.fixture
def copy_of(lora_adapter, tmp_path) -> Path:
    return Path(shutil.copytree(lora_adapter, tmp_path / "copy"))


@pytest.fixture
def host() -> LabelTokModel:
    """A model without LoRA that bad adapters are loaded onto."""
    return trained("bert", labels=["yes", "no"])


# --------------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("lora", [None, {"r": 4}])
def test_save_load_round_trip_is_bitwise(tmp_path, family, lora):
    model = trained(family, lora=lora, per_label_bias=True, label_attention="isolated")
    expected = logits(model, family)
    model.save_pretrained(tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} == (
        {"labeltok_config.json", "labeltok_adapter.safetensors", "README.md"} | ({"lora"} if lora else set())
    )

    loaded = LabelTokModel.from_pretrained(tiny_backbone(family), tmp_path / "adapter")
    assert not loaded.training
    assert loaded.adapters == ["default"] and loaded.active_adapter == "default"
    assert loaded.labeltok_config == model.labeltok_config
    assert isinstance(loaded.backbone, PeftModel) == (lora is not None)
    assert torch.equal(logits(loaded, family), expected)
    assert not any(p.requires_grad for p in loaded.parameters()), "is_trainable=False must load frozen"


def test_bf16_backbone_round_trip_keeps_fp32_adapter_weights(tmp_path):
    def build(labels, lora):
        backbone = tiny_backbone("llama").to(torch.bfloat16)
        model = get_labeltok_model(backbone, LabelTokConfig(labels=labels, lora=lora), tokenizer("llama"))
        train_a_little(model, "llama")
        return model

    first, second = build(LABELS, {"r": 4}), build(["yes", "no"], {"r": 2})
    first.save_pretrained(tmp_path / "first")
    second.save_pretrained(tmp_path / "second")

    loaded = LabelTokModel.from_pretrained(tiny_backbone("llama").to(torch.bfloat16), tmp_path / "first")
    loaded.load_adapter(tmp_path / "second", "second")  # the second LoRA adapter takes PEFT's add_adapter path
    lora_dtypes = {p.dtype for name, p in loaded.named_parameters() if "lora_" in name}
    assert lora_dtypes == {torch.float32}, "LoRA weights must stay fp32 as during training"
    assert torch.equal(logits(loaded, "llama"), logits(first, "llama"))
    loaded.set_adapter("second")
    assert torch.equal(logits(loaded, "llama"), logits(second, "llama"))


def test_load_for_training_makes_the_adapter_trainable(lora_adapter):
    model = LabelTokModel.from_pretrained(tiny_backbone("bert"), lora_adapter, is_trainable=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "label_tables.default" in trainable
    assert any(name.startswith("heads.default.") for name in trainable)
    assert any("lora_A.default" in name for name in trainable)
    assert all(name.startswith(("label_tables.", "heads.")) or "lora_" in name for name in trainable)
    before = model.label_tables["default"].detach().clone()
    train_a_little(model, "bert", steps=1)
    assert not torch.equal(model.label_tables["default"], before)


def test_loading_keeps_the_global_random_state(lora_adapter):
    backbone = tiny_backbone("bert")
    state = torch.get_rng_state()
    LabelTokModel.from_pretrained(backbone, lora_adapter)
    assert torch.equal(torch.get_rng_state(), state)


def test_peft_loads_the_lora_part_alone(tmp_path):
    model = trained("bert", lora={"r": 4})
    model.save_pretrained(tmp_path / "adapter")
    expected = get_peft_model_state_dict(model.backbone, adapter_name="default")

    peft_model = PeftModel.from_pretrained(tiny_backbone("bert"), tmp_path / "adapter" / "lora")
    loaded = get_peft_model_state_dict(peft_model, adapter_name="default")
    assert loaded.keys() == expected.keys() and len(loaded) == 8  # 2 layers x (query, value) x (A, B)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    assert any(value.abs().sum() > 0 for key, value in loaded.items() if "lora_B" in key)


def test_only_safetensors_json_and_card_on_disk(lora_adapter):
    suffixes = {path.suffix for path in lora_adapter.rglob("*") if path.is_file()}
    assert suffixes == {".json", ".safetensors", ".md"}
    saved = load_file(lora_adapter / "labeltok_adapter.safetensors")
    assert set(saved) == {"label_table", "head.score.weight", "head.score.bias", "head.label_bias", "head.label_weight"}
    assert saved["label_table"].shape == (len(LABELS), 32) and saved["label_table"].dtype == torch.float32
    document = json.loads((lora_adapter / "labeltok_config.json").read_text())
    assert document["format_version"] == 2 and document["library_version"]
    assert set(document["integrity"]["files"]) == {
        "labeltok_adapter.safetensors",
        "lora/adapter_config.json",
        "lora/adapter_model.safetensors",
    }
    assert document["backbone"] == {
        "model_type": "bert",
        "hidden_size": 32,
        "num_layers": 2,
        "vocab_size": 64,
        "name_or_path": None,
    }


def test_resaving_without_lora_removes_the_stale_lora_folder(tmp_path):
    folder = tmp_path / "adapter"
    trained("bert", lora={"r": 4}).save_pretrained(folder)
    plain = trained("bert")
    plain.save_pretrained(folder)
    assert not (folder / "lora").exists()
    assert torch.equal(logits(LabelTokModel.from_pretrained(tiny_backbone("bert"), folder)), logits(plain))


def test_lora_arguments_given_as_a_set_are_saved_as_json(tmp_path):
    model = trained("bert", lora={"r": 2, "target_modules": {"query", "key"}})
    model.save_pretrained(tmp_path / "adapter")
    document = json.loads((tmp_path / "adapter" / "labeltok_config.json").read_text())
    assert document["labeltok_config"]["lora"] == {"r": 2, "target_modules": ["key", "query"]}
    loaded = LabelTokModel.from_pretrained(tiny_backbone("bert"), tmp_path / "adapter")
    torch.testing.assert_close(logits(loaded), logits(model), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------------- many adapters


def test_many_adapters_share_one_backbone(tmp_path):
    sources = {
        "topics": trained("bert", lora={"r": 4}),
        "sentiment": trained("bert", labels=["negative", "positive"], problem_type="multi_label_classification"),
        "genre": trained("bert", labels=["film", "music", "game"], lora={"r": 2}, per_label_bias=True),
    }
    for name, source in sources.items():
        source.save_pretrained(tmp_path / name)

    model = LabelTokModel(tiny_backbone("bert"), tokenizer=tokenizer_for("bert"))
    base_weights = {name: p.data_ptr() for name, p in model.base_model.named_parameters()}
    for name in sources:
        model.load_adapter(tmp_path / name, name)
    assert model.adapters == list(sources) and model.active_adapter == "topics"

    # The backbone's weights exist once: the same tensors, no copies, whatever the number of adapters.
    frozen = {name: p.data_ptr() for name, p in model.base_model.named_parameters() if "lora_" not in name}
    assert sorted(frozen.values()) == sorted(base_weights.values())

    for _ in range(2):
        for name, source in sources.items():
            model.set_adapter(name)
            assert model.id2label == source.id2label
            out = logits(model)
            assert out.shape == (len(TEXTS), source.labeltok_config.num_labels)
            assert torch.equal(out, logits(source)), name


def test_delete_adapters_with_and_without_lora(tmp_path):
    model = trained("bert", lora={"r": 4})
    trained("bert", labels=["yes", "no"]).save_pretrained(tmp_path / "plain")
    trained("bert", labels=["a", "b", "c"], lora={"r": 2}).save_pretrained(tmp_path / "other_lora")
    model.load_adapter(tmp_path / "plain", "plain")
    model.load_adapter(tmp_path / "other_lora", "other_lora")
    model.set_adapter("plain")
    plain_logits = logits(model)

    with pytest.raises(ValueError, match="active adapter"):
        model.delete_adapter("plain")
    with pytest.raises(KeyError, match="No adapter named 'nope'"):
        model.delete_adapter("nope")

    model.delete_adapter("other_lora")
    assert model.adapters == ["default", "plain"]
    assert torch.equal(logits(model), plain_logits)
    model.delete_adapter("default")  # the last LoRA adapter: the bare backbone comes back
    assert model.adapters == ["plain"] and not isinstance(model.backbone, PeftModel)
    assert not any("lora_" in name for name, _ in model.named_parameters())
    assert torch.equal(logits(model), plain_logits)


def test_loading_an_existing_name_needs_replace(tmp_path, lora_adapter):
    model = trained("bert", labels=["yes", "no"])
    before = snapshot(model)
    with pytest.raises(ValueError, match="already loaded; pass replace=True"):
        model.load_adapter(lora_adapter, "default")
    assert_unchanged(model, before)

    model.load_adapter(lora_adapter, "default", replace=True)
    assert model.adapters == ["default"] and model.id2label == dict(enumerate(LABELS))
    reference = LabelTokModel.from_pretrained(tiny_backbone("bert"), lora_adapter)
    assert torch.equal(logits(model), logits(reference))


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "..", "", "a.b", "with space"])
def test_adapter_names_are_validated(lora_adapter, host, name):
    before = snapshot(host)
    with pytest.raises(ValueError, match="Invalid adapter name"):
        host.load_adapter(lora_adapter, name)
    with pytest.raises(ValueError, match="Invalid adapter name"):
        LabelTokModel.from_pretrained(tiny_backbone("bert"), lora_adapter, adapter_name=name)
    assert_unchanged(host, before)


# --------------------------------------------------------------------------------------------------- trainer state


@pytest.mark.parametrize("name", ["default", "encoder"])  # "encoder" is also the name of a BERT module
def test_state_dict_holds_adapter_tensors_only(name):
    config = LabelTokConfig(labels=LABELS, lora={"r": 4}, per_label_bias=True)
    model = get_labeltok_model(tiny_backbone("bert"), config, tokenizer_for("bert"), adapter_name=name)
    train_a_little(model, "bert")
    state = model.state_dict()
    assert state and all(
        k.startswith(("label_tables.", "heads.")) or ".lora_" in k or k == f"labeltok_fingerprint.{name}" for k in state
    ), sorted(state)
    assert sum(".lora_" in k for k in state) == 8 and state[f"labeltok_fingerprint.{name}"].dtype == torch.uint8

    fresh = get_labeltok_model(tiny_backbone("bert"), config, tokenizer_for("bert"), adapter_name=name)
    result = fresh.load_state_dict(state, strict=True)  # backbone weights are never reported missing
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(logits(fresh), logits(model))

    incomplete = {k: v for k, v in state.items() if k != f"label_tables.{name}"}
    with pytest.raises(RuntimeError, match=f"label_tables.{name}"):
        fresh.load_state_dict(incomplete, strict=True)


# --------------------------------------------------------------------------------------------------- bad input


def test_missing_folder(host, tmp_path):
    with pytest.raises(FileNotFoundError, match="No adapter folder"):
        host.load_adapter(tmp_path / "nowhere", "new")


def test_folder_of_a_plain_peft_adapter(host, tmp_path, copy_of):
    (copy_of / "labeltok_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="Missing labeltok_config.json"):
        host.load_adapter(copy_of, "new")
    with pytest.raises(FileNotFoundError, match="plain PEFT adapter"):
        host.load_adapter(copy_of / "lora", "new")


@pytest.mark.parametrize(
    "relative", ["labeltok_adapter.safetensors", "lora/adapter_model.safetensors", "lora/adapter_config.json"]
)
def test_missing_files(host, copy_of, relative):
    (copy_of / relative).unlink()
    before = snapshot(host)
    with pytest.raises(FileNotFoundError, match=Path(relative).name):
        host.load_adapter(copy_of, "new")
    assert_unchanged(host, before)


@pytest.mark.parametrize("relative", ["labeltok_config.json", "lora/adapter_config.json"])
def test_corrupt_json(host, copy_of, relative):
    path = copy_of / relative
    path.write_text(path.read_text()[:-20])
    if relative != "labeltok_config.json":
        reseal(copy_of)
    before = snapshot(host)
    with pytest.raises(AdapterFormatError, match="not valid JSON"):
        host.load_adapter(copy_of, "new")
    assert_unchanged(host, before)


@pytest.mark.parametrize("relative", ["labeltok_adapter.safetensors", "lora/adapter_model.safetensors"])
def test_truncated_safetensors(host, copy_of, relative):
    path = copy_of / relative
    path.write_bytes(path.read_bytes()[:-7])
    reseal(copy_of)
    before = snapshot(host)
    with pytest.raises(AdapterFormatError, match="truncated"):
        host.load_adapter(copy_of, "new")
    assert_unchanged(host, before)


def reseal(folder: Path) -> None:
    """Records the current files' sha256 in labeltok_config.json, as docs/adapter_format.md specifies them.

    Simulates a folder whose files are consistent with their hashes but wrong otherwise, so that the checks behind
    the integrity check are tested too.
    """
    path = folder / "labeltok_config.json"
    document = json.loads(path.read_text())
    files = document["integrity"]["files"]
    for relative in files:
        files[relative] = hashlib.sha256((folder / relative).read_bytes()).hexdigest()
    content = {key: value for key, value in document.items() if key != "integrity"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    document["integrity"]["config"] = hashlib.sha256(canonical.encode()).hexdigest()
    path.write_text(json.dumps(document))


def _rewrite_tensors(path: Path, edit) -> None:
    """Edits a safetensors file of an adapter folder and reseals the folder."""
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)
    folder = path.parent.parent if path.parent.name == "lora" else path.parent
    reseal(folder)


def test_wrong_tensor_shape(host, copy_of):
    _rewrite_tensors(
        copy_of / "labeltok_adapter.safetensors", lambda t: t.update({"head.score.weight": torch.zeros(1, 16)})
    )
    before = snapshot(host)
    with pytest.raises(AdapterFormatError, match=r"'head.score.weight' has shape \[1, 16\], expected \[1, 32\]"):
        host.load_adapter(copy_of, "new")
    assert_unchanged(host, before)


def test_label_count_mismatch(host, copy_of):
    path = copy_of / "labeltok_config.json"
    document = json.loads(path.read_text())
    document["labeltok_config"]["labels"].append("politics")
    path.write_text(json.dumps(document))
    reseal(copy_of)
    before = snapshot(host)
    with pytest.raises(AdapterFormatError, match="lists 5 labels but label_table .* has 4 rows"):
        host.load_adapter(copy_of, "new")
    assert_unchanged(host, before)


def test_lora_tensor_of_the_wrong_shape(host, copy_of):
    key = "base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"
    _rewrite_tensors(copy_of / "lora" / "adapter_model.safetensors", lambda t: t.update({key: torch.zeros(4, 48)}))
    before = snapshot(host)
    with pytest.raises(AdapterFormatError, match="does not fit module 'encoder.layer.0.attention.self.query'"):
        host.load_adapter(copy_of, "new")
    assert_unchanged(host, before)


def test_lora_tensors_missing_for_a_targeted_module_roll_back(host, copy_of):
    """Passes the file checks, fails inside PEFT: what was attached is removed again, the backbone is bare again."""
    prefix = "base_model.model.encoder.layer.1.attention.self.value."
    _rewrite_tensors(
        copy_of / "lora" / "adapter_model.safetensors", lambda t: [t.pop(k) for k in list(t) if k.startswith(prefix)]
    )
    before = snapshot(host)
    with pytest.raises(AdapterFormatError, match="missing"):
        host.load_adapter(copy_of, "new")
    assert_unchanged(host, before)
    assert not isinstance(host.backbone, PeftModel)


def test_failed_replace_restores_the_old_adapter(copy_of, lora_adapter):
    model = LabelTokModel.from_pretrained(tiny_backbone("bert"), lora_adapter)
    prefix = "base_model.model.encoder.layer.1.attention.self.value."
    _rewrite_tensors(
        copy_of / "lora" / "adapter_model.safetensors", lambda t: [t.pop(k) for k in list(t) if k.startswith(prefix)]
    )
    before = snapshot(model)
    with pytest.raises(AdapterFormatError):
        model.load_adapter(copy_of, "default", replace=True)
    assert_unchanged(model, before)


def test_hidden_size_mismatch_names_both(lora_adapter):
    wide = BertModel(
        BertConfig(vocab_size=64, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
        add_pooling_layer=False,
    )
    with pytest.raises(BackboneMismatchError, match="hidden size: saved 32, this backbone 48"):
        LabelTokModel.from_pretrained(wide, lora_adapter)


def test_model_type_mismatch_names_both(lora_adapter):
    model = trained("llama", labels=["yes", "no"])
    before = snapshot(model)
    with pytest.raises(BackboneMismatchError, match="model type: saved 'bert', this backbone 'llama'"):
        model.load_adapter(lora_adapter, "new")
    assert model.adapters == before["adapters"] and not isinstance(model.backbone, PeftModel)


def test_newer_format_version_asks_for_an_upgrade(host, copy_of):
    path = copy_of / "labeltok_config.json"
    document = json.loads(path.read_text())
    document["format_version"] = 99
    path.write_text(json.dumps(document))
    with pytest.raises(AdapterFormatError, match="upgrade labeltok-peft"):
        host.load_adapter(copy_of, "new")


# --------------------------------------------------------------------------------------------------- sharing


def test_model_card(tmp_path):
    model = trained("bert", lora={"r": 4})
    model.base_model.config._name_or_path = "org/tiny-bert"
    model.save_pretrained(tmp_path / "adapter", dataset_name="bbc_news", metrics={"accuracy": 0.875, "macro_f1": 0.8})
    card = (tmp_path / "adapter" / "README.md").read_text()
    front_matter = card.split("---")[1]
    assert "base_model: org/tiny-bert" in front_matter and "library_name: labeltok-peft" in front_matter
    assert "- bbc_news" in front_matter and "pipeline_tag: text-classification" in front_matter
    for index, label in enumerate(LABELS):
        assert f"| {index} | {label} |" in card
    assert "| accuracy | 0.8750 |" in card and "| macro_f1 | 0.8000 |" in card
    assert 'LabelTokModel.from_pretrained(backbone, "<path to this folder>"' in card
    assert 'AutoModel.from_pretrained("org/tiny-bert")' in card
    assert "r=4" in card

    # Dataset and metrics travel with the adapter: a reloaded adapter writes the same card.
    reloaded = LabelTokModel.from_pretrained(tiny_backbone("bert"), tmp_path / "adapter")
    reloaded.save_pretrained(tmp_path / "again")
    assert "| accuracy | 0.8750 |" in (tmp_path / "again" / "README.md").read_text()


def test_model_card_without_metrics_keeps_local_paths_out_of_metadata(tmp_path):
    model = trained("bert")
    model.base_model.config._name_or_path = "/data/models/tiny-bert"
    model.save_pretrained(tmp_path / "adapter")
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "base_model:" not in card.split("---")[1]
    assert "/data/models/tiny-bert" in card and "No metrics were recorded" in card
