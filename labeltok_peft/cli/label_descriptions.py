"""`--label_descriptions`: a short text per label, read from a JSON/YAML mapping or a label,description CSV.

With `label_init='label_text'` a label's row starts as the mean embedding of its description instead of its name,
which helps where names say little (`noun.artifact`, `LABEL_3`). The descriptions are stored in the adapter's config
and shown in its model card.

Rules (every error names the file and the labels concerned):
- every described label must be a label of the task (a typo would otherwise be silently unused);
- every description is a non-empty string; a label listed twice (CSV) is an error;
- labels the file leaves out are allowed: they start from their name (`_` read as a space), and a warning names them.
  To make a label start from its name, leave it out rather than giving an empty description.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger("labeltok_peft")

FLAG = "--label_descriptions"
SUFFIXES = (".json", ".yaml", ".yml", ".csv")


class LabelDescriptionsError(ValueError):
    """A `--label_descriptions` file or mapping that cannot be used as it is."""


def _read_mapping(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise LabelDescriptionsError(f"{FLAG} {str(path)!r} is not valid JSON: {error}.") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise LabelDescriptionsError(f"{FLAG} {str(path)!r} is not valid YAML: {error}") from None


def _read_csv(path: Path) -> dict[str, Any]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in ("label", "description") if name not in columns]
        if missing:
            raise LabelDescriptionsError(
                f"{FLAG} {str(path)!r} needs a header row with the columns 'label' and 'description'; missing "
                f"{missing} (found {columns})."
            )
        reader.fieldnames = columns
        descriptions: dict[str, Any] = {}
        repeated: list[str] = []
        for line, row in enumerate(reader, start=2):
            label = (row.get("label") or "").strip()
            if not label:
                raise LabelDescriptionsError(f"{FLAG} {str(path)!r} line {line} has no label; fill it in or delete it.")
            if label in descriptions:
                repeated.append(label)
            descriptions[label] = row.get("description")
    if repeated:
        raise LabelDescriptionsError(
            f"{FLAG} {str(path)!r} lists the label(s) {sorted(set(repeated))} more than once; give each label one row."
        )
    return descriptions


def read_label_descriptions(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, str]:
    """Reads label descriptions from a file (.json/.yaml/.yml mapping or .csv with label,description) or a mapping.

    Args:
        source: a file path, or a mapping (an inline `label_descriptions:` mapping in a `--config` YAML file).

    Returns:
        `{label: description}` with string keys and non-empty string values (surrounding spaces removed).

    Raises:
        LabelDescriptionsError: a missing or unreadable file, another format, a non-mapping, keys that YAML read as
            booleans or null, empty or non-string descriptions, labels listed twice.
    """
    if isinstance(source, Mapping):
        where, raw = f"{FLAG} (the mapping in --config)", source
    else:
        path = Path(source)
        where = f"{FLAG} {str(path)!r}"
        if path.suffix.lower() not in SUFFIXES:
            raise LabelDescriptionsError(
                f"{where}: unknown file type {path.suffix!r}; use a .json or .yaml mapping (label: description) or a "
                ".csv with the columns label,description."
            )
        if not path.is_file():
            raise LabelDescriptionsError(f"{where} does not exist; give the path of a .json, .yaml or .csv file.")
        try:
            raw = _read_csv(path) if path.suffix.lower() == ".csv" else _read_mapping(path)
        except (OSError, UnicodeDecodeError) as error:
            raise LabelDescriptionsError(f"Could not read {where}: {error}") from None
    if not isinstance(raw, Mapping):
        raise LabelDescriptionsError(
            f"{where} must map each label to its description (label: description); got a {type(raw).__name__}."
        )
    descriptions: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(key, bool) or key is None:
            raise LabelDescriptionsError(
                f"{where}: the key {key!r} was read as {type(key).__name__} (YAML reads yes/no/on/off/true/null so); "
                "quote the label name."
            )
        label = str(key)
        if not isinstance(value, str) or not value.strip():
            raise LabelDescriptionsError(
                f"{where}: the description of label {label!r} is empty or not text ({value!r}); write a short text, "
                "or leave the label out to initialise it from its name."
            )
        descriptions[label] = value.strip()
    if not descriptions:
        raise LabelDescriptionsError(f"{where} describes no label; describe at least one, or drop the flag.")
    return descriptions


def check_label_descriptions(descriptions: dict[str, str], labels: list[str], label_init: str) -> dict[str, str]:
    """Checks descriptions against the task's label set; returns them in label order.

    Raises:
        LabelDescriptionsError: descriptions of labels the task does not have (named, with the known labels).
    """
    unknown = sorted(set(descriptions) - set(labels))
    if unknown:
        raise LabelDescriptionsError(
            f"{FLAG} describes label(s) {unknown} that the task does not have; its labels are {labels}. Fix the "
            "names (they must match the label column exactly) or remove those entries."
        )
    undescribed = [label for label in labels if label not in descriptions]
    if undescribed:
        logger.warning("%s: no description for %s; they start from their names.", FLAG, undescribed)
    if label_init != "label_text":
        logger.warning(
            "%s: label_init=%r does not read descriptions; they are stored in the adapter and shown in its model "
            "card only (use --label_init label_text to start label rows from them).",
            FLAG,
            label_init,
        )
    return {label: descriptions[label] for label in labels if label in descriptions}
