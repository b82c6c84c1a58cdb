"""The on-disk adapter format: writing and reading (with every check) adapter folders, safetensors + JSON only.

A saved adapter is a folder (the format is described in docs/adapter_format.md):

```
labeltok_config.json            format version, library version, LabelTokConfig, backbone fingerprint, training info
labeltok_adapter.safetensors    label_table [num_labels, hidden], head.score.weight [1, hidden], head.score.bias [1],
                                head.label_bias [num_labels] (only with per_label_bias)
lora/adapter_config.json        only for adapters with LoRA: PEFT's own format, so
lora/adapter_model.safetensors  `peft.PeftModel.from_pretrained(backbone, "<folder>/lora")` loads it alone
README.md                       generated model card
```

`read_adapter` reads and checks every file without touching any model; `adapters.load_adapter` then checks the
adapter against the live backbone before the model changes, so a bad folder raises a clear error and leaves the
model as it was.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import LoraConfig
from peft.utils import CONFIG_NAME as LORA_CONFIG_NAME
from peft.utils import SAFETENSORS_WEIGHTS_NAME as LORA_WEIGHTS_NAME
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import LabelTokConfig
from .model_card import ModelCardInfo, model_card_text

if TYPE_CHECKING:
    from .model import LabelTokModel

FORMAT_NAME = "labeltok-peft-adapter"
FORMAT_VERSION = 1
CONFIG_NAME = "labeltok_config.json"
WEIGHTS_NAME = "labeltok_adapter.safetensors"
LORA_SUBFOLDER = "lora"
MODEL_CARD_NAME = "README.md"


class AdapterFormatError(ValueError):
    """A saved adapter's files exist but their content is invalid (corrupt, truncated, inconsistent)."""


class BackboneMismatchError(ValueError):
    """An adapter was saved on a backbone of another architecture than the one it is loaded onto."""


@dataclass(frozen=True)
class BackboneFingerprint:
    """What identifies the backbone an adapter was trained on.

    Attributes:
        model_type: `config.model_type` (for example `"bert"`).
        hidden_size: width of the hidden states; the label table is `[num_labels, hidden_size]`.
        num_layers: number of transformer layers, when the config says.
        vocab_size: rows of the input embedding matrix.
        name_or_path: `config._name_or_path` (hub id or local folder), when known.
    """

    model_type: str
    hidden_size: int
    num_layers: int | None
    vocab_size: int | None
    name_or_path: str | None

    @classmethod
    def of(cls, model: LabelTokModel) -> BackboneFingerprint:
        base = model.base_model
        config = base.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        layers = next(
            (
                getattr(text_config, key)
                for key in ("num_hidden_layers", "n_layer", "num_layers")
                if hasattr(text_config, key)
            ),
            None,
        )
        return cls(
            model_type=model.backbone_info.model_type,
            hidden_size=model.backbone_info.hidden_size,
            num_layers=None if layers is None else int(layers),
            vocab_size=int(base.get_input_embeddings().weight.shape[0]),
            name_or_path=getattr(config, "_name_or_path", None) or None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__dataclass_fields__}

    def describe(self) -> str:
        layers = f", {self.num_layers} layers" if self.num_layers is not None else ""
        name = f" ({self.name_or_path})" if self.name_or_path else ""
        return f"{self.model_type!r} backbone with hidden size {self.hidden_size}{layers}{name}"


