"""LoRA inside the shared backbone, and adapter-only state dicts: the PEFT side of the adapter lifecycle.

`LabelTokModel` owns its adapters (label tables, heads, configs) and calls these functions for the LoRA part, which
lives inside the backbone under the adapter's name. They take the backbone, never the model, return the new
backbone where PEFT wraps or unwraps it, and check before they change anything: only plain LoRA (nothing that
edits the backbone's own weights or layers) and exactly the LoRA tensors its config implies.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn
from transformers.pytorch_utils import Conv1D

from .serialization import AdapterFormatError, BackboneFingerprint, check_fingerprint

# `base_model.model.<module path>.<part>[.weight|.bias]`, the key layout of PEFT's saved LoRA tensors.
_LORA_KEY = re.compile(
    r"^base_model\.model\.(?P<module>.+)\."
    r"(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)(?P<suffix>\.weight|\.bias)?$"
)

# Names of the PEFT containers that hold one entry per adapter (LoRA layers, DoRA magnitudes, modules_to_save, ...).
_PEFT_CONTAINERS = ("lora_", "modules_to_save", "trainable_tokens")

# LoraConfig fields a plain LoRA adapter may set. Every other field must keep its default: the others edit the
# backbone's own weights or layers (layer_replication, modules_to_save, trainable_token_indices, PiSSA/OLoRA/LoftQ
# initialisation, bias training) or need machinery this library does not handle (Megatron, target_parameters, ...).
_PLAIN_LORA_FIELDS = {
    "task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision", "inference_mode",
    "r", "target_modules", "exclude_modules", "lora_alpha", "lora_dropout", "fan_in_fan_out", "use_rslora",
    "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern", "use_dora", "lora_bias",
    "runtime_config", "megatron_core", "qalora_group_size", "ensure_weight_tying", "init_lora_weights", "bias",
}  # fmt: skip
_PLAIN_INITS = (True, False, "gaussian")

# The key prefix of the per-adapter fingerprints in `LabelTokModel.state_dict()`.
FINGERPRINT_PREFIX = "labeltok_fingerprint."


class StateDictMismatchError(AdapterFormatError, RuntimeError):
    """A state dict (a Trainer checkpoint) does not belong to this model: unknown keys, shapes, task or backbone.

    A `ValueError` for the command line and a `RuntimeError` like torch's own `load_state_dict` errors.
    """


# --------------------------------------------------------------------------------------------------- checks


def check_plain_lora(lora_config: LoraConfig, source: str, error: type[Exception] = ValueError) -> None:
    """Refuses LoRA options that edit the backbone (or that this library cannot save and check).

    Raises:
        error: naming each option and its value.
    """
    default = LoraConfig()
    unsupported = {
        key: value
        for key, value in vars(lora_config).items()
        if key not in _PLAIN_LORA_FIELDS and hasattr(default, key) and value != getattr(default, key)
    }
    if lora_config.bias != "none":
        unsupported["bias"] = lora_config.bias
    if lora_config.task_type not in (None, "FEATURE_EXTRACTION"):  # other task types add heads (modules_to_save)
        unsupported["task_type"] = lora_config.task_type
    if lora_config.init_lora_weights not in _PLAIN_INITS:
        unsupported["init_lora_weights"] = lora_config.init_lora_weights
    if unsupported:
        shown = ", ".join(f"{key}={value!r}" for key, value in sorted(unsupported.items()))
        raise error(
            f"The LoRA config of {source} sets {shown}: labeltok-peft supports plain LoRA only (these options change "
            "the shared backbone's own weights or layers). Remove them (bias='none', init_lora_weights=True)."
        )


def _in_out_features(module: nn.Module) -> tuple[int, int] | None:
    if isinstance(module, nn.Linear):  # includes bitsandbytes' Linear4bit/Linear8bitLt
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):  # GPT-2 stores its weight as [in, out]
        return tuple(module.weight.shape)
    if isinstance(module, nn.Embedding):
        return module.num_embeddings, module.embedding_dim
    return None


def check_lora_keys(base: nn.Module, lora_state: dict[str, torch.Tensor], source: str) -> None:
    """Checks, before anything changes, that every saved tensor is a LoRA tensor of an existing module that fits it.

    Any other key (a backbone weight such as `...word_embeddings.weight`, another adapter's `...lora_A.<name>.weight`)
    is refused with its name; `attach_lora` then compares the keys and shapes with what the config creates.
    """
    for key, tensor in lora_state.items():
        match = _LORA_KEY.match(key)
        if match is None:
            raise AdapterFormatError(
                f"{source} holds tensor {key!r}, which is not a LoRA weight of this adapter; a LoRA file holds only "
                "'base_model.model.<module>.lora_A.weight'-style keys. Refusing it (it would overwrite other weights)."
            )
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
        if features is None or part == "lora_magnitude_vector" or match["suffix"] == ".bias" or tensor.ndim != 2:
            continue
        in_features, out_features = features
        is_a = part in ("lora_A", "lora_embedding_A")
        width = tensor.shape[1] if is_a else tensor.shape[0]
        if width != (in_features if is_a else out_features):
            raise AdapterFormatError(
                f"LoRA tensor {key!r} in {source} has shape {list(tensor.shape)}, which does not fit module {path!r} "
                f"(in {in_features}, out {out_features}); the adapter was saved on another backbone."
            )


# --------------------------------------------------------------------------------------------------- LoRA in the backbone


def peft_names(backbone: nn.Module) -> set[str]:
    """Names of the LoRA adapters inside a backbone."""
    return set(backbone.peft_config) if isinstance(backbone, PeftModel) else set()


def is_peft_tensor_of(key: str, adapter_names: set[str]) -> bool:
    """Whether a backbone key is a tensor of one of the named PEFT adapters.

    PEFT keeps per-adapter tensors in containers keyed by adapter name: `...query.lora_A.<name>.weight`. The
    container is checked too, so that an adapter named like a backbone module (`encoder`) never claims the
    backbone's own weights.
    """
    parts = key.split(".")
    return any(
        part in adapter_names and container.startswith(_PEFT_CONTAINERS)
        for container, part in zip(parts, parts[1:], strict=False)
    )


def _cuda_devices(base: nn.Module) -> list[torch.device]:
    return sorted({p.device for p in base.parameters() if p.device.type == "cuda"}, key=str)


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def attach_lora(
    backbone: nn.Module,
    adapter_name: str,
    lora_config: LoraConfig,
    lora_state: dict[str, torch.Tensor] | None,
    source: str,
) -> nn.Module:
    """Adds a LoRA adapter to the backbone; returns the backbone (a `PeftModel` after the first LoRA adapter).

    Args:
        lora_state: saved tensors, which must be exactly those the config creates (names and shapes); `None` keeps
            PEFT's initialisation (a new adapter).

    Raises:
        AdapterFormatError: the saved tensors differ from what the config creates. The LoRA layers are in the
            backbone by then: the caller removes them again (`detach_lora`).
    """
    base = backbone.get_base_model() if isinstance(backbone, PeftModel) else backbone
    lora_config = copy.deepcopy(lora_config)
    # The caller already compared the saved backbone with this one; PEFT would warn about the name again.
    lora_config.base_model_name_or_path = base.__dict__.get("name_or_path") or None
    # PEFT initialises the new LoRA layers randomly; for a loaded adapter the saved tensors overwrite them, and that
    # throw-away init must not move the global random state.
    with torch.random.fork_rng(devices=_cuda_devices(base), enabled=lora_state is not None):
        if isinstance(backbone, PeftModel):
            backbone.add_adapter(adapter_name, lora_config)
        else:
            backbone = get_peft_model(backbone, lora_config, adapter_name=adapter_name)
    if lora_state is None:
        return backbone
    try:
        _load_exact_lora_state(backbone, adapter_name, lora_config, lora_state, source)
    except BaseException:
        detach_lora(backbone, adapter_name)  # the caller still holds the old backbone object: leave it bare again
        raise
    return backbone


def _load_exact_lora_state(
    backbone: PeftModel, adapter_name: str, lora_config: LoraConfig, lora_state: dict[str, torch.Tensor], source: str
) -> None:
    expected = _shapes(get_peft_model_state_dict(backbone, adapter_name=adapter_name, save_embedding_layers=False))
    saved = _shapes(lora_state)
    for key in sorted(set(saved) | set(expected)):
        if key not in expected:
            raise AdapterFormatError(f"{source} holds LoRA tensor {key!r}, which its LoRA config does not create.")
        if key not in saved:
            raise AdapterFormatError(f"{source} is missing LoRA tensor {key!r}, which its LoRA config creates.")
        if saved[key] != expected[key]:
            raise AdapterFormatError(
                f"LoRA tensor {key!r} in {source} has shape {list(saved[key])}, but its LoRA config (r="
                f"{lora_config.r}) creates {list(expected[key])}: lora/adapter_config.json was edited or belongs to "
                "another save. Save the adapter again."
            )
    result = set_peft_model_state_dict(backbone, lora_state, adapter_name=adapter_name)
    if result.unexpected_keys:
        raise AdapterFormatError(f"PEFT did not place LoRA tensors {result.unexpected_keys[:5]} of {source}.")


def detach_lora(backbone: nn.Module, adapter_name: str) -> nn.Module:
    """Removes a LoRA adapter; returns the backbone (the bare one after the last LoRA adapter)."""
    if adapter_name not in peft_names(backbone):
        return backbone
    if len(backbone.peft_config) == 1:
        # A PeftModel without adapters cannot even return its base model; unload() removes the LoRA layers.
        return backbone.unload()
    with warnings.catch_warnings():
        # PEFT picks another active LoRA adapter and says so; the caller re-applies the model's own choice.
        warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
        backbone.delete_adapter(adapter_name)
    return backbone


def lora_state_of(backbone: nn.Module, adapter_name: str) -> tuple[LoraConfig | None, dict[str, torch.Tensor] | None]:
    """The LoRA config and tensors (PEFT's saved form) of one adapter, or `(None, None)` without LoRA."""
    if adapter_name not in peft_names(backbone):
        return None, None
    config = copy.deepcopy(backbone.peft_config[adapter_name])
    return config, get_peft_model_state_dict(backbone, adapter_name=adapter_name, save_embedding_layers=False)


def freeze_lora(backbone: nn.Module, adapter_name: str) -> None:
    for key, parameter in backbone.named_parameters():
        if is_peft_tensor_of(key, {adapter_name}):
            parameter.requires_grad_(False)


# --------------------------------------------------------------------------------------------------- state dicts


def drop_backbone_weights(backbone: nn.Module, state: dict, prefix: str) -> dict:
    """Deletes the frozen backbone's entries from a `LabelTokModel` state dict, in place; returns it."""
    names = peft_names(backbone)
    backbone_prefix = prefix + "backbone."
    for key in [key for key in state if key.startswith(backbone_prefix)]:
        if not is_peft_tensor_of(key[len(backbone_prefix) :], names):
            del state[key]
    return state


def ignore_missing_backbone_keys(backbone: nn.Module, incompatible_keys) -> None:
    """`load_state_dict` post-hook: frozen backbone weights are never part of a state dict, so never missing."""
    names = peft_names(backbone)
    backbone_keys = set(backbone.state_dict(keep_vars=True))

    def is_frozen_backbone_key(key: str) -> bool:
        # The model may sit under any prefix (DDP adds "module."): try every ".backbone." boundary.
        for match in re.finditer(r"(?:^|\.)backbone\.", key):
            relative = key[match.end() :]
            if relative in backbone_keys and not is_peft_tensor_of(relative, names):
                return True
        return False

    incompatible_keys.missing_keys[:] = [
        key for key in incompatible_keys.missing_keys if not is_frozen_backbone_key(key)
    ]


def fingerprint_tensor(config_dict: dict[str, Any], backbone: BackboneFingerprint) -> torch.Tensor:
    """What a state dict records about one adapter, as a uint8 tensor of JSON bytes (safetensors stores tensors only).

    Only what gives the weights their meaning: labels in logit order, problem type, per-label bias, head type, the layer the
    label rows enter (`label_layers`: rows trained for the last layer mean nothing at the input) and the backbone's
    architecture. Settings such as the chunk size may change between runs.
    """
    document = {
        "labels": config_dict["labels"],
        "problem_type": config_dict["problem_type"],
        "per_label_bias": config_dict["per_label_bias"],
        "head_type": config_dict.get("head_type", "linear"),
        "label_layers": config_dict.get("label_layers"),
        "backbone": {key: getattr(backbone, key) for key in ("model_type", "hidden_size", "num_layers")},
    }
    data = json.dumps(document, sort_keys=True).encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def _decode_fingerprint(tensor: torch.Tensor, key: str) -> dict[str, Any]:
    try:
        document = json.loads(bytes(tensor.to("cpu", torch.uint8).flatten().tolist()).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RuntimeError):
        raise StateDictMismatchError(f"State dict entry {key!r} is not a labeltok-peft fingerprint.") from None
    if not isinstance(document, dict) or not isinstance(document.get("backbone"), dict):
        raise StateDictMismatchError(f"State dict entry {key!r} is not a labeltok-peft fingerprint.")
    return document


def check_incoming_state(own: dict[str, torch.Tensor], incoming: dict[str, Any], prefix: str, strict: bool) -> None:
    """Checks a state dict against the model's own (`own`, from `state_dict(prefix=prefix)`) before anything loads.

    Refuses keys the model's state dict does not have (backbone weights, other adapters), other shapes, missing
    adapter keys when `strict`, and a recorded fingerprint of another task or backbone. Removes the fingerprint
    entries from `incoming` (they are not parameters).

    Raises:
        StateDictMismatchError: naming the key and what differs.
        BackboneMismatchError: the fingerprint names a backbone of another architecture.
    """
    keys = [key for key in incoming if key.startswith(prefix)]
    for key in keys:
        if key not in own:
            raise StateDictMismatchError(
                f"The state dict holds {key!r}, which is not an adapter tensor of this model (its adapters' keys "
                f"start with {prefix}label_tables., {prefix}heads. or are LoRA weights); it belongs to another model "
                "or adapter. Refusing it."
            )
        value = incoming[key]
        if key.startswith(prefix + FINGERPRINT_PREFIX):
            theirs, ours = _decode_fingerprint(value, key), _decode_fingerprint(own[key], key)
            check_fingerprint(
                BackboneFingerprint(**theirs["backbone"], vocab_size=None, name_or_path=None),
                BackboneFingerprint(**ours["backbone"], vocab_size=None, name_or_path=None),
                "this state dict",
            )
            if theirs != ours:
                adapter = key[len(prefix + FINGERPRINT_PREFIX) :]
                differences = sorted(name for name in theirs if theirs[name] != ours.get(name))
                raise StateDictMismatchError(
                    f"The state dict was saved for another task than adapter {adapter!r} of this model ({differences} "
                    f"differ: saved labels {theirs['labels'][:8]}, this model {ours['labels'][:8]}). Resume only "
                    "from checkpoints of the same run."
                )
            continue
        if hasattr(value, "shape") and tuple(value.shape) != tuple(own[key].shape):
            raise StateDictMismatchError(
                f"State dict entry {key!r} has shape {list(value.shape)}, but this model's is {list(own[key].shape)}; "
                "it belongs to another adapter configuration."
            )
    if strict:
        missing = sorted(set(own) - set(keys) - {key for key in own if key.startswith(prefix + FINGERPRINT_PREFIX)})
        if missing:
            raise StateDictMismatchError(f"The state dict lacks adapter tensors {missing[:5]} (strict=True).")
    for key in keys:
        if key.startswith(prefix + FINGERPRINT_PREFIX):
            del incoming[key]
