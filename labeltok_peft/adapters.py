"""Adapters on a live model: load (check, then attach), replace, delete, save, push, and adapter-only state dicts.

Every adapter owns a label table, a head and optionally a LoRA adapter of the same name inside PEFT; the backbone's
own weights exist once, whatever the number of adapters. Loading checks the files (`serialization.read_adapter`) and
the adapter against the live backbone before the model changes; if attaching still fails, what was added is removed
again (and a replaced adapter restored), so a failed load never leaves a half-loaded adapter behind.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn
from transformers.pytorch_utils import Conv1D

from .head import LabelHead
from .serialization import (
    AdapterFormatError,
    AdapterPayload,
    BackboneFingerprint,
    BackboneMismatchError,
    library_version,
    read_adapter,
    write_adapter,
)

if TYPE_CHECKING:
    from .model import LabelTokModel

logger = logging.getLogger(__name__)

# `base_model.model.<module path>.<part>[.weight]`, the key layout of PEFT's saved LoRA tensors.
_LORA_KEY = re.compile(
    r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(\.weight)?$"
)

# Names of the PEFT containers that hold one entry per adapter (LoRA layers, DoRA magnitudes, modules_to_save, ...).
_PEFT_CONTAINERS = ("lora_", "modules_to_save", "trainable_tokens")


# --------------------------------------------------------------------------------------------------- checks


def check_backbone(model: LabelTokModel, payload: AdapterPayload, source: str | os.PathLike) -> None:
    """Raises `BackboneMismatchError` if the adapter was saved on a backbone of another architecture.

    Model type, hidden size and layer count must match. Another vocabulary size or name only logs a warning: the
    label table does not depend on the vocabulary, and the same weights are often loaded from different paths.
    """
    saved, current = payload.backbone, BackboneFingerprint.of(model)
    hard = [
        (label, getattr(saved, key), getattr(current, key))
        for label, key in (("model type", "model_type"), ("hidden size", "hidden_size"), ("layer count", "num_layers"))
        if getattr(saved, key) is not None
        and getattr(current, key) is not None
        and getattr(saved, key) != getattr(current, key)
    ]
    if hard:
        differences = "; ".join(f"{label}: saved {old!r}, this backbone {new!r}" for label, old, new in hard)
        raise BackboneMismatchError(
            f"The adapter in {source} was saved on a {saved.describe()}, but this model's backbone is a "
            f"{current.describe()} ({differences}). Load it onto the backbone it was trained on."
        )
    if saved.vocab_size is not None and saved.vocab_size != current.vocab_size:
        logger.warning(
            "Adapter %s was saved on a backbone with %s tokens; this one has %s.",
            source,
            saved.vocab_size,
            current.vocab_size,
        )
    if saved.name_or_path and current.name_or_path and Path(saved.name_or_path).name != Path(current.name_or_path).name:
        logger.warning(
            "Adapter %s was saved on %r; loading it onto %r.", source, saved.name_or_path, current.name_or_path
        )


def _in_out_features(module: nn.Module) -> tuple[int, int] | None:
    if isinstance(module, nn.Linear):  # includes bitsandbytes' Linear4bit/Linear8bitLt
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):  # GPT-2 stores its weight as [in, out]
        return tuple(module.weight.shape)
    if isinstance(module, nn.Embedding):
        return module.num_embeddings, module.embedding_dim
    return None


def check_lora_tensors(model: LabelTokModel, payload: AdapterPayload, source: str | os.PathLike) -> None:
    """Checks that every saved LoRA tensor targets an existing module and fits its shape (`[r, in]`, `[out, r]`)."""
    if payload.lora_state is None:
        return
    base = model.base_model
    ranks: dict[str, dict[str, int]] = {}
    for key, tensor in payload.lora_state.items():
        match = _LORA_KEY.match(key)
        if match is None:
            continue
        path, part = match["module"], match["part"]
        try:
            module = base.get_submodule(path)
        except AttributeError:
            raise AdapterFormatError(
                f"LoRA tensor {key!r} in {source} targets module {path!r}, which this backbone does not have."
            ) from None
        if hasattr(module, "get_base_layer"):  # already wrapped by another adapter's LoRA
            module = module.get_base_layer()
        features = _in_out_features(module)
        if features is None or tensor.ndim != 2:
            continue
        in_features, out_features = features
        is_a = part in ("lora_A", "lora_embedding_A")
        rank, width = (tensor.shape[0], tensor.shape[1]) if is_a else (tensor.shape[1], tensor.shape[0])
        if width != (in_features if is_a else out_features):
            raise AdapterFormatError(
                f"LoRA tensor {key!r} in {source} has shape {list(tensor.shape)}, which does not fit module {path!r} "
                f"(in {in_features}, out {out_features}); the adapter was saved on another backbone."
            )
        ranks.setdefault(path, {})["A" if is_a else "B"] = rank
    for path, pair in ranks.items():
        if set(pair) != {"A", "B"} or pair["A"] != pair["B"]:
            raise AdapterFormatError(f"LoRA tensors of module {path!r} in {source} are incomplete or disagree: {pair}.")


# --------------------------------------------------------------------------------------------------- attach / detach


def _peft_names(model: LabelTokModel) -> set[str]:
    return set(model.backbone.peft_config) if isinstance(model.backbone, PeftModel) else set()


def _is_peft_tensor_of(key: str, adapter_names: set[str]) -> bool:
    """Whether a backbone key is a tensor of one of the named PEFT adapters.

    PEFT keeps per-adapter tensors in containers keyed by adapter name: `...query.lora_A.<name>.weight`,
    `...classifier.modules_to_save.<name>.weight`. The container is checked too, so that an adapter named like a
    backbone module (`encoder`) never claims the backbone's own weights.
    """
    parts = key.split(".")
    return any(
        part in adapter_names and container.startswith(_PEFT_CONTAINERS)
        for container, part in zip(parts, parts[1:], strict=False)
    )


def _cuda_devices(model: LabelTokModel) -> list[torch.device]:
    return sorted({p.device for p in model.base_model.parameters() if p.device.type == "cuda"}, key=str)


def _attach_lora(model: LabelTokModel, adapter_name: str, payload: AdapterPayload, is_trainable: bool) -> None:
    lora_config = copy.deepcopy(payload.lora_config)
    lora_config.inference_mode = not is_trainable
    # check_backbone already compared the saved backbone with this one; PEFT would warn about the name again.
    lora_config.base_model_name_or_path = model.base_model.__dict__.get("name_or_path") or None
    # PEFT initialises the new LoRA layers randomly before the saved tensors overwrite them; that throw-away init
    # must not move the global random state. (low_cpu_mem_usage=True would skip the init, but it leaves the LoRA
    # weights in the backbone's dtype instead of PEFT's usual fp32, so bf16 logits would change after a reload.)
    with torch.random.fork_rng(devices=_cuda_devices(model)):
        if isinstance(model.backbone, PeftModel):
            model.backbone.add_adapter(adapter_name, lora_config)
        else:
            model.backbone = get_peft_model(model.backbone, lora_config, adapter_name=adapter_name)
    result = set_peft_model_state_dict(model.backbone, payload.lora_state, adapter_name=adapter_name)
    missing = [key for key in result.missing_keys if "lora_" in key and _is_peft_tensor_of(key, {adapter_name})]
    if result.unexpected_keys or missing:
        raise AdapterFormatError(
            f"The LoRA tensors do not match the LoRA config of adapter {adapter_name!r}: unexpected "
            f"{result.unexpected_keys[:5]}, missing {missing[:5]}."
        )


def attach_adapter(model: LabelTokModel, adapter_name: str, payload: AdapterPayload, is_trainable: bool) -> None:
    """Adds a checked payload to the model under `adapter_name` (the active adapter does not change)."""
    device = model.base_model.get_input_embeddings().weight.device
    config = copy.deepcopy(payload.config)
    tensors = payload.tensors
    with torch.random.fork_rng(devices=[]):  # the head's throw-away init must not move the global random state
        head = LabelHead(model.backbone_info.hidden_size, config.num_labels, config.per_label_bias)
    head.load_state_dict(
        {key.removeprefix("head."): value for key, value in tensors.items() if key.startswith("head.")}
    )
    try:
        model.label_tables[adapter_name] = nn.Parameter(tensors["label_table"].to(device, torch.float32, copy=True))
        model.heads[adapter_name] = head.to(device)
        model.labeltok_configs[adapter_name] = config
        model.adapter_training_info[adapter_name] = copy.deepcopy(payload.training)
        if payload.lora_config is not None:
            _attach_lora(model, adapter_name, payload, is_trainable)
    except BaseException:
        detach_adapter(model, adapter_name)
        raise


def detach_adapter(model: LabelTokModel, adapter_name: str) -> None:
    """Removes whatever exists of an adapter; deleting the last LoRA adapter gives back the bare backbone."""
    if adapter_name in model.label_tables:
        del model.label_tables[adapter_name]
    if adapter_name in model.heads:
        del model.heads[adapter_name]
    model.labeltok_configs.pop(adapter_name, None)
    model.adapter_training_info.pop(adapter_name, None)
    if adapter_name in _peft_names(model):
        if len(model.backbone.peft_config) == 1:
            # A PeftModel without adapters cannot even return its base model; unload() removes the LoRA layers.
            model.backbone = model.backbone.unload()
        else:
            with warnings.catch_warnings():
                # PEFT picks another active LoRA adapter and says so; the callers re-apply the model's own choice.
                warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
                model.backbone.delete_adapter(adapter_name)


def _freeze(model: LabelTokModel, adapter_name: str) -> None:
    model.label_tables[adapter_name].requires_grad_(False)
    model.heads[adapter_name].requires_grad_(False)
    if adapter_name in _peft_names(model):
        for key, parameter in model.backbone.named_parameters():
            if _is_peft_tensor_of(key, {adapter_name}):
                parameter.requires_grad_(False)


# --------------------------------------------------------------------------------------------------- public operations


def load_adapter(
    model: LabelTokModel,
    directory: str | os.PathLike,
    adapter_name: str,
    is_trainable: bool = False,
    replace: bool = False,
) -> None:
    """Loads a saved adapter; see `LabelTokModel.load_adapter`."""
    from .model import validate_adapter_name

    validate_adapter_name(adapter_name)
    exists = adapter_name in model.labeltok_configs
    if exists and not replace:
        raise ValueError(
            f"An adapter named {adapter_name!r} is already loaded; pass replace=True to overwrite it, load it under "
            "another name, or delete_adapter() it first."
        )
    payload = read_adapter(directory)
    check_backbone(model, payload, directory)
    model._check_positions(payload.config)
    check_lora_tensors(model, payload, directory)

    previous = capture_adapter(model, adapter_name) if exists else None
    if previous is not None:
        detach_adapter(model, adapter_name)
    try:
        attach_adapter(model, adapter_name, payload, is_trainable)
    except BaseException:
        if previous is not None:
            attach_adapter(model, adapter_name, previous, is_trainable=True)
        raise
    finally:
        # Re-applying the active adapter also puts newly created LoRA layers in the right enabled/disabled state.
        if model.labeltok_configs:
            model.set_adapter(model.active_adapter or adapter_name)
    if not is_trainable:
        _freeze(model, adapter_name)


def delete_adapter(model: LabelTokModel, adapter_name: str) -> None:
    """Deletes an adapter that is not active; see `LabelTokModel.delete_adapter`."""
    if adapter_name not in model.labeltok_configs:
        raise KeyError(f"No adapter named {adapter_name!r} to delete; loaded adapters: {model.adapters}.")
    if adapter_name == model.active_adapter:
        others = [name for name in model.adapters if name != adapter_name]
        fix = f"switch to another one first with set_adapter({others[0]!r})" if others else "it is the only adapter"
        raise ValueError(f"Cannot delete {adapter_name!r}: it is the active adapter; {fix}.")
    detach_adapter(model, adapter_name)
    model.set_adapter(model.active_adapter)


# --------------------------------------------------------------------------------------------------- save / share


def _require_adapter(model: LabelTokModel, adapter_name: str) -> None:
    if adapter_name not in model.labeltok_configs:
        raise KeyError(f"No adapter named {adapter_name!r}; loaded adapters: {model.adapters}.")


def capture_adapter(model: LabelTokModel, adapter_name: str) -> AdapterPayload:
    """Collects one adapter's config and tensors from a model (tensors are detached, not copied)."""
    _require_adapter(model, adapter_name)
    tensors = {"label_table": model.label_tables[adapter_name].detach()}
    tensors |= {f"head.{key}": value.detach() for key, value in model.heads[adapter_name].state_dict().items()}
    lora_config, lora_state = None, None
    if isinstance(model.backbone, PeftModel) and adapter_name in model.backbone.peft_config:
        lora_config = copy.deepcopy(model.backbone.peft_config[adapter_name])
        lora_state = get_peft_model_state_dict(model.backbone, adapter_name=adapter_name, save_embedding_layers=False)
    return AdapterPayload(
        config=copy.deepcopy(model.labeltok_configs[adapter_name]),
        backbone=BackboneFingerprint.of(model),
        tensors=tensors,
        lora_config=lora_config,
        lora_state=lora_state,
        training=copy.deepcopy(model.adapter_training_info.get(adapter_name, {})),
        library_version=library_version(),
    )


