"""A Hub round trip without the network (issue 12 §2): `push_to_hub` uploads what `save_pretrained` writes, and
`from_pretrained`/`load_adapter` read a Hub id from a pre-filled Hugging Face cache with `HF_HUB_OFFLINE=1`, with
every check a local folder gets. The cache is laid out by hand exactly as huggingface_hub writes it:
`models--<user>--<repo>/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>, refs/main}`."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants as hub_constants
from test_serialization import logits, tokenizer, trained
from tiny_models import tiny_backbone, tokenizer_for

from labeltok_peft import LabelTokModel
from labeltok_peft.serialization import AdapterFormatError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT, branch: str = "main") -> Path:
    """Puts a saved adapter folder into a Hugging Face cache as one commit of a model repository."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    return snapshot


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    """An offline Hugging Face cache in tmp_path; any network access fails."""
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def source():
    return trained("bert", lora={"r": 4}, per_label_bias=True)


@pytest.fixture(scope="module")
def saved(source, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hub") / "adapter"
    source.save_pretrained(folder, repo_id="me/topics")
    return folder


def test_from_pretrained_reads_a_hub_id_from_the_cache(offline, saved, source):
    fill_cache(offline, "me/topics", saved)
    model = LabelTokModel.from_pretrained(tiny_backbone("bert"), "me/topics", tokenizer=tokenizer_for("bert"))
    assert torch.equal(logits(model), logits(source))
    assert model.id2label == source.id2label


def test_revision_and_cache_dir(offline, saved, source, tmp_path):
    other_cache = tmp_path / "other_cache"
    fill_cache(other_cache, "me/topics", saved, branch="v1")
    model = LabelTokModel(tiny_backbone("bert"), tokenizer=tokenizer_for("bert"))
    model.load_adapter("me/topics", "by_branch", revision="v1", cache_dir=other_cache)
    model.load_adapter("me/topics", "by_commit", revision=COMMIT, cache_dir=other_cache)
    for name in ("by_branch", "by_commit"):
        model.set_adapter(name)
        assert torch.equal(logits(model), logits(source)), name
    with pytest.raises(OSError):  # the default cache is empty and the network is off
        model.load_adapter("me/topics", "missing")
    with pytest.raises(ValueError, match="only applies to Hub repository ids"):
        model.load_adapter(saved, "local", revision="v1")


def test_a_hub_download_gets_the_same_checks_as_a_folder(offline, saved):
    snapshot = fill_cache(offline, "me/topics", saved)
    blob = (snapshot / "labeltok_adapter.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1  # one flipped bit in the label table
    blob.write_bytes(bytes(data))
    with pytest.raises(AdapterFormatError, match="labeltok_adapter.safetensors does not match the sha256"):
        LabelTokModel.from_pretrained(tiny_backbone("bert"), "me/topics")


def test_a_snapshot_link_out_of_the_cached_repository_is_refused(offline, saved, tmp_path):
    snapshot = fill_cache(offline, "me/topics", saved)
    outside = tmp_path / "outside.safetensors"
    shutil.copy(saved / "labeltok_adapter.safetensors", outside)
    (snapshot / "labeltok_adapter.safetensors").unlink()
    os.symlink(outside, snapshot / "labeltok_adapter.safetensors")
    with pytest.raises(AdapterFormatError, match="outside the adapter folder"):
        LabelTokModel.from_pretrained(tiny_backbone("bert"), "me/topics")


def test_a_local_folder_wins_over_a_hub_id_of_the_same_name(offline, saved, source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(saved, tmp_path / "me" / "topics")
    model = LabelTokModel.from_pretrained(tiny_backbone("bert"), "me/topics")  # nothing in the cache: local folder
    assert torch.equal(logits(model), logits(source))


def test_download_is_limited_to_the_adapter_files(monkeypatch, saved, tmp_path):
    """Online, snapshot_download gets allow_patterns with the adapter's files only."""
    seen = {}

    def fake_snapshot_download(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        return str(saved)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    LabelTokModel.from_pretrained(tiny_backbone("bert"), "me/topics", revision="v2", token="t", cache_dir=tmp_path)
    assert seen["repo_id"] == "me/topics" and seen["revision"] == "v2" and seen["token"] == "t"
    assert seen["cache_dir"] == tmp_path
    assert sorted(seen["allow_patterns"]) == [
        "README.md",
        "labeltok_adapter.safetensors",
        "labeltok_config.json",
        "lora/adapter_config.json",
        "lora/adapter_model.safetensors",
    ]


def test_push_to_hub_card_snippet_loads_the_pushed_adapter(monkeypatch, offline, source, tmp_path):
    """The usage snippet in the pushed model card is run as written against the uploaded files."""
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, repo_type, private, exist_ok):
            calls["create_repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, repo_type, revision, commit_message):
            calls["uploaded"] = Path(shutil.copytree(folder_path, tmp_path / "uploaded"))
            return "commit-info"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert source.push_to_hub("me/topics", token="t", private=True, metrics={"accuracy": 1.0}) == "commit-info"
    assert calls["create_repo"] == ("me/topics", True, True) and calls["token"] == "t"
    uploaded = calls["uploaded"]
    assert sorted(str(p.relative_to(uploaded)) for p in uploaded.rglob("*") if p.is_file()) == [
        "README.md",
        "labeltok_adapter.safetensors",
        "labeltok_config.json",
        "lora/adapter_config.json",
        "lora/adapter_model.safetensors",
    ]

    fill_cache(offline, "me/topics", uploaded)
    card = (uploaded / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    load_line = next(line for line in snippet.splitlines() if "LabelTokModel.from_pretrained" in line)
    assert '"me/topics"' in load_line
    namespace = {"LabelTokModel": LabelTokModel, "backbone": tiny_backbone("bert"), "tokenizer": tokenizer("bert")}
    exec(load_line, namespace)
    assert torch.equal(logits(namespace["model"]), logits(source))