@dataclass
class AdapterPayload:
    """Everything one adapter consists of, detached from any model (read from disk or captured from a model).

    Attributes:
        config: the adapter's `LabelTokConfig`.
        backbone: fingerprint of the backbone it belongs to.
        tensors: `label_table` `[num_labels, hidden]`, `head.score.weight` `[1, hidden]`, `head.score.bias` `[1]` and,
            with `per_label_bias`, `head.label_bias` `[num_labels]`; fp32, on the CPU when read from disk.
        lora_config: PEFT `LoraConfig`, or `None` for an adapter without LoRA.
        lora_state: LoRA tensors in PEFT's saved form (keys `base_model.model.<module>.lora_A.weight`, ...).
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
    return shapes


# --------------------------------------------------------------------------------------------------- model -> disk


def library_version() -> str:
    from . import __version__

    return __version__


def _config_document(payload: AdapterPayload, adapter_name: str) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": payload.library_version,
        "adapter_name": adapter_name,
        "labeltok_config": payload.config.to_dict(),
        "backbone": payload.backbone.to_dict(),
        "lora_subfolder": LORA_SUBFOLDER if payload.lora_config is not None else None,
        "training": payload.training,
    }


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


def _write_lora(payload: AdapterPayload, folder: Path) -> None:
    folder.mkdir()
    lora_config = copy.deepcopy(payload.lora_config)
    lora_config.inference_mode = True
    lora_config.base_model_name_or_path = payload.backbone.name_or_path
    lora_config.save_pretrained(str(folder))
    state = {key: value.detach().cpu().contiguous() for key, value in payload.lora_state.items()}
    save_file(state, folder / LORA_WEIGHTS_NAME, metadata={"format": "pt"})


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


def write_adapter(
    payload: AdapterPayload,
    save_directory: str | os.PathLike,
    adapter_name: str,
    model_card: bool = True,
    repo_id: str | None = None,
) -> Path:
    """Writes an adapter folder; files are first written to a temporary folder, then moved into place."""
    target = Path(save_directory)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} is a file; save_pretrained needs a folder path.")
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".labeltok-save-", dir=target))
    try:
        tensors = {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in payload.tensors.items()}
        save_file(tensors, staging / WEIGHTS_NAME, metadata={"format": "pt"})
        if payload.lora_config is not None:
            _write_lora(payload, staging / LORA_SUBFOLDER)
        if model_card:
            card = model_card_text(_card_info(payload, adapter_name, repo_id))
            (staging / MODEL_CARD_NAME).write_text(card, encoding="utf-8")
        document = json.dumps(_config_document(payload, adapter_name), indent=2, sort_keys=True, default=_json_value)
        (staging / CONFIG_NAME).write_text(document + "\n", encoding="utf-8")
        # An earlier save's config goes first, so that a crash while files are replaced leaves no folder whose config
        # describes weights it does not have; a stale lora/ folder must not outlive a save without LoRA.
        (target / CONFIG_NAME).unlink(missing_ok=True)
        if (target / LORA_SUBFOLDER).is_dir():
            shutil.rmtree(target / LORA_SUBFOLDER)
        # The config goes last: a folder with a config always has the weights it describes.
        for name in (WEIGHTS_NAME, LORA_SUBFOLDER, MODEL_CARD_NAME, CONFIG_NAME):
            if (staging / name).exists():
                os.replace(staging / name, target / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------------- disk -> payload


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AdapterFormatError(f"{path} is not valid JSON ({error}); save the adapter again.") from None
    if not isinstance(document, dict):
        raise AdapterFormatError(f"{path} must hold a JSON object; got {type(document).__name__}.")
    return document


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"Missing {path.name} in {path.parent}: the adapter folder is incomplete.")
    try:
        return load_file(path, device="cpu")
    except SafetensorError as error:
        raise AdapterFormatError(
            f"{path} is truncated or not a safetensors file ({error}); save or download the adapter again."
        ) from None


def _require_folder(directory: Path) -> None:
    if not directory.exists():
        raise FileNotFoundError(f"No adapter folder at {directory}; pass the folder written by save_pretrained.")
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
    if not isinstance(version, int) or version > FORMAT_VERSION:
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


def _read_lora(directory: Path) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    folder = directory / LORA_SUBFOLDER
    config_path = folder / LORA_CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(
            f"Missing {LORA_SUBFOLDER}/{LORA_CONFIG_NAME} in {directory}: {CONFIG_NAME} says the adapter has LoRA "
            "weights, but the folder is incomplete."
        )
    document = _read_json(config_path)
    if str(document.get("peft_type", "")).upper() != "LORA":
        raise AdapterFormatError(f"{config_path} is not a LoRA config (peft_type={document.get('peft_type')!r}).")
    try:
        lora_config = LoraConfig.from_pretrained(str(folder))
    except (TypeError, ValueError) as error:
        raise AdapterFormatError(f"{config_path} is not a valid LoRA config: {error}") from None
    state = _read_safetensors(folder / LORA_WEIGHTS_NAME)
    if not state or not all(key.startswith("base_model.model.") for key in state):
        raise AdapterFormatError(
            f"{folder / LORA_WEIGHTS_NAME} does not hold PEFT LoRA tensors (keys 'base_model.model.<module>...')."
        )
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


def read_adapter(directory: str | os.PathLike) -> AdapterPayload:
    """Reads and checks a saved adapter folder without touching any model.

    Raises:
        FileNotFoundError: the folder or one of its files is missing.
        AdapterFormatError: a file is corrupt or truncated, or files disagree (tensor shapes, label count).
    """
    directory = Path(directory)
    _require_folder(directory)
    config_path = directory / CONFIG_NAME
    document = _read_json(config_path)
    config, backbone = _parse_config_document(document, config_path)
    tensors = _read_safetensors(directory / WEIGHTS_NAME)
    _check_tensors(tensors, config, backbone.hidden_size, directory / WEIGHTS_NAME)
    lora_config, lora_state = None, None
    if config.lora is not None:
        lora_config, lora_state = _read_lora(directory)
    elif (directory / LORA_SUBFOLDER).exists():
        raise AdapterFormatError(
            f"{directory} has a {LORA_SUBFOLDER}/ folder but its {CONFIG_NAME} has lora=None; the files do not belong "
            "together: save the adapter again."
        )
    training = _training_of(document.get("training"))
    return AdapterPayload(
        config, backbone, tensors, lora_config, lora_state, training, document.get("library_version", "")
    )
