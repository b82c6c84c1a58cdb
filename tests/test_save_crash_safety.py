"""Saves that survive crashes and each other (issue 13 §3): at every instant the folder loads as the old or the new
adapter, stale staging folders go on the next save, concurrent saves never mix, a full disk changes nothing."""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_serialization import logits, trained
from tiny_models import tiny_backbone

from labeltok_peft import LabelTokModel, folder_swap, serialization

# Every file-system step of a save, as folder_swap and the adapter writer call them.
STEPS = ("_rename", "_exchange", "_remove_tree", "_fsync_path", "write_file")


class Killed(BaseException):
    """Stands for SIGKILL: raised at one step, and by every step after it, so that nothing more happens."""


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.labeltok-"))


def loads_as(folder: Path, candidates: dict[str, torch.Tensor]) -> str:
    """Which candidate adapter the folder loads as (by its logits); fails if it loads as neither."""
    out = logits(LabelTokModel.from_pretrained(tiny_backbone("bert"), folder))
    matches = [name for name, expected in candidates.items() if torch.equal(out, expected)]
    assert len(matches) == 1, f"the folder loads as neither the old nor the new adapter: {matches}"
    return matches[0]


def instrument(monkeypatch, kill_at: int | None) -> list[str]:
    """Counts the save's file-system steps; from step `kill_at` on, every step raises `Killed` instead."""
    calls: list[str] = []
    for name in STEPS:
        module = serialization if name == "write_file" else folder_swap
        real = getattr(module, name)

        def step(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            if kill_at is not None and len(calls) > kill_at:
                raise Killed(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, step)
    return calls


@pytest.fixture(scope="module")
def models():
    return {"old": trained("bert", lora={"r": 4}), "new": trained("bert", labels=["a", "b", "c"], init_seed=5)}


@pytest.fixture(scope="module")
def expected(models):
    return {name: logits(model) for name, model in models.items()}


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two_renames"])
def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_adapter(tmp_path, monkeypatch, models, expected, exchange):
    if not exchange:
        monkeypatch.setattr(folder_swap, "_exchange", lambda first, second: False)
    folder = tmp_path / "adapter"
    models["old"].save_pretrained(folder)
    with monkeypatch.context() as patch:
        steps = instrument(patch, kill_at=None)
        models["new"].save_pretrained(folder)
    assert len(steps) >= 8, steps
    outcomes = []
    for kill_at in range(len(steps)):
        folder_at = tmp_path / f"kill_{kill_at}" / "adapter"
        models["old"].save_pretrained(folder_at)
        with monkeypatch.context() as patch:
            instrument(patch, kill_at)
            with pytest.raises(Killed):
                models["new"].save_pretrained(folder_at)
        if folder_at.exists():
            outcomes.append(loads_as(folder_at, expected))
        else:
            # Only without renameat2, between the two renames: the old folder waits beside it, and the next save
            # (or a load's error message) says so.
            assert not exchange and leftovers(folder_at), kill_at
            with pytest.raises(FileNotFoundError, match="save there was interrupted"):
                LabelTokModel.from_pretrained(tiny_backbone("bert"), folder_at)
            folder_swap.recover_folder(folder_at)
            outcomes.append("recovered " + loads_as(folder_at, expected))
        # The next save cleans up whatever the killed one left behind.
        models["new"].save_pretrained(folder_at)
        assert loads_as(folder_at, expected) == "new" and leftovers(folder_at) == []
    assert outcomes[0] == "old" and outcomes[-1] == "new", outcomes


@pytest.mark.multiprocess
def test_a_real_sigkill_during_the_switch(tmp_path, models, expected):
    """A child process saves over an adapter and SIGKILLs itself at the switch and just after it."""
    old, new = tmp_path / "old", tmp_path / "new"
    models["old"].save_pretrained(old)
    models["new"].save_pretrained(new)
    script = textwrap.dedent(
        """
        import os, shutil, signal, sys
        from pathlib import Path
        from labeltok_peft import folder_swap
        from labeltok_peft.constants import ADAPTER_FOLDER_ENTRIES

        target, source, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
        for name in ("_exchange", "_rename", "_remove_tree"):
            real = getattr(folder_swap, name)
            def step(*args, _real=real, _name=name):
                if _name == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                result = _real(*args)
                if "after" + _name == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return result
            setattr(folder_swap, name, step)
        folder_swap.replace_folder(
            target,
            lambda staging: shutil.copytree(source, staging, dirs_exist_ok=True),
            owned_names=ADAPTER_FOLDER_ENTRIES,
        )
        """
    )
    for kill_at, result in (("_exchange", "old"), ("after_exchange", "new"), ("_remove_tree", "new")):
        target = tmp_path / kill_at / "adapter"
        models["old"].save_pretrained(target)
        child = subprocess.run([sys.executable, "-c", script, str(target), str(new), kill_at], capture_output=True)
        assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
        assert leftovers(target), "the killed save left its staging folder"
        assert loads_as(target, expected) == result
        models["new"].save_pretrained(target)
        assert leftovers(target) == [] and loads_as(target, expected) == "new"


def test_a_full_disk_is_a_clear_error_and_changes_nothing(tmp_path, monkeypatch, models, expected):
    folder = tmp_path / "adapter"
    models["old"].save_pretrained(folder)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    written = []

    def full_disk(path, data):
        written.append(path)
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        folder_swap.write_file(path, data)

    monkeypatch.setattr(serialization, "write_file", full_disk)
    with pytest.raises(OSError, match="the disk is full.*Nothing was changed there") as caught:
        models["new"].save_pretrained(folder)
    assert isinstance(caught.value, folder_swap.FolderWriteError) and caught.value.errno == errno.ENOSPC
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert leftovers(folder) == []
    assert loads_as(folder, expected) == "old"

    written.clear()
    with pytest.raises(OSError, match="the disk is full"):
        models["new"].save_pretrained(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists() and leftovers(tmp_path / "fresh") == []


def _save_repeatedly(model, folder: str, rounds: int) -> None:
    torch.set_num_threads(1)
    for _ in range(rounds):
        model.save_pretrained(folder)


@pytest.mark.multiprocess
@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_concurrent_saves_never_mix(tmp_path, models, expected):
    """Three processes save different adapters into one folder at once; every save succeeds, the result is whole."""
    folder = tmp_path / "adapter"
    extra = trained("bert", labels=["x", "y"], init_seed=9)
    sources = {"old": models["old"], "new": models["new"], "extra": extra}
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_save_repeatedly, args=(m, str(folder), 12)) for m in sources.values()]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    assert leftovers(folder) == []
    winner = loads_as(folder, expected | {"extra": logits(extra)})
    assert winner in sources


