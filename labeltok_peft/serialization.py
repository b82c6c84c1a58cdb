"""The on-disk adapter format: writing and reading (with every check) adapter folders, safetensors + JSON only.

A saved adapter is a folder (the format is described in docs/adapter_format.md):

```
labeltok_config.json            format version, library version, LabelTokConfig, backbone fingerprint, training info,
                                sha256 of every other file it describes and of its own content
labeltok_adapter.safetensors    label_table [num_labels, hidden], head.score.weight [1, hidden], head.score.bias [1],
                                head.label_bias [num_labels] (only with per_label_bias)
                                head.tied_scale [] (only with head_type="tied")
                                head.label_weight [num_labels, hidden] (only with head_type="residual")
                                head.cosine_scale [] (only with head_type="cosine")
lora/adapter_config.json        only for adapters with LoRA: PEFT's own format, so
lora/adapter_model.safetensors  `peft.PeftModel.from_pretrained(backbone, "<folder>/lora")` loads it alone
README.md                       generated model card (free to edit: not part of the integrity check)
```

`read_adapter` reads every file once, checks it (hash, structure, shapes, finite values) and never touches a model;
the model then checks the adapter against the live backbone before it changes. `write_adapter` writes a complete
folder beside the target and switches it in (`folder_swap`). This module imports no model: the backbone
fingerprint is built from the backbone and its `BackboneInfo`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .config import HeadType, LabelTokConfig
from .constants import (
    ADAPTER_FOLDER_ENTRIES,
    CONFIG_NAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    LORA_CONFIG_NAME,
    LORA_SUBFOLDER,
    LORA_WEIGHTS_NAME,
    MODEL_CARD_NAME,
    WEIGHTS_NAME,
)
from .fingerprint import BackboneFingerprint, BackboneMismatchError, check_fingerprint
from .folder_swap import ASIDE_MARK, replace_folder, write_file
from .model_card import ModelCardInfo, model_card_text

logger = logging.getLogger(__name__)

__all__ = [
    "AdapterFormatError",
    "AdapterPayload",
    "BackboneFingerprint",
    "BackboneMismatchError",
    "check_fingerprint",
    "read_adapter",
    "write_adapter",
]

LORA_CONFIG_PATH = f"{LORA_SUBFOLDER}/{LORA_CONFIG_NAME}"
LORA_WEIGHTS_PATH = f"{LORA_SUBFOLDER}/{LORA_WEIGHTS_NAME}"


class AdapterFormatError(ValueError):
    """A saved adapter's files exist but their content is invalid (corrupt, truncated, edited, inconsistent)."""


@dataclass
class AdapterPayload:
    """Everything one adapter consists of, detached from any model (read from disk or captured from a model).

    Attributes:
        config: the adapter's `LabelTokConfig`.
        backbone: fingerprint of the backbone it belongs to.
        tensors: `label_table` `[num_labels, hidden]`, `head.score.weight` `[1, hidden]`, `head.score.bias` `[1]` and,
            with `per_label_bias`, `head.label_bias` `[num_labels]`, with the tied head, `head.tied_scale` `[]`; fp32, on the CPU when read from disk.
        lora_config: PEFT `LoraConfig`, or `None` for an adapter without LoRA.
        lora_state: LoRA tensors in PEFT's saved form (keys `base_model.model.<module>.lora_A.weight`, ...); `None`
            for an adapter without LoRA, and for a new adapter whose LoRA weights PEFT initialises.
        training: optional `dataset_name` and `metrics` shown in the model card.
        library_version: labeltok-peft version that wrote the adapter.
    """

    config: LabelTokConfig
    backbone: BackboneFingerprint
    tensors: dict[str, torch.Tensor]
    lora_config: LoraConfig | None = None
    lora_state: dict[str, torch.Tensor] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    library_version: str = ""


