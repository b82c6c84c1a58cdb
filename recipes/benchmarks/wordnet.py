"""WordNet 3.0 noun glosses as three classification tasks, built from Debian's `wordnet-base` files.

- `load_wordnet_lexnames`: gloss -> its lexicographer class (26 classes such as `animal`, `artifact`, `feeling`;
  single-label).
- `load_wordnet_hypernyms`: gloss -> the set of its hypernym ancestors at a fixed depth below `entity`
  (multi-label, 61 labels; see `hypernym_ancestors_at_depth` for the construction).
- `load_wordnet_ancestors`: gloss -> every hypernym synset up to two edges above it (multi-label, 1,632 labels;
  see `hypernym_ancestors_within`): the many-label task.

Both are deterministic: rows are sampled and split by the SHA-256 of the seed and the synset offset (no RNG, so
the result does not depend on library versions), and the built `datasets.DatasetDict` is cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .wordnet_db import (
    NOUN_LEXNAMES,
    WORDNET_APT_PACKAGE,
    NounSynset,
    hypernym_ancestors_at_depth,
    hypernym_ancestors_within,
    parse_data_line,
    read_lexnames,
    read_noun_synsets,
    wordnet_directory,
)

__all__ = [
    "NOUN_LEXNAMES",
    "WORDNET_APT_PACKAGE",
    "NounSynset",
    "default_cache_dir",
    "hypernym_ancestors_at_depth",
    "hypernym_ancestors_within",
    "load_wordnet_ancestors",
    "load_wordnet_hypernyms",
    "load_wordnet_lexnames",
    "parse_data_line",
    "read_lexnames",
    "read_noun_synsets",
    "wordnet_directory",
]

# Bump when the construction changes, so stale caches are not reused.
_BUILD_VERSION = 1


def _order_key(seed: int, offset: str) -> str:
    """A fixed pseudo-random order: SHA-256 of the seed and the synset offset."""
    return hashlib.sha256(f"{seed}:{offset}".encode()).hexdigest()


def _stratified_split(
    offsets: list[str], strata: list[Any], test_size: float, seed: int
) -> tuple[list[int], list[int]]:
    """Row indices of train and test: in each stratum, the first `round(n * test_size)` rows in hash order test."""
    by_stratum: dict[Any, list[int]] = {}
    for index, stratum in enumerate(strata):
        by_stratum.setdefault(stratum, []).append(index)
    train, test = [], []
    for rows in by_stratum.values():
        rows.sort(key=lambda index: _order_key(seed + 1, offsets[index]))
        held_out = round(len(rows) * test_size)
        test.extend(rows[:held_out])
        train.extend(rows[held_out:])
    return sorted(train), sorted(test)


def _check_arguments(test_size: float, per_label: int | None) -> None:
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must lie strictly between 0 and 1; got {test_size!r}.")
    if per_label is not None and (not isinstance(per_label, int) or per_label < 2):
        raise ValueError(f"per_label must be an integer of at least 2 (or None for all rows); got {per_label!r}.")


def _check_min_examples(min_examples: int) -> None:
    if not isinstance(min_examples, int) or min_examples < 2:
        raise ValueError(f"min_examples must be an integer of at least 2; got {min_examples!r}.")


def default_cache_dir() -> Path:
    """`$LABELTOK_PEFT_CACHE`, else `~/.cache/labeltok_peft`."""
    return Path(os.environ.get("LABELTOK_PEFT_CACHE") or Path.home() / ".cache" / "labeltok_peft")


def _cached(name: str, parameters: dict[str, Any], source: Path, cache_dir: str | os.PathLike | None, build: Callable):
    """Loads `name` built with `parameters` from the cache, or builds, saves and returns it.

    The cache key covers the parameters, the builder version and the size of `data.noun`, so another WordNet or
    another construction never reuses a stale copy. `cache_dir=False` turns the cache off.
    """
    import datasets

    if cache_dir is False:
        return build()
    key_source = json.dumps(
        {**parameters, "version": _BUILD_VERSION, "data_noun_bytes": source.stat().st_size}, sort_keys=True
    )
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    folder = Path(cache_dir or default_cache_dir()).expanduser() / "wordnet" / f"{name}-{key}"
    if (folder / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(folder))
    splits = build()
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary folder and rename, so an interrupted build never leaves a half-written cache entry.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        splits.save_to_disk(str(staging))
        (staging / "build_parameters.json").write_text(key_source)
        try:
            staging.rename(folder)
        except OSError:  # another process built it first
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return datasets.load_from_disk(str(folder)) if folder.is_dir() else splits


def _unique_gloss_rows(synsets: Iterable[NounSynset], key: Callable[[NounSynset], Any]) -> list[NounSynset]:
    """Drops synsets whose gloss text also belongs to another synset, so no text is in both train and test."""
    synsets = list(synsets)
    counts = Counter(synset.gloss for synset in synsets)
    return [synset for synset in synsets if counts[synset.gloss] == 1 and key(synset) is not None]


def load_wordnet_lexnames(
    per_label: int | None = 200,
    test_size: float = 0.2,
    seed: int = 42,
    wordnet_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None | bool = None,
):
    """Noun glosses -> lexicographer class (26 classes), a stratified sample split into train and test.

    Text is the synset's gloss (definition and any quoted examples). The label is the lexicographer file without its
    `noun.` prefix (`act`, `animal`, ..., `Tops`). Classes are very uneven in WordNet (`noun.Tops` has 51 synsets,
    `noun.artifact` 11,587), so each class keeps at most `per_label` synsets, picked in a fixed hash order; smaller
    classes keep all of theirs. Glosses shared by several synsets are dropped.

    Args:
        per_label: at most this many synsets per class; `None` keeps all 82k nouns.
        test_size: fraction of each class held out for testing.
        seed: seed of the sample and of the split.
        wordnet_dir: folder with `data.noun` (default: see `wordnet_directory`).
        cache_dir: cache root (default `default_cache_dir()`); `False` builds without caching.

    Returns:
        `datasets.DatasetDict` with `train` and `test`; columns `text` (str), `label` (ClassLabel of 26 names) and
        `synset` (the data.noun offset).
    """
    _check_arguments(test_size, per_label)
    directory = wordnet_directory(wordnet_dir)

    def build():
        import datasets

        lexnames = read_lexnames(directory)
        names = [lexnames[number].removeprefix("noun.") for number in sorted(lexnames)]
        name_of = {number: lexnames[number].removeprefix("noun.") for number in lexnames}
        rows = _unique_gloss_rows(read_noun_synsets(directory).values(), lambda s: name_of.get(s.lexname_id))
        by_label: dict[str, list[NounSynset]] = {}
        for synset in rows:
            by_label.setdefault(name_of[synset.lexname_id], []).append(synset)
        chosen = []
        for label in names:
            members = sorted(by_label.get(label, []), key=lambda s: _order_key(seed, s.offset))
            chosen.extend(members if per_label is None else members[:per_label])
        chosen.sort(key=lambda s: s.offset)
        offsets = [s.offset for s in chosen]
        labels = [name_of[s.lexname_id] for s in chosen]
        train, test = _stratified_split(offsets, labels, test_size, seed)
        features = datasets.Features(
            {
                "text": datasets.Value("string"),
                "label": datasets.ClassLabel(names=names),
                "synset": datasets.Value("string"),
            }
        )
        table = {"text": [s.gloss for s in chosen], "label": labels, "synset": offsets}
        return datasets.DatasetDict(
            {
                split: datasets.Dataset.from_dict(
                    {key: [values[i] for i in rows] for key, values in table.items()}, features=features
                )
                for split, rows in (("train", train), ("test", test))
            }
        )

    parameters = {"per_label": per_label, "test_size": test_size, "seed": seed}
    return _cached("lexnames", parameters, directory / "data.noun", cache_dir, build)


def _label_names(offsets: list[str], synsets: dict[str, NounSynset]) -> list[str]:
    """Readable, unique label names: the synset's first lemma, qualified where two labels share it.

    The qualifier is the synset's second lemma, else its first hypernym's first lemma (`writing (written
    material)`, `information (knowledge)`). Names that still collide take the hypernym's lemma instead, then the
    first 4, then 10 words of the definition (`motion (the act of changing)`), and only then the offset, so that every name
    stays readable text for the label-text initialisation.
    """

    def parent_lemma(offset: str) -> str | None:
        hypernyms = synsets[offset].hypernyms
        return synsets[hypernyms[0]].lemmas[0] if hypernyms else None

    def definition_start(offset: str, words: int) -> str:
        definition = synsets[offset].gloss.split(";")[0].split('"')[0]
        return " ".join(definition.split()[:words]) or offset

    first = Counter(synsets[offset].lemmas[0] for offset in offsets)
    names = []
    for offset in offsets:
        lemmas = synsets[offset].lemmas
        if first[lemmas[0]] == 1:
            names.append(lemmas[0])
        else:
            qualifier = lemmas[1] if len(lemmas) > 1 else parent_lemma(offset) or offset
            names.append(f"{lemmas[0]} ({qualifier})")
    qualifiers = (parent_lemma, lambda o: definition_start(o, 4), lambda o: definition_start(o, 10), lambda o: o)
    for qualify in qualifiers:
        counts = Counter(names)
        names = [
            f"{synsets[offset].lemmas[0]} ({qualify(offset) or offset})" if counts[name] > 1 else name
            for name, offset in zip(names, offsets, strict=True)
        ]
    return names


def _multi_label_splits(
    synsets: dict[str, NounSynset],
    all_labels: dict[str, set[str]],
    min_examples: int,
    per_label: int | None,
    test_size: float,
    seed: int,
    too_few: str,
):
    """Keeps frequent labels, samples rarest label first, splits stratified on each row's rarest label.

    Args:
        synsets: output of `read_noun_synsets`.
        all_labels: offset -> label offsets of every labelled synset.
        min_examples: keep labels carried by at least this many synsets of `all_labels`.
        per_label: sample size per label (rows sampled for other labels count); `None` keeps every row.
        test_size: fraction of each stratum held out for testing.
        seed: seed of the sample and the split.
        too_few: the fix to name when fewer than two labels are kept.

    Returns:
        `datasets.DatasetDict` with `train` and `test`; columns `text`, `label` (sorted label ids,
        `Sequence(ClassLabel)`) and `synset`.
    """
    import datasets

    counts = Counter(label for labels in all_labels.values() for label in labels)
    kept = sorted(label for label, count in counts.items() if count >= min_examples)
    if len(kept) < 2:
        raise ValueError(f"Only {len(kept)} labels have {min_examples} or more synsets; {too_few}.")
    kept_set = set(kept)
    rows = _unique_gloss_rows(
        (synsets[offset] for offset in sorted(all_labels)),
        lambda s: (all_labels[s.offset] & kept_set) or None,
    )
    row_labels = {s.offset: all_labels[s.offset] & kept_set for s in rows}
    rarest_first = sorted(kept, key=lambda label: (counts[label], label))
    if per_label is None:
        chosen = {s.offset for s in rows}
    else:
        carriers: dict[str, list[str]] = {label: [] for label in kept}
        for offset, labels in row_labels.items():
            for label in labels:
                carriers[label].append(offset)
        chosen: set[str] = set()
        for label in rarest_first:
            have = sum(1 for offset in carriers[label] if offset in chosen)
            for offset in sorted(carriers[label], key=lambda o: _order_key(seed, o)):
                if have >= per_label:
                    break
                if offset not in chosen:
                    chosen.add(offset)
                    have += 1
    offsets = sorted(chosen)
    label_index = {label: index for index, label in enumerate(kept)}
    label_ids = [sorted(label_index[label] for label in row_labels[offset]) for offset in offsets]
    rank = {label: position for position, label in enumerate(rarest_first)}
    strata = [min(row_labels[offset], key=rank.__getitem__) for offset in offsets]
    train, test = _stratified_split(offsets, strata, test_size, seed)
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.Sequence(datasets.ClassLabel(names=_label_names(kept, synsets))),
            "synset": datasets.Value("string"),
        }
    )
    table = {"text": [synsets[o].gloss for o in offsets], "label": label_ids, "synset": offsets}
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {key: [values[i] for i in indices] for key, values in table.items()}, features=features
            )
            for split, indices in (("train", train), ("test", test))
        }
    )


def load_wordnet_hypernyms(
    depth: int = 4,
    min_examples: int = 200,
    per_label: int | None = 100,
    test_size: float = 0.2,
    seed: int = 42,
    wordnet_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None | bool = None,
):
    """Noun glosses -> the set of their hypernym ancestors at a fixed depth (multi-label).

    Construction:
    1. Labels of every noun synset: its ancestors `depth` edges below `entity` over all hypernym paths
       (`hypernym_ancestors_at_depth`). With the defaults, about one synset in five has two or more labels.
    2. Keep labels that at least `min_examples` synsets of all of WordNet carry (defaults: 61 labels such as
       `organism`, `artifact`, `causal agent`); synsets left without a kept label are dropped, as are glosses shared
       by several synsets.
    3. Sample: labels from rarest to most frequent each take synsets that carry them, in a fixed hash order, until
       the label has `per_label` sampled rows (rows sampled for other labels count). Frequent labels end up with more
       rows through co-occurrence; each label has at least `min(per_label, its count)`.
    4. Split: stratified on each row's rarest label, `test_size` of each stratum to test.

    Args:
        depth: depth of the label synsets below the root `entity` (depth 0).
        min_examples: keep labels carried by at least this many synsets (before sampling).
        per_label: sample size per label (see step 3); `None` keeps every labelled synset.
        test_size: fraction held out for testing.
        seed: seed of the sample and the split.
        wordnet_dir: folder with `data.noun` (default: see `wordnet_directory`).
        cache_dir: cache root (default `default_cache_dir()`); `False` builds without caching.

    Returns:
        `datasets.DatasetDict` with `train` and `test`; columns `text` (str), `label` (a list of label ids,
        `Sequence(ClassLabel)` whose names are the label synsets' lemmas) and `synset`. Turn `label` into a
        `[num_labels]` multi-hot vector for BCE training (`labeltok_peft.encode_label` does this).
    """
    _check_arguments(test_size, per_label)
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer (the root 'entity' is depth 0); got {depth!r}.")
    _check_min_examples(min_examples)
    directory = wordnet_directory(wordnet_dir)

    def build():
        synsets = read_noun_synsets(directory)
        too_few = f"lower min_examples or pick a depth between 2 and 8 (got depth={depth})"
        all_labels = hypernym_ancestors_at_depth(synsets, depth)
        return _multi_label_splits(synsets, all_labels, min_examples, per_label, test_size, seed, too_few)

    parameters = {
        "depth": depth,
        "min_examples": min_examples,
        "per_label": per_label,
        "test_size": test_size,
        "seed": seed,
    }
    return _cached("hypernyms", parameters, directory / "data.noun", cache_dir, build)


def load_wordnet_ancestors(
    levels: int = 2,
    min_examples: int = 20,
    per_label: int | None = 20,
    test_size: float = 0.2,
    seed: int = 42,
    wordnet_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None | bool = None,
):
    """Noun glosses -> every hypernym synset up to `levels` edges above them: a multi-label task with 1,632 labels.

    Construction (defaults in brackets):
    1. Labels of every noun synset: its hypernyms at most `levels` [2] edges above it over all hypernym paths, i.e.
       its direct hypernyms and theirs (`hypernym_ancestors_within`).
    2. Drop glosses shared by several synsets, then keep labels that at least `min_examples` [20] of the remaining
       synsets carry: about 1,600 labels, from `entity` and `person` to narrow ones such as `dog` or `violin`;
       synsets left without a kept label are dropped.
    3. Sample: labels from rarest to most frequent each take synsets that carry them, in a fixed hash order, until
       the label has `per_label` [20] sampled rows (rows sampled for other labels count).
    4. Split: stratified on each row's rarest label, `test_size` [0.2] of each stratum to test.

    Label names are the label synsets' first lemmas, qualified where two labels share one (`_label_names`), so the
    label-text initialisation has words to start from. Score it with `labeltok_peft.metrics.ranking_metrics`
    (precision@1, precision@5) beside micro- and macro-F1.

    Args:
        levels: how many edges above the synset labels reach (1: the direct hypernyms only).
        min_examples: keep labels carried by at least this many synsets (before sampling).
        per_label: sample size per label (see step 3); `None` keeps every labelled synset (about 67k).
        test_size: fraction held out for testing.
        seed: seed of the sample and the split.
        wordnet_dir: folder with `data.noun` (default: see `wordnet_directory`).
        cache_dir: cache root (default `default_cache_dir()`); `False` builds without caching.

    Returns:
        `datasets.DatasetDict` with `train` and `test`; columns `text` (str), `label` (sorted label ids,
        `Sequence(ClassLabel)`) and `synset`.
    """
    _check_arguments(test_size, per_label)
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be a positive integer (1: direct hypernyms only); got {levels!r}.")
    _check_min_examples(min_examples)
    directory = wordnet_directory(wordnet_dir)

    def build():
        synsets = read_noun_synsets(directory)
        # Counted on the rows that can be used (glosses of one synset only), so every kept label has its examples.
        gloss_count = Counter(synset.gloss for synset in synsets.values())
        all_labels = {
            offset: labels
            for offset, labels in hypernym_ancestors_within(synsets, levels).items()
            if gloss_count[synsets[offset].gloss] == 1
        }
        too_few = f"lower min_examples or raise levels (got levels={levels})"
        return _multi_label_splits(synsets, all_labels, min_examples, per_label, test_size, seed, too_few)

    parameters = {
        "levels": levels,
        "min_examples": min_examples,
        "per_label": per_label,
        "test_size": test_size,
        "seed": seed,
    }
    return _cached("ancestors", parameters, directory / "data.noun", cache_dir, build)
