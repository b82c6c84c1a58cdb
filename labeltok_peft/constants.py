"""Names every layer of the adapter lifecycle agrees on: the default adapter name, file names, the format version and
the rules for adapter names and Hub ids. Imports nothing from the package, so every other module can import it."""

from __future__ import annotations

import keyword
import re

DEFAULT_ADAPTER_NAME = "default"

# The saved folder (docs/adapter_format.md).
FORMAT_NAME = "labeltok-peft-adapter"
# 2 added the `integrity` section (sha256 of every file); folders of version 1 still load, without that check.
FORMAT_VERSION = 2
CONFIG_NAME = "labeltok_config.json"
WEIGHTS_NAME = "labeltok_adapter.safetensors"
LORA_SUBFOLDER = "lora"
# PEFT's own names inside lora/ (peft.utils.CONFIG_NAME, peft.utils.SAFETENSORS_WEIGHTS_NAME).
LORA_CONFIG_NAME = "adapter_config.json"
LORA_WEIGHTS_NAME = "adapter_model.safetensors"
MODEL_CARD_NAME = "README.md"

# The files a load reads (a Hub download fetches these and nothing else).
ADAPTER_FILES = (
    CONFIG_NAME,
    WEIGHTS_NAME,
    f"{LORA_SUBFOLDER}/{LORA_CONFIG_NAME}",
    f"{LORA_SUBFOLDER}/{LORA_WEIGHTS_NAME}",
    MODEL_CARD_NAME,
)

# What a save replaces in its folder: an entry of these names that the new save does not write (a `lora/` folder
# after a save without LoRA) is dropped. Everything else there (a model card kept with model_card=False, a
# trainer's checkpoints, metrics) survives the save.
ADAPTER_FOLDER_ENTRIES = (CONFIG_NAME, WEIGHTS_NAME, LORA_SUBFOLDER)

_ADAPTER_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


def validate_adapter_name(name: str) -> str:
    """Checks an adapter name; returns it unchanged.

    Adapter names become module keys (`label_tables.<name>`, PEFT's `lora_A.<name>`) and folder names, so they are
    letters, digits, `_` and `-` only, matched over the whole string (`"ok\\n"` is refused), never empty, and never
    an attribute of torch's containers (`to`, `keys`, `training`), a `__dunder__`-style name or a Python keyword.

    Raises:
        ValueError: naming the rejected name and the rule.
    """
    if not isinstance(name, str) or _ADAPTER_NAME_PATTERN.fullmatch(name) is None:
        raise ValueError(
            f"Invalid adapter name {name!r}: use letters, digits, '_' and '-' only (no path separators, dots, "
            "spaces or newlines, and not empty)."
        )
    if name.startswith("__") or keyword.iskeyword(name) or _is_container_attribute(name):
        raise ValueError(
            f"Invalid adapter name {name!r}: it is an attribute of the model's adapter containers (or a Python "
            "keyword or '__' name) and would clash with it; pick another name such as 'task_1'."
        )
    return name


def _is_container_attribute(name: str) -> bool:
    """Whether `name` is an attribute of torch's `ModuleDict`/`ParameterDict` (`to`, `keys`, `training`, ...)."""
    from torch import nn  # lazy: importing the constants stays free of torch

    return hasattr(nn.ModuleDict(), name) or hasattr(nn.ParameterDict(), name)


# Hub repository ids (`org/name` or `name`); local paths and free-form names are not.
_HUB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9._-]+)?")


def is_hub_id(name: str | None) -> bool:
    """Whether `name` looks like a Hub repository id (`org/name` or `name`) rather than a local path."""
    return (
        isinstance(name, str)
        and not name.startswith((".", "/", "~"))
        and ".." not in name
        and _HUB_ID_PATTERN.fullmatch(name) is not None
    )
