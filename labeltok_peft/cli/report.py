"""A human-readable evaluation report: per-label scores, confusion matrix, tuned thresholds, markdown and PNG plots.

matplotlib is imported only when plots are written; without it the markdown report is still written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..decoding import probabilities_from_logits, resolve_thresholds
from ..metrics import classification_metrics, predictions_from_logits

logger = logging.getLogger(__name__)

THRESHOLD_GRID = tuple(round(0.05 * step, 2) for step in range(1, 20))  # 0.05, 0.10, ..., 0.95
_MAX_CONFUSION_PLOT_LABELS = 60


@dataclass
class SplitReport:
    """Evaluation of one split.

    Attributes:
        split: split name (`validation`, `test`).
        metrics: accuracy, macro/micro F1 (multi-label: subset accuracy) at the thresholds used.
        per_label: one dict per label with `label`, `precision`, `recall`, `f1`, `support`.
        confusion_matrix: `[num_labels, num_labels]` counts, rows true and columns predicted (single-label only).
        thresholds: per-label thresholds used (multi-label only).
        metrics_at_half: multi-label metrics at threshold 0.5, when `thresholds` differ from 0.5.
    """

    split: str
    metrics: dict[str, float]
    per_label: list[dict]
    confusion_matrix: list[list[int]] | None = None
    thresholds: list[float] | None = None
    metrics_at_half: dict[str, float] | None = None


def _binary_labels(labels: np.ndarray) -> np.ndarray:
    return (np.asarray(labels, dtype=np.float64) >= 0.5).astype(np.int64)


def tune_thresholds(logits: np.ndarray, labels: np.ndarray, grid: Sequence[float] = THRESHOLD_GRID) -> list[float]:
    """Per-label probability thresholds that maximise each label's F1 (multi-label).

    Ties go to the threshold closest to 0.5, and a label without positives keeps 0.5, so thresholds do not drift
    where the data says nothing.

    Args:
        logits: `[num_rows, num_labels]` logits (usually of the validation split).
        labels: `[num_rows, num_labels]` multi-hot targets.
        grid: candidate thresholds.

    Returns:
        One threshold per label.
    """
    probabilities = probabilities_from_logits(logits, multi_label=True)
    targets = _binary_labels(labels)
    ordered = sorted(grid, key=lambda t: (abs(t - 0.5), t))
    thresholds = []
    for column in range(targets.shape[1]):
        truth = targets[:, column]
        if truth.sum() == 0:
            thresholds.append(0.5)
            continue
        best, best_f1 = 0.5, -1.0
        for threshold in ordered:
            predicted = probabilities[:, column] >= threshold
            true_positives = float((predicted & (truth == 1)).sum())
            f1 = 2 * true_positives / (predicted.sum() + truth.sum())
            if f1 > best_f1 + 1e-12:
                best, best_f1 = threshold, f1
        thresholds.append(float(best))
    return thresholds


def build_split_report(
    split: str,
    logits: np.ndarray,
    labels: np.ndarray,
    label_names: list[str],
    multi_label: bool,
    thresholds: Sequence[float] | None = None,
) -> SplitReport:
    """Scores one split.

    Args:
        split: the split's name.
        logits: `[num_rows, num_labels]` logits.
        labels: `[num_rows]` class ids or `[num_rows, num_labels]` multi-hot targets.
        label_names: label names in logit order.
        multi_label: whether the task is multi-label.
        thresholds: multi-label per-label thresholds (default 0.5 each).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    label_ids = list(range(len(label_names)))
    if multi_label:
        thresholds = resolve_thresholds(thresholds, label_names, source="thresholds")
        metrics = classification_metrics(logits, labels, True, thresholds)
        at_half = classification_metrics(logits, labels, True, 0.5) if any(t != 0.5 for t in thresholds) else None
        truth, predicted = _binary_labels(labels), predictions_from_logits(logits, True, thresholds)
        scores = precision_recall_fscore_support(truth, predicted, average=None, zero_division=0)
        matrix = None
    else:
        thresholds, at_half = None, None
        metrics = classification_metrics(logits, labels, False)
        truth, predicted = np.asarray(labels), predictions_from_logits(logits, False)
        scores = precision_recall_fscore_support(truth, predicted, labels=label_ids, average=None, zero_division=0)
        matrix = confusion_matrix(truth, predicted, labels=label_ids).tolist()
    per_label = [
        {"label": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(label_names, *scores, strict=True)
    ]
    return SplitReport(split, metrics, per_label, matrix, thresholds, at_half)


def _markdown(report: SplitReport, plots: list[str]) -> list[str]:
    lines = [f"## {report.split}", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in report.metrics.items()]
    if report.metrics_at_half is not None:
        lines += ["", "Multi-label metrics above use the per-label thresholds below; at 0.5 for every label:", ""]
        lines += [f"- {name}: {value:.4f}" for name, value in report.metrics_at_half.items()]
    header = "| label | precision | recall | F1 | support |" + (" threshold |" if report.thresholds else "")
    lines += ["", header, "|---|---|---|---|---|" + ("---|" if report.thresholds else "")]
    for index, row in enumerate(report.per_label):
        line = f"| {row['label']} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |"
        if report.thresholds:
            line += f" {report.thresholds[index]:.2f} |"
        lines.append(line)
    if report.confusion_matrix is not None and len(report.per_label) <= 20:
        names = [row["label"] for row in report.per_label]
        lines += ["", "Confusion matrix (rows: true label, columns: predicted):", ""]
        lines += ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [
            f"| {name} | " + " | ".join(map(str, row)) + " |"
            for name, row in zip(names, report.confusion_matrix, strict=True)
        ]
    lines += [""] + [f"![{Path(plot).stem}]({Path(plot).name})" for plot in plots] + [""]
    return lines


def _plot_f1(report: SplitReport, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = sorted(report.per_label, key=lambda row: row["f1"])
    figure, axes = plt.subplots(figsize=(7, max(2.5, 0.28 * len(rows) + 1)))
    axes.barh([row["label"] for row in rows], [row["f1"] for row in rows], color="tab:blue")
    axes.set_xlim(0, 1)
    axes.set_xlabel("F1")
    axes.set_title(f"Per-label F1 ({report.split})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_confusion(report: SplitReport, path: Path) -> None:
    import matplotlib.pyplot as plt

    names = [row["label"] for row in report.per_label]
    matrix = np.asarray(report.confusion_matrix)
    size = max(4.0, 0.45 * len(names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if len(names) <= 20:
        for (row, column), count in np.ndenumerate(matrix):
            color = "white" if count > matrix.max() / 2 else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=color, fontsize=8)
    axes.set_title(f"Confusion matrix ({report.split})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_plots(report: SplitReport, output_dir: str | Path) -> list[str]:
    """Writes `<split>_f1.png` and (single-label) `<split>_confusion.png`; returns the paths ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        logger.warning("matplotlib is not installed (pip install matplotlib): the report has no plots.")
        return []
    output_dir = Path(output_dir)
    paths = [output_dir / f"{report.split}_f1.png"]
    _plot_f1(report, paths[0])
    if report.confusion_matrix is not None and len(report.per_label) <= _MAX_CONFUSION_PLOT_LABELS:
        paths.append(output_dir / f"{report.split}_confusion.png")
        _plot_confusion(report, paths[-1])
    return [str(path) for path in paths]


def write_report(
    reports: list[SplitReport], output_dir: str | Path, title: str, notes: Sequence[str] = (), plots: bool = True
) -> Path:
    """Writes `report.md` (tables, plots linked) and `report.json` (the same numbers) into `output_dir`.

    Args:
        reports: one `SplitReport` per evaluated split.
        output_dir: the folder.
        title: the report's heading.
        notes: extra markdown lines under the heading (model, data, run time).
        plots: also write PNG plots.

    Returns:
        The path of `report.md`.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", *notes, ""]
    for report in reports:
        lines += _markdown(report, write_plots(report, output_dir) if plots else [])
    path = output_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    (output_dir / "report.json").write_text(json.dumps([asdict(r) for r in reports], indent=2), encoding="utf-8")
    return path