def expected_tensor_shapes(config: LabelTokConfig, hidden_size: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors in `labeltok_adapter.safetensors` for an adapter with this config."""
    shapes = {
        "label_table": (config.num_labels, hidden_size),
        "head.score.weight": (1, hidden_size),
        "head.score.bias": (1,),
    }
    if config.per_label_bias:
        shapes["head.label_bias"] = (config.num_labels,)
    if config.head_type == HeadType.TIED:
        shapes["head.tied_scale"] = ()
    if config.head_type == HeadType.RESIDUAL:
        shapes["head.label_weight"] = (config.num_labels, hidden_size)
    if config.head_type == HeadType.COSINE:
        shapes["head.cosine_scale"] = ()
    return shapes


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Raises `AdapterFormatError` naming the first tensor that holds NaN or infinity."""
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise AdapterFormatError(
                f"Tensor {key!r} of {source} holds {bad} NaN or infinite value(s); the adapter is broken (training "
                "diverged?): retrain it, or use an earlier checkpoint."
            )


def training_section(dataset_name: str | None, metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The `training` entries (dataset name, metrics) that `save_pretrained` records for the model card."""
    section: dict[str, Any] = {}
    if dataset_name is not None:
        section["dataset_name"] = str(dataset_name)
    if metrics is not None:
        clean: dict[str, float | None] = {}
        for name, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"Metric {name!r} must be a number; got {value!r}.") from None
            clean[str(name)] = number if math.isfinite(number) else None  # JSON has no NaN/inf: stored as null
        section["metrics"] = clean
    return section


def library_version() -> str:
    from . import __version__

    return __version__


# --------------------------------------------------------------------------------------------------- model -> disk


def _json_value(value: Any) -> Any:
    """JSON for the few non-JSON values a config may hold (sets of LoRA target modules, tuples)."""
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(
        f"Cannot store {value!r} ({type(value).__name__}) in {CONFIG_NAME}: adapter configs must hold JSON values "
        "(strings, numbers, lists, dicts)."
    )


def _canonical_sha256(document: dict[str, Any]) -> str:
    """sha256 of a config document without its `integrity` section, in one canonical JSON form."""
    content = {key: value for key, value in document.items() if key != "integrity"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_json_value)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _card_info(payload: AdapterPayload, adapter_name: str, repo_id: str | None) -> ModelCardInfo:
    lora = payload.lora_config
    return ModelCardInfo(
        adapter_name=adapter_name,
        config=payload.config,
        base_model=payload.backbone.name_or_path,
        hidden_size=payload.backbone.hidden_size,
        library_version=payload.library_version,
        dataset_name=payload.training.get("dataset_name"),
        metrics=dict(payload.training.get("metrics") or {}),
        lora_rank=None if lora is None else int(lora.r),
        lora_target_modules=[] if lora is None or lora.target_modules is None else sorted(lora.target_modules),
        repo_id=repo_id,
    )


def _write_files(
    payload: AdapterPayload, folder: Path, adapter_name: str, model_card: bool, repo_id: str | None
) -> None:
    """Fills an empty folder with the adapter's files; the config, with the hashes of the others, comes last."""
    hashes: dict[str, str] = {}

    def put(relative: str, data: bytes) -> None:
        write_file(folder / relative, data)
        hashes[relative] = hashlib.sha256(data).hexdigest()

    tensors = {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in payload.tensors.items()}
    put(WEIGHTS_NAME, save_safetensors(tensors, metadata={"format": "pt"}))
    if payload.lora_config is not None:
        (folder / LORA_SUBFOLDER).mkdir()
        lora_config = copy.deepcopy(payload.lora_config)
        lora_config.inference_mode = True
        lora_config.base_model_name_or_path = payload.backbone.name_or_path
        lora_config.save_pretrained(str(folder / LORA_SUBFOLDER))  # PEFT's own writer, so PEFT reads it back alone
        hashes[LORA_CONFIG_PATH] = hashlib.sha256((folder / LORA_CONFIG_PATH).read_bytes()).hexdigest()
        state = {key: value.detach().cpu().contiguous() for key, value in payload.lora_state.items()}
        put(LORA_WEIGHTS_PATH, save_safetensors(state, metadata={"format": "pt"}))
    if model_card:
        write_file(
            folder / MODEL_CARD_NAME, model_card_text(_card_info(payload, adapter_name, repo_id)).encode("utf-8")
        )
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": payload.library_version,
        "adapter_name": adapter_name,
        "labeltok_config": payload.config.to_dict(),
        "backbone": payload.backbone.to_dict(),
        "lora_subfolder": LORA_SUBFOLDER if payload.lora_config is not None else None,
        "training": payload.training,
    }
    document["integrity"] = {"algorithm": "sha256", "files": hashes, "config": _canonical_sha256(document)}
    text = json.dumps(document, indent=2, sort_keys=True, default=_json_value) + "\n"
    write_file(folder / CONFIG_NAME, text.encode("utf-8"))


def write_adapter(
    payload: AdapterPayload,
    save_directory: str | os.PathLike,
    adapter_name: str,
    model_card: bool = True,
    repo_id: str | None = None,
) -> Path:
    """Writes an adapter folder crash-safely: a complete new folder is written beside it and switched in.

    Raises:
        ValueError: an empty path (it would mean the current folder).
        AdapterFormatError: a tensor holds NaN or infinity (nothing is written).
        folder_swap.FolderWriteError: writing failed (for example a full disk); the folder is left as it was.
    """
    if not str(save_directory).strip():
        raise ValueError(
            "save_pretrained needs a folder path; got an empty string (give a folder such as 'my_adapter')."
        )
    check_finite(payload.tensors, f"adapter {adapter_name!r}")
    check_finite(payload.lora_state or {}, f"the LoRA weights of adapter {adapter_name!r}")
    return replace_folder(
        save_directory,
        lambda folder: _write_files(payload, folder, adapter_name, model_card, repo_id),
        owned_names=ADAPTER_FOLDER_ENTRIES,
    )


# --------------------------------------------------------------------------------------------------- disk -> payload


class _FolderReader:
    """Reads the files of one adapter folder once each, refusing symlinks that leave `root` and checking hashes."""

    def __init__(self, directory: Path, root: Path | None) -> None:
        self.directory = directory
        self.root = (root or directory).resolve()
        self.hashes: dict[str, str] | None = None

    def path(self, relative: str) -> Path:
        return self.directory / relative

    def read(self, relative: str, missing_hint: str = "the adapter folder is incomplete") -> bytes:
        path = self.path(relative)
        if not path.is_file():
            raise FileNotFoundError(f"Missing {relative} in {self.directory}: {missing_hint}.")
        real = path.resolve()
        if not real.is_relative_to(self.root):
            raise AdapterFormatError(
                f"{path} is a symlink to {real}, outside the adapter folder; refusing to follow it. Copy the real "
                "file into the folder instead."
            )
        data = real.read_bytes()
        if self.hashes is not None:
            expected = self.hashes.get(relative)
            if expected is None or hashlib.sha256(data).hexdigest() != expected:
                raise AdapterFormatError(
                    f"{path} does not match the sha256 recorded in {CONFIG_NAME} when the adapter was saved: it was "
                    "edited, or the folder mixes files of two saves. Save the adapter again (or download it again)."
                )
        return data


def _parse_json(data: bytes, path: Path) -> dict[str, Any]:
    try:
        document = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AdapterFormatError(f"{path} is not valid JSON ({error}); save the adapter again.") from None
    if not isinstance(document, dict):
        raise AdapterFormatError(f"{path} must hold a JSON object; got {type(document).__name__}.")
    return document


def _parse_safetensors(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise AdapterFormatError(
            f"{path} is truncated or not a safetensors file ({error}); save or download the adapter again."
        ) from None


def _require_folder(directory: Path) -> None:
    if not directory.exists():
        hint = ""
        parent = directory.parent
        if parent.is_dir() and any(p.name.startswith(f".{directory.name}{ASIDE_MARK}") for p in parent.iterdir()):
            hint = " A save there was interrupted: saving again restores the previous adapter (kept beside it)."
        raise FileNotFoundError(f"No adapter folder at {directory}; pass the folder written by save_pretrained.{hint}")
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is a file; pass the folder written by save_pretrained.")
    if not (directory / CONFIG_NAME).is_file():
        hint = ""
        if (directory / LORA_CONFIG_NAME).is_file():
            hint = " It holds a plain PEFT adapter; load that with peft.PeftModel.from_pretrained."
        raise FileNotFoundError(f"Missing {CONFIG_NAME} in {directory}: it is not a saved label-token adapter.{hint}")


def _parse_config_document(document: dict[str, Any], path: Path) -> tuple[LabelTokConfig, BackboneFingerprint]:
    if document.get("format") != FORMAT_NAME:
        raise AdapterFormatError(f"{path} is not a labeltok-peft adapter config (format={document.get('format')!r}).")
    version = document.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise AdapterFormatError(
            f"{path} has format_version {version!r}; saved adapters have a positive whole number there: the file "
            "was edited or is not an adapter config. Save the adapter again."
        )
    if version > FORMAT_VERSION:
        raise AdapterFormatError(
            f"{path} has format version {version!r} (written by labeltok-peft {document.get('library_version')}); "
            f"this labeltok-peft {library_version()} reads version {FORMAT_VERSION} or older: upgrade labeltok-peft."
        )
    missing = [key for key in ("labeltok_config", "backbone") if not isinstance(document.get(key), dict)]
    if missing:
        raise AdapterFormatError(f"{path} lacks the {missing} section(s); save the adapter again.")
    try:
        config = LabelTokConfig.from_dict(document["labeltok_config"])
        backbone = BackboneFingerprint(**document["backbone"])
    except (TypeError, ValueError) as error:
        raise AdapterFormatError(f"{path} holds an invalid adapter description: {error}") from None
    if not isinstance(backbone.hidden_size, int) or not isinstance(backbone.model_type, str):
        raise AdapterFormatError(f"{path}: backbone.hidden_size and backbone.model_type are required.")
    return config, backbone


def _integrity_hashes(document: dict[str, Any], path: Path) -> dict[str, str] | None:
    """The recorded file hashes after checking the config's own hash; `None` for folders of format version 1."""
    if document["format_version"] < 2:
        return None
    section = document.get("integrity")
    files = section.get("files") if isinstance(section, dict) else None
    if not isinstance(files, dict) or section.get("algorithm") != "sha256":
        raise AdapterFormatError(f"{path} lacks its integrity section (sha256 of every file); save the adapter again.")
    if section.get("config") != _canonical_sha256(document):
        raise AdapterFormatError(
            f"{path} does not match the sha256 recorded in it when the adapter was saved: it was edited (labels "
            "reordered or renamed, settings changed) or comes from another save. Save the adapter again."
        )
    return {str(key): str(value) for key, value in files.items()}


def _check_tensors(tensors: dict[str, torch.Tensor], config: LabelTokConfig, hidden_size: int, path: Path) -> None:
    expected = expected_tensor_shapes(config, hidden_size)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise AdapterFormatError(
            f"{path} does not match its {CONFIG_NAME}: missing tensors {missing}, unexpected tensors {unexpected}."
        )
    rows = tensors["label_table"].shape[0]
    if rows != config.num_labels:
        raise AdapterFormatError(
            f"{CONFIG_NAME} lists {config.num_labels} labels but label_table in {path} has {rows} rows; the files do "
            "not belong together: save the adapter again."
        )
    for key, shape in expected.items():
        tensor = tensors[key]
        if not tensor.is_floating_point():
            raise AdapterFormatError(f"{path}: tensor {key!r} has dtype {tensor.dtype}; expected a floating type.")
        if tuple(tensor.shape) != shape:
            raise AdapterFormatError(
                f"{path}: tensor {key!r} has shape {list(tensor.shape)}, expected {list(shape)} "
                f"({config.num_labels} labels, hidden size {hidden_size} recorded in {CONFIG_NAME})."
            )
    check_finite(tensors, str(path))


def _read_lora(reader: _FolderReader) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    config_path = reader.path(LORA_CONFIG_PATH)
    hint = f"{CONFIG_NAME} says the adapter has LoRA weights, but the folder is incomplete"
    document = _parse_json(reader.read(LORA_CONFIG_PATH, hint), config_path)
    if str(document.get("peft_type", "")).upper() != "LORA":
        raise AdapterFormatError(f"{config_path} is not a LoRA config (peft_type={document.get('peft_type')!r}).")
    document.pop("runtime_config", None)  # runtime-only settings, as PEFT's own reader drops them
    try:
        lora_config = LoraConfig.from_peft_type(**LoraConfig.check_kwargs(**document))
    except (TypeError, ValueError, KeyError) as error:
        raise AdapterFormatError(f"{config_path} is not a valid LoRA config: {error}") from None
    weights_path = reader.path(LORA_WEIGHTS_PATH)
    state = _parse_safetensors(reader.read(LORA_WEIGHTS_PATH), weights_path)
    if not state or not all(key.startswith("base_model.model.") for key in state):
        raise AdapterFormatError(
            f"{weights_path} does not hold PEFT LoRA tensors (keys 'base_model.model.<module>...')."
        )
    check_finite(state, str(weights_path))
    return lora_config, state


def _training_of(section: Any) -> dict[str, Any]:
    """The optional `training` section, keeping only well-formed entries (it only feeds the model card)."""
    if not isinstance(section, dict):
        return {}
    training: dict[str, Any] = {}
    if isinstance(section.get("dataset_name"), str):
        training["dataset_name"] = section["dataset_name"]
    if isinstance(section.get("metrics"), dict):
        training["metrics"] = {
            str(name): value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            for name, value in section["metrics"].items()
        }
    return training


def read_adapter(directory: str | os.PathLike, root: str | os.PathLike | None = None) -> AdapterPayload:
    """Reads and checks a saved adapter folder without touching any model.

    Args:
        directory: the adapter folder.
        root: symlinks may point anywhere inside this folder (default: `directory`; a Hub cache snapshot links
            into its repository's `blobs/`).

    Raises:
        FileNotFoundError: the folder or one of its files is missing.
        AdapterFormatError: a file is corrupt, truncated, edited after saving, holds NaN/inf, is a symlink out of the
            folder, or files disagree (tensor shapes, label count).
    """
    directory = Path(directory)
    _require_folder(directory)
    reader = _FolderReader(directory, None if root is None else Path(root))
    config_path = reader.path(CONFIG_NAME)
    document = _parse_json(reader.read(CONFIG_NAME), config_path)
    config, backbone = _parse_config_document(document, config_path)
    reader.hashes = _integrity_hashes(document, config_path)
    weights_path = reader.path(WEIGHTS_NAME)
    tensors = _parse_safetensors(reader.read(WEIGHTS_NAME), weights_path)
    _check_tensors(tensors, config, backbone.hidden_size, weights_path)
    lora_config, lora_state = None, None
    if config.lora is not None:
        lora_config, lora_state = _read_lora(reader)
    elif (directory / LORA_SUBFOLDER).exists():
        raise AdapterFormatError(
            f"{directory} has a {LORA_SUBFOLDER}/ folder but its {CONFIG_NAME} has lora=None; the files do not belong "
            "together: save the adapter again."
        )
    training = _training_of(document.get("training"))
    return AdapterPayload(
        config, backbone, tensors, lora_config, lora_state, training, document.get("library_version", "")
    )
