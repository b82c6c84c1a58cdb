"""recipes/benchmark.py keeps each finished (method, seed) on disk: reruns skip it, results gather only matching runs.

Runs the real recipe in-process on a tiny BBC slice with the linear probe (the fastest method; seconds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))

import benchmark  # noqa: E402

TINY = ["--dataset", "bbc_news", "--per_label", "6", "--epochs", "1", "--max_length", "32", "--in_process"]


def run(output_dir: Path, *flags: str) -> dict:
    benchmark.main([*TINY, "--output_dir", str(output_dir), *flags])
    return json.loads((output_dir / "bbc_news" / "results.json").read_text())


@pytest.mark.integration
def test_saved_runs_are_skipped_and_gathered_only_with_the_same_settings(tmp_path: Path):
    first = run(tmp_path, "--methods", "linear_probe", "--seeds", "0")
    saved = tmp_path / "bbc_news" / "runs" / "linear_probe@seed0.json"
    assert saved.exists()
    assert list(first["runs"]) == ["linear_probe"] and list(first["runs"]["linear_probe"]) == ["0"]
    written_at = saved.stat().st_mtime_ns

    # A second process adds another seed: the saved seed is not retrained, and both are gathered.
    second = run(tmp_path, "--methods", "linear_probe", "--seeds", "0,1")
    assert saved.stat().st_mtime_ns == written_at
    assert list(second["runs"]["linear_probe"]) == ["0", "1"]
    assert second["settings"]["seeds"] == [0, 1]
    assert second["runs"]["linear_probe"]["0"] == first["runs"]["linear_probe"]["0"]

    # Other settings never mix with these runs; --collect gathers without training.
    other = run(tmp_path, "--methods", "linear_probe", "--seeds", "0", "--max_length", "16", "--collect")
    assert other["runs"] == {}
    again = run(tmp_path, "--methods", "linear_probe", "--collect")
    assert list(again["runs"]["linear_probe"]) == ["0", "1"]

    # --rerun trains a saved run again.
    run(tmp_path, "--methods", "linear_probe", "--seeds", "0", "--rerun")
    assert saved.stat().st_mtime_ns != written_at

    # A damaged saved run is named, with the fix, instead of failing somewhere inside json.
    saved.write_text('{"spec": "linear_probe", "seed"')
    with pytest.raises(ValueError, match=r"linear_probe@seed0\.json is unreadable.*delete it"):
        run(tmp_path, "--methods", "linear_probe", "--collect")
