"""recipes/benchmarks/benchmark.py keeps each finished (method, seed) on disk: reruns skip it, results gather only matching runs.

Runs the real recipe in-process on a tiny BBC slice with the linear probe (the fastest method; seconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipes.benchmarks import benchmark

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


@pytest.mark.multiprocess
def test_the_renderer_imports_neither_the_runner_nor_torch():
    """make_benchmarks_md starts the benchmarks as subprocesses and renders in seconds: it must not import them."""
    import subprocess
    import sys

    probe = (
        "import sys, recipes.benchmarks.make_benchmarks_md; "
        "print([m for m in ('torch', 'transformers', 'recipes.benchmarks.benchmark', "
        "'recipes.benchmarks.benchmark_methods') if m in sys.modules])"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root, check=True)
    assert result.stdout.strip() == "[]"


def test_quality_table_shows_precision_at_k_only_where_it_was_measured():
    from recipes.benchmarks.benchmark_common import quality_table, summarize_runs

    rows = [
        {"macro_f1": 0.5, "precision_at_1": 0.6, "precision_at_5": 0.2},
        {"macro_f1": 0.7, "precision_at_1": 0.8, "precision_at_5": 0.4},
        {"macro_f1": 0.6, "precision_at_1": 0.7, "precision_at_5": 0.3},
    ]
    ranked = {"data": {"multi_label": True}, "summary": {"labeltok": summarize_runs(rows)}}
    header, _, line = quality_table(ranked).splitlines()
    cells = dict(zip(header.strip("| ").split(" | "), line.strip("| ").split(" | "), strict=True))
    assert cells["P@1"] == "0.700 (0.600–0.800)"
    assert cells["P@5"] == "0.300 (0.200–0.400)"
    assert cells["macro-F1"] == "0.600 (0.500–0.700)"
    plain = {"data": {"multi_label": True}, "summary": {"labeltok": summarize_runs([{"macro_f1": 0.5}])}}
    assert "P@5" not in quality_table(plain)


def test_ranking_metrics_are_reported_on_the_many_label_dataset_only():
    import numpy as np

    from recipes.benchmarks.benchmark_methods import ranked_quality

    scores = np.array([[0.1] * 5 + [0.9], [0.9] + [0.1] * 5])
    labels = np.array([[0, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0]])
    ranked = ranked_quality("wordnet_ancestors", scores, labels, multi_label=True)
    assert ranked["precision_at_1"] == 0.5  # row 0 right, row 1 wrong
    assert ranked["precision_at_5"] == pytest.approx((1 / 5 + 1 / 5) / 2)  # each row's true label in its top 5
    assert ranked_quality("wordnet_hypernyms", scores, labels, multi_label=True) == {}


@pytest.mark.integration
def test_few_shot_runs_are_saved_per_shots_and_resume(tmp_path: Path):
    """--shots_per_class 2,3 trains on 2 then 3 rows per class, each in its own folder; the test split stays whole."""
    benchmark.main([*TINY, "--output_dir", str(tmp_path), "--methods", "linear_probe", "--seeds", "0,1"])
    benchmark.main(
        [
            *TINY,
            "--output_dir",
            str(tmp_path),
            "--methods",
            "linear_probe",
            "--seeds",
            "0,1",
            "--shots_per_class",
            "2,3",
        ]
    )
    full = json.loads((tmp_path / "bbc_news" / "results.json").read_text())
    for shots in (2, 3):
        result = json.loads((tmp_path / "bbc_news" / f"shots{shots}" / "results.json").read_text())
        assert result["shots_per_class"] == shots and result["settings"]["shots_per_class"] == shots
        assert result["data"]["test_rows"] == full["data"]["test_rows"]
        for seed in ("0", "1"):
            row = result["runs"]["linear_probe"][seed]
            assert row["train_rows"] == 5 * shots
            assert row["min_label_rows"] == row["max_label_rows"] == shots
            assert result["data"]["samples"][seed]["train_rows"] == 5 * shots
    assert "train_rows" not in full["runs"]["linear_probe"]["0"]  # the full run was not replaced by a sample
    assert "shots_per_class" not in full["settings"]  # runs saved before few shots existed keep matching

    # A second call skips what is saved, per (method, seed, shots).
    saved = tmp_path / "bbc_news" / "shots3" / "runs" / "linear_probe@seed1.json"
    written_at = saved.stat().st_mtime_ns
    benchmark.main(
        [*TINY, "--output_dir", str(tmp_path), "--methods", "linear_probe", "--seeds", "1", "--shots_per_class", "3"]
    )
    assert saved.stat().st_mtime_ns == written_at


def test_shots_per_class_is_checked_before_any_training():
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--shots_per_class", "8,x"])
    args = benchmark.parse_args(["--shots_per_class", "4,8", "--methods", "setfit,linear_probe"])
    assert args.shots_list == [4, 8] and args.method_list == ["setfit", "linear_probe"]


def test_time_ratios_divide_by_the_peer_with_the_same_lora_targets():
    def row(seconds: float) -> dict:
        return {"step_seconds": seconds, "train_seconds": 10 * seconds, "eval_rows_per_second": 1 / seconds}

    runs = {
        "peft_lora_seq_cls:head_lr=5e-2:targets=all": {0: row(4.0)},
        "peft_lora_seq_cls:head_lr=5e-2": {0: row(2.0)},
        "labeltok:head_lr=5e-2": {0: row(2.2)},
        "labeltok:head_lr=5e-2:targets=all": {0: row(4.4)},
        "labeltok:targets=attention": {0: row(3.0)},  # no peer with these targets: any peer, the first listed
    }
    peers = benchmark.add_peer_ratios(runs)
    assert peers["labeltok:head_lr=5e-2"] == "peft_lora_seq_cls:head_lr=5e-2"
    assert peers["labeltok:head_lr=5e-2:targets=all"] == "peft_lora_seq_cls:head_lr=5e-2:targets=all"
    assert runs["labeltok:head_lr=5e-2"][0]["step_time_ratio"] == pytest.approx(1.1)
    assert runs["labeltok:head_lr=5e-2:targets=all"][0]["step_time_ratio"] == pytest.approx(1.1)
    assert peers["labeltok:targets=attention"] == "peft_lora_seq_cls:head_lr=5e-2:targets=all"
    assert benchmark.matching_peer("peft_lora_seq_cls", runs) == "peft_lora_seq_cls:head_lr=5e-2"
    runs["peft_lora_seq_cls"] = {0: row(1.0)}  # the plain peer goes first among peers with the same targets
    assert benchmark.matching_peer("labeltok", runs) == "peft_lora_seq_cls"
