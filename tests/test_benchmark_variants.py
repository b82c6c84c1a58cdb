"""The step-time benchmarks time the configurations their rows name (`label_layers` in particular).

The config's default `label_layers="auto"` puts labels in the last layer only on encoders, so a benchmark variant
that leaves it unset on a BERT shape times late injection under another name.
"""

from __future__ import annotations

import argparse

import pytest
import torch

from recipes.benchmarks import benchmark_label_pass, benchmark_scaling


def expected_late_layers(name: str) -> int | None:
    """'late n=2' -> 2, 'late1' -> 1, anything else (labels in every layer) -> None."""
    if "n=" in name:
        return int(name.split("n=")[1])
    return 1 if name.startswith("late1") else None


@pytest.mark.parametrize("name", sorted(benchmark_label_pass.VARIANTS))
def test_label_pass_benchmark_variants_run_the_layers_they_name(name):
    options = dict(benchmark_label_pass.VARIANTS[name])
    model = benchmark_label_pass.label_tokens(8, splice=options.pop("splice", False), **options)
    assert model._late_layers(model.labeltok_config) == expected_late_layers(name)


@pytest.mark.parametrize("mode", sorted(set(benchmark_scaling.MODES) - {"full"}))
def test_scaling_benchmark_modes_run_the_layers_they_name(mode):
    args = argparse.Namespace(chunk=None, lora_r=4)
    shape = benchmark_scaling.SHAPES["minilm"]
    model = benchmark_scaling.build_labeltok(shape, 8, mode, args, torch.device("cpu"), torch.float32)
    assert model._late_layers(model.labeltok_config) == expected_late_layers(mode)
    assert model._splice_isolated_labels == mode.endswith("_splice")


def test_label_attention_benchmark_variants_agree(tmp_path):
    """The three kernels the attention benchmark times compute the same attention (on the CPU: flex attention has
    no CPU backward, so only its forward is compared there)."""
    import json

    from recipes.benchmarks import benchmark_label_attention

    output = tmp_path / "rows.json"
    benchmark_label_attention.main(
        ["--device", "cpu", "--ks", "5,40", "--batch", "3", "--seq_len", "9", "--heads", "2", "--head_dim", "8"]
        + ["--warmup", "1", "--repeats", "1", "--output", str(output)]
    )
    rows = json.loads(output.read_text())["rows"]
    assert {(row["num_labels"], row["variant"]) for row in rows} == {
        (k, v) for k in (5, 40) for v in ("ours", "sdpa_bool", "flex_lse")
    }
    for row in rows:
        assert row["max_abs_difference_fp32"] < 1e-5, row