def _training_section(dataset_name: str | None, metrics: dict[str, Any] | None) -> dict[str, Any]:
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
            # JSON has no NaN/inf: such values are stored as null.
            clean[str(name)] = number if math.isfinite(number) else None
        section["metrics"] = clean
    return section


def save_adapter(
    model: LabelTokModel,
    save_directory: str | os.PathLike,
    adapter_name: str | None = None,
    dataset_name: str | None = None,
    metrics: dict[str, float] | None = None,
    model_card: bool = True,
    repo_id: str | None = None,
) -> Path:
    """Saves one adapter of `model` (the active one by default); see `LabelTokModel.save_pretrained`."""
    adapter_name = adapter_name or model._require_active()
    _require_adapter(model, adapter_name)
    update = _training_section(dataset_name, metrics)
    if update:
        model.adapter_training_info.setdefault(adapter_name, {}).update(update)
    return write_adapter(capture_adapter(model, adapter_name), save_directory, adapter_name, model_card, repo_id)


def push_adapter_to_hub(
    model: LabelTokModel,
    repo_id: str,
    adapter_name: str | None = None,
    dataset_name: str | None = None,
    metrics: dict[str, float] | None = None,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
):
    """Saves one adapter with its model card to a temporary folder and uploads it with `huggingface_hub`.

    Returns:
        The `huggingface_hub.CommitInfo` of the upload.
    """
    from huggingface_hub import HfApi

    adapter_name = adapter_name or model._require_active()
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="labeltok-push-") as folder:
        save_adapter(model, folder, adapter_name, dataset_name, metrics, model_card=True, repo_id=repo_id)
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload label-token adapter {adapter_name!r}",
        )