def test_a_save_never_writes_through_a_symlinked_target(tmp_path, models):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    with pytest.raises(NotADirectoryError, match="symlink"):
        models["old"].save_pretrained(tmp_path / "link")
    assert list(real.iterdir()) == []


def test_an_interrupted_save_in_a_process_puts_the_old_folder_back_at_once(tmp_path, monkeypatch, models, expected):
    """Without renameat2, an error in the second rename renames the old folder back before it propagates."""
    folder = tmp_path / "adapter"
    models["old"].save_pretrained(folder)
    monkeypatch.setattr(folder_swap, "_exchange", lambda first, second: False)
    real_rename = folder_swap._rename

    def rename(source, destination):
        if Path(destination) == folder and ".labeltok-save-" in Path(source).name:
            raise OSError(errno.EIO, "I/O error")
        real_rename(source, destination)

    monkeypatch.setattr(folder_swap, "_rename", rename)
    with pytest.raises(OSError, match="I/O error"):
        models["new"].save_pretrained(folder)
    assert loads_as(folder, expected) == "old" and leftovers(folder) == []


def test_a_save_keeps_what_it_did_not_write(tmp_path, models, expected):
    """A save replaces the adapter's own files only: a trainer's checkpoints and metrics in the same folder survive,
    as does a model card when the new save writes none; a stale lora/ folder does not."""
    folder = tmp_path / "adapter"
    models["old"].save_pretrained(folder)
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "model.safetensors").write_bytes(b"checkpoint bytes")
    (folder / "eval_results.json").write_text('{"eval_accuracy": 0.9}')
    card = (folder / "README.md").read_text()
    models["new"].save_pretrained(folder, model_card=False)
    assert (folder / "checkpoint-5" / "model.safetensors").read_bytes() == b"checkpoint bytes"
    assert (folder / "eval_results.json").read_text() == '{"eval_accuracy": 0.9}'
    assert (folder / "README.md").read_text() == card
    assert not (folder / "lora").exists()  # the new adapter has no LoRA: the old one's weights must go
    assert loads_as(folder, expected) == "new"
    assert leftovers(folder) == []
