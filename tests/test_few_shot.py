"""The few-shot sampler of the benchmark (recipes/benchmarks/few_shot.py) and the SetFit peer.

The sampler tests are pure Python (no model); the SetFit tests load the real all-MiniLM-L6-v2 and are skipped only
when setfit is not installed.
"""

from __future__ import annotations

from collections import Counter

import pytest

from recipes.benchmarks.few_shot import few_shot_train, parse_shots, sample_shots, shot_counts

NAMES = ["business", "sport", "tech", "politics"]
# Unequal class sizes, interleaved, so a sampler that takes "the first N rows" or "N rows overall" is caught.
SINGLE = [index % 4 if index % 7 else 0 for index in range(120)]


def test_single_label_takes_exactly_n_rows_of_every_class_deterministically():
    for shots in (1, 4, 8):
        chosen = sample_shots(SINGLE, NAMES, shots, seed=0, multi_label=False)
        assert Counter(SINGLE[index] for index in chosen) == dict.fromkeys(range(len(NAMES)), shots)
        assert len(set(chosen)) == len(chosen) == shots * len(NAMES)
        assert chosen == sample_shots(list(SINGLE), list(NAMES), shots, seed=0, multi_label=False)
    # Another seed draws another sample; the rows are not simply the first N of each class.
    assert sample_shots(SINGLE, NAMES, 8, seed=1, multi_label=False) != sample_shots(SINGLE, NAMES, 8, 0, False)
    first_rows = sorted(index for label in range(4) for index in [i for i, y in enumerate(SINGLE) if y == label][:8])
    assert sample_shots(SINGLE, NAMES, 8, seed=0, multi_label=False) != first_rows


def test_single_label_samples_are_nested_across_shots_and_per_class():
    small = sample_shots(SINGLE, NAMES, 4, seed=3, multi_label=False)
    large = sample_shots(SINGLE, NAMES, 16, seed=3, multi_label=False)
    assert set(small) < set(large)
    # A class's rows do not depend on the other classes: merge class 3 into class 2 and class 0's sample is unchanged.
    merged = [label if label != 3 else 2 for label in SINGLE]
    class0 = {i for i in large if SINGLE[i] == 0}
    assert class0 == {i for i in sample_shots(merged, NAMES[:3], 16, seed=3, multi_label=False) if merged[i] == 0}


def test_a_class_with_too_few_rows_is_named_with_the_fix():
    rows = [0] * 10 + [1] * 3
    with pytest.raises(ValueError, match=r"'sport' has only 3 train row\(s\).*at most 3"):
        sample_shots(rows, ["business", "sport"], 4, seed=0, multi_label=False)
    with pytest.raises(ValueError, match="at least 1"):
        sample_shots(rows, ["business", "sport"], 0, seed=0, multi_label=False)


def test_multi_label_counts_a_row_for_each_of_its_labels():
    # Label "a" is rare (2 rows); one of its rows also carries "b". With 2 shots, both "a" rows are needed, which
    # already gives "b" one row: only one more "b" row may be added (3 rows, not 4).
    rows = [[0, 1], [0], [1], [1], [1], [1]]
    chosen = sample_shots(rows, ["a", "b"], 2, seed=0, multi_label=True)
    assert {0, 1} <= set(chosen)
    assert len(chosen) == 3
    assert shot_counts(rows, 2, chosen, multi_label=True) == [2, 2]


def test_multi_label_visits_the_rarest_label_first():
    # Both rows of the rare label also carry the common one: taking them first satisfies both labels with 2 rows.
    # Visiting the common label first would spend 2 rows on it and then still need both rare rows.
    rows = [[0]] * 10 + [[0, 1], [0, 1]]
    chosen = sample_shots(rows, ["common", "rare"], 2, seed=0, multi_label=True)
    assert chosen == [10, 11]
    assert shot_counts(rows, 2, chosen, multi_label=True) == [2, 2]


def test_multi_label_gives_every_label_at_least_n_rows_deterministically():
    names = [f"l{k}" for k in range(6)]
    # Rows carry 1-3 labels; label frequencies differ widely.
    rows = [sorted({index % 6, (index * 7) % 5, (index // 3) % 2}) for index in range(200)]
    for shots in (2, 5):
        chosen = sample_shots(rows, names, shots, seed=0, multi_label=True)
        counts = shot_counts(rows, len(names), chosen, multi_label=True)
        assert min(counts) >= shots
        rarest = min(range(6), key=lambda k: (sum(k in row for row in rows), names[k]))
        assert counts[rarest] == shots  # visited first: exactly N
        assert len(chosen) <= shots * len(names)  # each label adds at most N rows
        assert chosen == sample_shots(rows, names, shots, seed=0, multi_label=True)
    assert sample_shots(rows, names, 5, seed=1, multi_label=True) != sample_shots(rows, names, 5, 0, True)


def test_few_shot_train_samples_the_train_split_and_keeps_the_test_split_whole():
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=NAMES)})
    train = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(120)], "label": SINGLE}, features=features)
    test = datasets.Dataset.from_dict({"text": ["x", "y", "z"], "label": [0, 1, 3]}, features=features)
    splits = few_shot_train(datasets.DatasetDict(train=train, test=test), NAMES, False, 5, seed=0)
    assert isinstance(splits, datasets.DatasetDict)
    assert Counter(splits["train"]["label"]) == dict.fromkeys(range(4), 5)
    assert splits["test"]["text"] == ["x", "y", "z"]


