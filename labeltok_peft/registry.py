"""The adapter registry of `LabelTokModel`: add, load, replace, switch, delete, save, push and state dicts.

An adapter is a label table, a head, a config and optionally LoRA weights inside the shared backbone, all under one
name. The registry rests on two primitives: `_capture(name) -> AdapterPayload` (the adapter, detached from the
model) and `_attach(name, payload)` (the reverse). Adding a new adapter and loading a saved one both build a payload
and go through `_install`, the one place that attaches and, on any error, removes what was attached and puts a
replaced adapter back, so a failed add or load leaves the model as it was.

`LabelTokModel` mixes this class in; it provides `backbone`, `base_model`, `backbone_info`, `tokenizer`,
`label_tables`, `heads`, `labeltok_configs`, `adapter_training_info`, `active_adapter` and `_check_positions`.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel
from torch import nn

from . import label_set
from .adapters import (
    FINGERPRINT_PREFIX,
    attach_lora,
    check_incoming_state,
    check_lora_keys,
    check_plain_lora,
    detach_lora,
    drop_backbone_weights,
    fingerprint_tensor,
    freeze_lora,
    ignore_missing_backbone_keys,
    lora_state_of,
)
from .config import HeadType, LabelTokConfig
from .constants import DEFAULT_ADAPTER_NAME, validate_adapter_name
from .head import LabelHead
from .hub import resolve_adapter_source, upload_adapter_folder
from .label_init import initial_label_table
from .label_pass import LABEL_PASS_KERNELS
from .late_injection import find_layer_list, num_layers
from .serialization import (
    AdapterFormatError,
    AdapterPayload,
    BackboneFingerprint,
    check_fingerprint,
    library_version,
    read_adapter,
    training_section,
    write_adapter,
)


def _check_state_before_load(model, state_dict, prefix, local_metadata, strict, *_) -> None:
    """`load_state_dict` pre-hook: refuse keys, shapes and fingerprints of another model before anything loads."""
    check_incoming_state(model.state_dict(prefix=prefix), state_dict, prefix, strict)


def _forgive_backbone_keys(model, incompatible_keys) -> None:
    """`load_state_dict` post-hook: frozen backbone weights are never part of a state dict, so never missing."""
    ignore_missing_backbone_keys(model.backbone, incompatible_keys)


def new_head(hidden_size: int, config: LabelTokConfig) -> LabelHead:
    """A freshly initialised `LabelHead` with the terms `config` asks for (per-label bias, tied, residual, cosine)."""
    return LabelHead(
        hidden_size,
        config.num_labels,
        config.per_label_bias,
        tied=config.head_type == HeadType.TIED,
        per_label_weight=config.head_type == HeadType.RESIDUAL,
        cosine=config.head_type == HeadType.COSINE,
    )


class AdapterRegistry:
    """The adapter lifecycle of `LabelTokModel` (a mixin; see the module docstring)."""

    def _register_state_dict_hooks(self) -> None:
        self.register_load_state_dict_pre_hook(_check_state_before_load)
        self.register_load_state_dict_post_hook(_forgive_backbone_keys)

    # ----------------------------------------------------------------------------------------- primitives

    def _fingerprint(self) -> BackboneFingerprint:
        return BackboneFingerprint.of(self.base_model, self.backbone_info)

    def _resolve_modes(self, config: LabelTokConfig) -> LabelTokConfig:
        """The config with `auto` attention, positions and label layers made concrete for this backbone (what gets saved).

        `auto` is isolated attention where the backbone takes it: not on DeBERTa (no custom 4D mask) and not on an
        attention kernel the label pass cannot reproduce (flash or flex attention), where it is full attention.
        `label_layers='auto'` is late injection into the last layer on encoders where it runs, else every layer.
        """
        info = self.backbone_info
        kernel = getattr(self.base_model.config, "_attn_implementation", None) or "eager"
        supports_isolated = info.supports_custom_4d_mask and kernel in LABEL_PASS_KERNELS
        return config.resolve_modes(supports_isolated, info.accepts_position_ids, self._late_injection_by_default())

    def _late_injection_by_default(self) -> bool:
        """Whether `label_layers='auto'` injects late here: an encoder with one plain layer stack of two or more layers.

        Causal decoders keep every layer: on SmolLM2-135M (30 layers), 38 steps on a 400-row BBC News slice, labels in
        the last layer reached 0.23 accuracy (chance 0.2) against 0.91 in every layer (quality study, section 4.1).
        """
        if self.backbone_info.is_causal:
            return False
        depth = num_layers(self.base_model)
        if depth is None or depth < 2:
            return False
        try:
            find_layer_list(self.base_model)
        except ValueError:
            return False
        return True

    def _require_adapter(self, adapter_name: str) -> None:
        if adapter_name not in self.labeltok_configs:
            raise KeyError(f"No adapter named {adapter_name!r}; loaded adapters: {self.adapters}.")

    def _capture(self, adapter_name: str) -> AdapterPayload:
        """One adapter's config and tensors, detached from the model (tensors are detached, not copied)."""
        self._require_adapter(adapter_name)
        tensors = {"label_table": self.label_tables[adapter_name].detach()}
        tensors |= {f"head.{key}": value.detach() for key, value in self.heads[adapter_name].state_dict().items()}
        lora_config, lora_state = lora_state_of(self.backbone, adapter_name)
        return AdapterPayload(
            config=copy.deepcopy(self.labeltok_configs[adapter_name]),
            backbone=self._fingerprint(),
            tensors=tensors,
            lora_config=lora_config,
            lora_state=lora_state,
            training=copy.deepcopy(self.adapter_training_info.get(adapter_name, {})),
            library_version=library_version(),
        )

    def _attach(self, adapter_name: str, payload: AdapterPayload, source: str) -> None:
        """Adds a payload under `adapter_name`. Callers go through `_install`, which undoes a failed attach."""
        device = self.base_model.get_input_embeddings().weight.device
        with torch.random.fork_rng(devices=[]):  # the head's throw-away init must not move the global random state
            head = new_head(self.backbone_info.hidden_size, payload.config)
        head.load_state_dict(
            {key.removeprefix("head."): value for key, value in payload.tensors.items() if key.startswith("head.")}
        )
        table = payload.tensors["label_table"].to(device, torch.float32, copy=True)
        self.label_tables[adapter_name] = nn.Parameter(table)
        self.label_anchors[adapter_name] = table.detach().clone()
        self.heads[adapter_name] = head.to(device)
        self.labeltok_configs[adapter_name] = payload.config
        self.adapter_training_info[adapter_name] = payload.training
        if payload.lora_config is not None:
            self.backbone = attach_lora(self.backbone, adapter_name, payload.lora_config, payload.lora_state, source)

    def _detach(self, adapter_name: str) -> None:
        """Removes whatever exists of an adapter; removing the last LoRA adapter gives back the bare backbone."""
        if adapter_name in self.label_tables:
            del self.label_tables[adapter_name]
        self.label_anchors.pop(adapter_name, None)
        if adapter_name in self.heads:
            del self.heads[adapter_name]
        self.labeltok_configs.pop(adapter_name, None)
        self.adapter_training_info.pop(adapter_name, None)
        self.backbone = detach_lora(self.backbone, adapter_name)

    def _install(self, adapter_name: str, payload: AdapterPayload, source: str, lora_error: type[Exception]) -> None:
        """Checks what needs no change, then attaches (replacing an adapter of the same name); all or nothing."""
        if payload.lora_config is not None:
            check_plain_lora(payload.lora_config, source, lora_error)
        if payload.lora_state is not None:
            check_lora_keys(self.base_model, payload.lora_state, source)
        previous = self._capture(adapter_name) if adapter_name in self.labeltok_configs else None
        trainable = {name: p.requires_grad for name, p in self.named_parameters()}
        if previous is not None:
            self._detach(adapter_name)
        try:
            self._attach(adapter_name, payload, source)
        except BaseException:
            self._detach(adapter_name)
            if previous is not None:
                self._attach(adapter_name, previous, f"the previous adapter {adapter_name!r}")
            self._activate_again(adapter_name)
            for name, parameter in self.named_parameters():  # exactly the flags from before, frozen ones included
                parameter.requires_grad_(trainable.get(name, False))
            raise
        self._activate_again(adapter_name)

    def _activate_again(self, adapter_name: str) -> None:
        # Re-applying the active adapter also puts new LoRA layers in the right enabled/disabled state.
        if self.labeltok_configs:
            self.set_adapter(self.active_adapter if self.active_adapter in self.labeltok_configs else adapter_name)

    # ----------------------------------------------------------------------------------------- adapters

    def add_adapter(self, adapter_name: str, config: LabelTokConfig) -> None:
        """Adds a new, freshly initialised adapter and makes it active.

        Args:
            adapter_name: name of the adapter (letters, digits, `_`, `-`).
            config: its `LabelTokConfig`.
        """
        validate_adapter_name(adapter_name)
        if adapter_name in self.labeltok_configs:
            raise ValueError(f"An adapter named {adapter_name!r} already exists; pick another name or delete it first.")
        config = self._resolve_modes(config)
        self._check_positions(config)
        lora_config = LoraConfig(**config.lora) if config.lora is not None else None
        if lora_config is not None:  # before the label table is built: refuse early, whatever else is missing
            check_plain_lora(lora_config, f"adapter {adapter_name!r}")
        table = initial_label_table(config, self.base_model.get_input_embeddings(), self.tokenizer, self.backbone)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            head = new_head(self.backbone_info.hidden_size, config)
        tensors = {"label_table": table} | {f"head.{key}": value for key, value in head.state_dict().items()}
        payload = AdapterPayload(config, self._fingerprint(), tensors, lora_config, None, {}, library_version())
        self._install(adapter_name, payload, f"adapter {adapter_name!r}", ValueError)
        self.set_adapter(adapter_name)

    def set_adapter(self, adapter_name: str) -> None:
        """Makes `adapter_name` the adapter used by `forward` and `predict`; only its weights train."""
        if adapter_name not in self.labeltok_configs and adapter_name not in self.label_tables:
            raise KeyError(f"No adapter named {adapter_name!r}; loaded adapters: {self.adapters}.")
        self.active_adapter = adapter_name
        for name, table in self.label_tables.items():
            table.requires_grad_(name == adapter_name)
        for name, head in self.heads.items():
            head.requires_grad_(name == adapter_name)
        if isinstance(self.backbone, PeftModel):
            if adapter_name in self.backbone.peft_config:
                self.backbone.base_model.enable_adapter_layers()
                self.backbone.set_adapter(adapter_name)
            else:
                self.backbone.base_model.disable_adapter_layers()
                for name, parameter in self.backbone.named_parameters():
                    if "lora_" in name:
                        parameter.requires_grad_(False)

    def delete_adapter(self, adapter_name: str) -> None:
        """Removes an adapter (label table, head and LoRA weights); the active adapter cannot be deleted."""
        if adapter_name not in self.labeltok_configs:
            raise KeyError(f"No adapter named {adapter_name!r} to delete; loaded adapters: {self.adapters}.")
        if adapter_name == self.active_adapter:
            others = [name for name in self.adapters if name != adapter_name]
            fix = f"switch to another one first with set_adapter({others[0]!r})" if others else "it is the only adapter"
            raise ValueError(f"Cannot delete {adapter_name!r}: it is the active adapter; {fix}.")
        self._detach(adapter_name)
        self.set_adapter(self.active_adapter)

    # ----------------------------------------------------------------------------------------- label set

    def add_labels(
        self,
        names: str | list[str],
        descriptions: dict[str, str] | None = None,
        adapter_name: str | None = None,
    ) -> None:
        """Adds labels to a (trained) adapter without retraining; see `label_set.add_labels`.

        New rows start as the adapter's `label_init` would start them (from the name, or the description when
        given); the head and LoRA weights are untouched; with a per-label bias new labels start at the mean bias. The
        label table becomes a new `nn.Parameter` (same `requires_grad`): build a new optimizer afterwards. A failed
        call leaves the model unchanged.

        Args:
            names: the new label names, appended after the existing ones.
            descriptions: optional text per new label (name -> text), stored in the config.
            adapter_name: the adapter to extend; the active one by default.
        """
        label_set.add_labels(self, names, descriptions=descriptions, adapter_name=adapter_name)

    def remove_labels(self, names: str | list[str], adapter_name: str | None = None) -> None:
        """Removes labels from an adapter (at least two must remain); see `label_set.remove_labels`.

        The label table becomes a new `nn.Parameter` (same `requires_grad`): build a new optimizer afterwards.
        """
        label_set.remove_labels(self, names, adapter_name=adapter_name)

    def train_only_labels(self, names: str | list[str], train_head: bool = False) -> label_set.TrainableLabelRows:
        """Makes only the named labels' rows of the active adapter trainable; see `label_set.train_only_labels`.

        LoRA weights and (unless `train_head`) the head are frozen and a gradient hook zeroes every other row, so a
        the optimizer of `optim.create_optimizer` (lazy on per-label rows) leaves them bitwise unchanged.

        Args:
            names: the labels to fine-tune (typically those just added with `add_labels`).
            train_head: also train the shared head.

        Returns:
            A handle whose `.remove()` takes the hook off and restores every parameter's previous `requires_grad`.
        """
        return label_set.train_only_labels(self, names, train_head=train_head)

    # ----------------------------------------------------------------------------------------- load

    @classmethod
    def from_pretrained(
        cls,
        backbone: nn.Module,
        adapter_directory: str | os.PathLike,
        adapter_name: str = DEFAULT_ADAPTER_NAME,
        is_trainable: bool = False,
        tokenizer=None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
    ):
        """Builds a model from a backbone and a saved adapter (the counterpart of PEFT's `from_pretrained`).

        Args:
            backbone: the transformers model the adapter was trained on (checked against the saved fingerprint).
            adapter_directory: a folder written by `save_pretrained`, or a Hugging Face Hub repository id
                (`"user/repo"`) holding one.
            adapter_name: name the adapter gets in this model.
            is_trainable: load for further training; otherwise its weights do not require grad and the model is put
                in eval mode.
            tokenizer: the backbone's tokenizer (needed by `predict`).
            revision: Hub only: branch, tag or commit.
            token: Hub only: access token for private repositories.
            cache_dir: Hub only: the Hugging Face cache folder.

        Returns:
            A `LabelTokModel` with the loaded adapter active. Its logits equal those of the saved model (bitwise on
            the same device and dtype).
        """
        model = cls(backbone, tokenizer=tokenizer)
        model.load_adapter(
            adapter_directory, adapter_name, is_trainable, revision=revision, token=token, cache_dir=cache_dir
        )
        if not is_trainable:
            model.eval()
        return model

    def load_adapter(
        self,
        adapter_directory: str | os.PathLike,
        adapter_name: str,
        is_trainable: bool = False,
        replace: bool = False,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        """Loads a saved adapter onto this model's backbone, beside the adapters already there.

        Every file (against the sha256 recorded at saving), every tensor (shapes, finite values, exactly the LoRA
        tensors its config implies) and the fit to this backbone are checked; on any error nothing is loaded and
        the model is left exactly as it was. The active adapter stays as it is (the loaded one becomes active only
        in a model without adapters); switch with `set_adapter`.

        Args:
            adapter_directory: a folder written by `save_pretrained`, or a Hub repository id holding one.
            adapter_name: name of the adapter in this model (letters, digits, `_`, `-`).
            is_trainable: with `False` its weights are loaded frozen. As in PEFT, `set_adapter(adapter_name)` makes
                the active adapter trainable.
            replace: overwrite an adapter of the same name instead of raising an error.
            revision, token, cache_dir: for a Hub repository id, as in `huggingface_hub.snapshot_download`.
        """
        validate_adapter_name(adapter_name)
        if adapter_name in self.labeltok_configs and not replace:
            raise ValueError(
                f"An adapter named {adapter_name!r} is already loaded; pass replace=True to overwrite it, load it under "
                "another name, or delete_adapter() it first."
            )
        folder, root = resolve_adapter_source(adapter_directory, revision=revision, token=token, cache_dir=cache_dir)
        payload = read_adapter(folder, root=root)
        check_fingerprint(payload.backbone, self._fingerprint(), adapter_directory)
        payload.config = self._resolve_modes(payload.config)
        self._check_positions(payload.config)
        self._install(adapter_name, payload, str(adapter_directory), AdapterFormatError)
        if not is_trainable:
            self.label_tables[adapter_name].requires_grad_(False)
            self.heads[adapter_name].requires_grad_(False)
            freeze_lora(self.backbone, adapter_name)

    # ----------------------------------------------------------------------------------------- save / share

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        adapter_name: str | None = None,
        dataset_name: str | None = None,
        metrics: dict[str, float] | None = None,
        model_card: bool = True,
        repo_id: str | None = None,
    ) -> Path:
        """Saves one adapter (never the backbone) as safetensors + JSON, with a model card; see docs/adapter_format.md.

        The folder is replaced as a whole and crash-safely: a complete new folder is written beside it and switched
        in, so at every instant the path holds the old or the new adapter; concurrent saves run one after another.

        Args:
            save_directory: folder to write; created if needed. An earlier save there is replaced.
            adapter_name: adapter to save; the active one by default.
            dataset_name: name of the training data, shown in the model card (kept for later saves).
            metrics: evaluation metrics (name -> number), shown in the model card (kept for later saves).
            model_card: write README.md.
            repo_id: the Hub repository the folder is meant for (used in the model card's usage snippet).

        Returns:
            The folder written.

        Raises:
            AdapterFormatError: the adapter holds NaN or infinite values (nothing is written).
            OSError: writing failed (for example a full disk); the folder is left as it was.
        """
        adapter_name = adapter_name or self._require_active()
        self._require_adapter(adapter_name)
        update = training_section(dataset_name, metrics)
        if update:
            self.adapter_training_info.setdefault(adapter_name, {}).update(update)
        return write_adapter(self._capture(adapter_name), save_directory, adapter_name, model_card, repo_id)

    def push_to_hub(
        self,
        repo_id: str,
        adapter_name: str | None = None,
        dataset_name: str | None = None,
        metrics: dict[str, float] | None = None,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
    ):
        """Uploads one adapter folder (as `save_pretrained` writes it, model card included) to the Hugging Face Hub.

        `LabelTokModel.from_pretrained(backbone, repo_id)` loads it back (the model card shows that call).

        Returns:
            The `huggingface_hub.CommitInfo` of the upload.
        """
        adapter_name = adapter_name or self._require_active()
        with tempfile.TemporaryDirectory(prefix="labeltok-push-") as folder:
            saved = self.save_pretrained(Path(folder) / "adapter", adapter_name, dataset_name, metrics, True, repo_id)
            message = commit_message or f"Upload label-token adapter {adapter_name!r}"
            return upload_adapter_folder(saved, repo_id, message, private=private, token=token, revision=revision)

    # ----------------------------------------------------------------------------------------- state dicts

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False) -> dict[str, Any]:
        """Returns the adapter tensors only: label tables, heads and LoRA weights of every adapter, no backbone.

        An unmodified `transformers.Trainer` saves `model.state_dict()` as the `model.safetensors` of each checkpoint
        and resumes with `model.load_state_dict(..., strict=False)`. Leaving the frozen backbone out here keeps those
        checkpoints at adapter size and resuming restores exactly the adapter tensors. Each adapter also records a
        fingerprint (`labeltok_fingerprint.<name>`, JSON bytes as a uint8 tensor: labels, problem type and the
        backbone's architecture), and `load_state_dict` refuses, before anything loads, a state dict with keys this
        model does not have (backbone weights, other adapters), other shapes, or another fingerprint, even with
        `strict=False`. Backbone weights are never reported missing, so `model.load_state_dict(other.state_dict())`
        works with `strict=True`.
        """
        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        drop_backbone_weights(self.backbone, state, prefix)
        fingerprint = self._fingerprint()
        for name, config in self.labeltok_configs.items():
            state[f"{prefix}{FINGERPRINT_PREFIX}{name}"] = fingerprint_tensor(config.to_dict(), fingerprint)
        return state
