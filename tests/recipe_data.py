"""Tiny saved backbones and small labelled files for the recipe tests."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import torch
from tiny_models import TINY, VOCAB_SIZE, make_tokenizer
from transformers import BertConfig, BertModel

# Words that mark each class; every text mixes two marker words with filler, so a tiny model can learn the task.
CLASS_WORDS = {
    "business": ["market", "shares", "bank", "profit", "economy", "growth", "tax"],
    "politics": ["election", "vote", "minister", "party", "government"],
    "sport": ["match", "goal", "team", "won", "lost", "player", "coach"],
    "tech": ["phone", "software", "computer", "internet", "chip", "network", "game"],
}
FILLER = ["the", "a", "star", "show"]
LABELS = sorted(CLASS_WORDS)


def save_tiny_backbone(folder: Path) -> Path:
    """Saves a 2-layer random BERT and its word-level tokenizer as a `from_pretrained` folder.

    No dropout, so one process and two processes see the same computation; a wider initialisation than BERT's
    0.02 makes the random backbone's outputs depend more on the text.
    """
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=64,
        initializer_range=0.2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **TINY,
    )
    BertModel(config).save_pretrained(folder)
    make_tokenizer(encoder=True).save_pretrained(folder)
    return folder


def make_rows(per_label: int, seed: int, multi_label: bool = False) -> list[dict]:
    """`per_label` rows per class; multi-label rows sometimes carry a second class."""
    rng = random.Random(seed)
    rows = []
    for label in LABELS:
        for _ in range(per_label):
            words = rng.sample(CLASS_WORDS[label], 2) + rng.sample(FILLER, 2)
            row_labels = [label]
            if multi_label and rng.random() < 0.4:
                other = rng.choice([name for name in LABELS if name != label])
                words += rng.sample(CLASS_WORDS[other], 2)
                row_labels.append(other)
            rng.shuffle(words)
            rows.append({"text": " ".join(words), "label": sorted(row_labels) if multi_label else label})
    rng.shuffle(rows)
    return rows


def write_rows(rows: list[dict], path: Path) -> Path:
    """Writes rows as CSV, JSON (a list), JSONL or parquet, by extension."""
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif suffix == ".parquet":
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)
    else:
        raise ValueError(suffix)
    return path