def test_parse_shots():
    assert parse_shots("4,8, 16") == [4, 8, 16]
    assert parse_shots(None) == []
    with pytest.raises(ValueError, match="comma-separated integers"):
        parse_shots("8;16")
    with pytest.raises(ValueError, match="at least 1"):
        parse_shots("0,8")


# --------------------------------------------------------------------------------------------------- SetFit


def _setfit():
    return pytest.importorskip("setfit", reason='setfit is not installed (pip install -e ".[benchmark]")')


@pytest.mark.integration
def test_setfit_scores_map_head_columns_to_class_ids():
    """A class absent from the training rows scores -inf; the argmax of the scores is SetFit's own prediction."""
    import numpy as np

    setfit = _setfit()
    from recipes.benchmarks.benchmark_common import minilm_path
    from recipes.benchmarks.benchmark_setfit import setfit_scores

    model = setfit.SetFitModel.from_pretrained(minilm_path(), local_files_only=True)
    texts = ["the match ended in a draw", "shares fell sharply", "the striker scored twice", "profits rose"]
    model.model_head.fit(model.encode(texts), [2, 0, 2, 0])  # class 1 never seen
    scores = setfit_scores(model, texts, num_labels=3, multi_label=False)
    assert scores.shape == (4, 3)
    assert np.isneginf(scores[:, 1]).all()
    assert scores.argmax(axis=1).tolist() == [int(label) for label in model.predict(texts)]


@pytest.mark.integration
def test_setfit_runs_in_the_benchmark_with_few_shots(tmp_path):
    import json

    _setfit()
    from recipes.benchmarks import benchmark

    flags = ["--dataset", "bbc_news", "--per_label", "6", "--max_length", "32", "--in_process", "--seeds", "0"]
    benchmark.main(
        [*flags, "--methods", "setfit:iterations=1", "--shots_per_class", "2", "--output_dir", str(tmp_path)]
    )
    result = json.loads((tmp_path / "bbc_news" / "shots2" / "results.json").read_text())
    row = result["runs"]["setfit:iterations=1"]["0"]
    assert row["train_rows"] == 10 and row["min_label_rows"] == row["max_label_rows"] == 2
    assert 0.0 <= row["macro_f1"] <= 1.0
    assert row["trainable_params"] > 22_000_000  # the whole body trains, plus the head
    assert row["adapter_bytes"] > 80_000_000  # and the whole body is saved
    assert result["data"]["test_rows"] == 6  # the test split is not sampled


# --------------------------------------------------------------------------------------------------- renderer


def _fake_result(dataset: str, shots: int, runs: dict[str, list[dict]]) -> dict:
    from recipes.benchmarks.benchmark_common import summarize_runs

    environment = {"date": "d", "machine": "m", "python": "3", "versions": {}, "git_commit": "abc", "preset": None}
    return {
        "dataset": dataset,
        "shots_per_class": shots,
        "data": {
            "num_labels": 5,
            "multi_label": False,
            "test_rows": 445,
            "full_train_rows": 1780,
            "train_rows": 5 * shots,
        },
        "command": f"python -m recipes.benchmarks.benchmark --shots_per_class {shots}",
        "settings": {"seeds": [0, 1], "epochs": 20, "batch_size": 32, "max_length": 128},
        "environment": environment,
        "summary": {spec: summarize_runs(rows) for spec, rows in runs.items()},
    }


def test_the_few_shot_renderer_tables_every_shots_and_draws_the_plot(tmp_path):
    import json

    from recipes.benchmarks.make_few_shot_md import render

    runs = {
        8: {
            "labeltok:head_lr=5e-2": [
                {"macro_f1": 0.5, "train_time_ratio": 1.5},
                {"macro_f1": 0.7, "train_time_ratio": 1.7},
            ],
            "setfit": [{"macro_f1": 0.8, "trainable_params": 22715141, "adapter_bytes": 91586959}] * 2,
        },
        16: {"labeltok:head_lr=5e-2": [{"macro_f1": 0.9, "train_time_ratio": 1.2}] * 2},
    }
    for shots, per_method in runs.items():
        folder = tmp_path / "results" / "bbc_news" / f"shots{shots}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(_fake_result("bbc_news", shots, per_method)))
    text = render(tmp_path / "results", tmp_path / "docs" / "few_shot.md")
    assert (tmp_path / "docs" / "few_shot.png").stat().st_size > 0
    header, _, first, second = [line for line in text.splitlines() if line.startswith("|")][:4]
    columns = header.strip("| ").split(" | ")
    assert columns[3:] == [
        "macro-F1, 8 shots",
        "macro-F1, 16 shots",
        "train time vs LoRA, 8 shots",
        "train time vs LoRA, 16 shots",
    ]
    setfit = dict(zip(columns, first.strip("| ").split(" | "), strict=True))  # the few-shot anchor comes first
    assert setfit["method"] == "`setfit`" and setfit["saved size"] == "91.6 MB" and setfit["macro-F1, 16 shots"] == "–"
    ours = dict(zip(columns, second.strip("| ").split(" | "), strict=True))
    assert ours["macro-F1, 8 shots"] == "0.600 (0.500–0.700)" and ours["macro-F1, 16 shots"] == "0.900 (0.900–0.900)"
    assert ours["train time vs LoRA, 8 shots"] == "1.60x (1.50–1.70)"


def test_the_few_shot_renderer_imports_no_torch():
    import subprocess
    import sys
    from pathlib import Path

    probe = "import sys, recipes.benchmarks.make_few_shot_md; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root, check=True)
    assert result.stdout.strip() == "False"