# --------------------------------------------------------------------------------------------------- state dicts


def _is_adapter_key(backbone_key: str, adapter_names: set[str], keep_biases: bool) -> bool:
    return _is_peft_tensor_of(backbone_key, adapter_names) or (keep_biases and backbone_key.endswith(".bias"))


def _lora_trains_biases(model: LabelTokModel) -> bool:
    if not isinstance(model.backbone, PeftModel):
        return False
    return any(getattr(config, "bias", "none") != "none" for config in model.backbone.peft_config.values())


def drop_backbone_weights(model: LabelTokModel, state: dict, prefix: str) -> dict:
    """Deletes the frozen backbone's entries from a `LabelTokModel` state dict, in place; returns it."""
    names, keep_biases = _peft_names(model), _lora_trains_biases(model)
    backbone_prefix = prefix + "backbone."
    for key in [key for key in state if key.startswith(backbone_prefix)]:
        if not _is_adapter_key(key[len(backbone_prefix) :], names, keep_biases):
            del state[key]
    return state


def ignore_missing_backbone_keys(model: LabelTokModel, incompatible_keys) -> None:
    """`load_state_dict` post-hook: frozen backbone weights are never part of a state dict, so never missing."""
    names, keep_biases = _peft_names(model), _lora_trains_biases(model)
    backbone_keys = set(model.backbone.state_dict(keep_vars=True))

    def is_frozen_backbone_key(key: str) -> bool:
        # The model may sit under any prefix (DDP adds "module."): try every ".backbone." boundary.
        for match in re.finditer(r"(?:^|\.)backbone\.", key):
            relative = key[match.end() :]
            if relative in backbone_keys and not _is_adapter_key(relative, names, keep_biases):
                return True
        return False

    incompatible_keys.missing_keys[:] = [
        key for key in incompatible_keys.missing_keys if not is_frozen_backbone_key(key)
    ]
