"""The label-token model: a frozen backbone, per-adapter label tables and heads, optional LoRA."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from .adapters import (
    delete_adapter,
    drop_backbone_weights,
    ignore_missing_backbone_keys,
    load_adapter,
    push_adapter_to_hub,
    save_adapter,
)
from .backbone import BackboneInfo, base_transformer, inspect_backbone
from .config import LabelAttention, LabelPositions, LabelTokConfig, Placement
from .data import check_labels_tensor, validate_texts
from .head import LabelHead
from .label_init import initial_label_table
from .splice import splice_labels

DEFAULT_ADAPTER_NAME = "default"
_ADAPTER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


def validate_adapter_name(name: str) -> str:
    """Adapter names become module keys and folder names: letters, digits, `_` and `-` only."""
    if not isinstance(name, str) or not _ADAPTER_NAME_PATTERN.match(name):
        raise ValueError(
            f"Invalid adapter name {name!r}: use letters, digits, '_' and '-' only (no path separators, dots or "
            "spaces)."
        )
    return name


class LabelTokModel(nn.Module):
    """A frozen transformers backbone with label-token adapters.

    Build it with `get_labeltok_model`. Each adapter owns a label table `[num_labels, hidden]`, a `LabelHead` and
    optionally LoRA weights in the backbone; the backbone's own weights are never trained and stored once.

    Args:
        backbone: a transformers model (`AutoModel`, or an `*ForCausalLM` whose bare transformer is used).
        tokenizer: the backbone's tokenizer (needed by `predict` and by the 'label_text' and 'cls' inits).
    """

    def __init__(self, backbone: nn.Module, tokenizer=None) -> None:
        super().__init__()
        base = base_transformer(backbone)
        self.backbone_info: BackboneInfo = inspect_backbone(base)
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        self.backbone: nn.Module = base
        self.tokenizer = tokenizer
        if tokenizer is not None and self.backbone_info.is_causal and tokenizer.pad_token is None:
            # Decoders often ship without a pad token. Padding positions are masked out and labels are placed after
            # the last real token, so any id works; EOS is the common choice and keeps the vocabulary unchanged.
            tokenizer.pad_token = tokenizer.eos_token
        self.label_tables = nn.ParameterDict()
        self.heads = nn.ModuleDict()
        self.labeltok_configs: dict[str, LabelTokConfig] = {}
        self.active_adapter: str | None = None
        # Per adapter: training data name and metrics written into its model card (see save_pretrained).
        self.adapter_training_info: dict[str, dict[str, Any]] = {}
        # state_dict() leaves the frozen backbone out, so loading never reports its weights as missing.
        self.register_load_state_dict_post_hook(ignore_missing_backbone_keys)

    # ----------------------------------------------------------------------------------------- adapters

    @property
    def base_model(self) -> nn.Module:
        """The bare transformer, without the PEFT LoRA wrapper."""
        return self.backbone.get_base_model() if isinstance(self.backbone, PeftModel) else self.backbone

    @property
    def labeltok_config(self) -> LabelTokConfig:
        """Config of the active adapter."""
        return self.labeltok_configs[self._require_active()]

    @property
    def id2label(self) -> dict[int, str]:
        return self.labeltok_config.id2label

    @property
    def label2id(self) -> dict[str, int]:
        return self.labeltok_config.label2id

    @property
    def adapters(self) -> list[str]:
        """Names of the loaded adapters, in the order they were added."""
        return list(self.labeltok_configs)

    def _require_active(self) -> str:
        if self.active_adapter is None:
            raise RuntimeError("This model has no adapter yet; add one with add_adapter(name, config).")
        return self.active_adapter

    def add_adapter(self, adapter_name: str, config: LabelTokConfig) -> None:
        """Adds a new, freshly initialised adapter and makes it active.

        Args:
            adapter_name: name of the adapter (letters, digits, `_`, `-`).
            config: its `LabelTokConfig`.
        """
        validate_adapter_name(adapter_name)
        if adapter_name in self.labeltok_configs:
            raise ValueError(f"An adapter named {adapter_name!r} already exists; pick another name or delete it first.")
        self._check_positions(config)
        lora_config = LoraConfig(**config.lora) if config.lora is not None else None
        embeddings = self.base_model.get_input_embeddings()
        table = initial_label_table(config, embeddings, self.tokenizer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            head = LabelHead(self.backbone_info.hidden_size, config.num_labels, config.per_label_bias)
        if lora_config is not None:
            # LoRA goes first: it is the only step that can still fail (no module matches target_modules), and
            # then nothing of the adapter has been added.
            self._add_lora(adapter_name, lora_config)
        self.label_tables[adapter_name] = nn.Parameter(table.to(torch.float32))
        self.heads[adapter_name] = head.to(embeddings.weight.device)
        self.labeltok_configs[adapter_name] = config
        self.set_adapter(adapter_name)

    def _add_lora(self, adapter_name: str, lora_config: LoraConfig) -> None:
        if isinstance(self.backbone, PeftModel):
            self.backbone.add_adapter(adapter_name, lora_config)
        else:
            self.backbone = get_peft_model(self.backbone, lora_config, adapter_name=adapter_name)

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
            has_lora = adapter_name in self.backbone.peft_config
            if has_lora:
                self.backbone.base_model.enable_adapter_layers()
                self.backbone.set_adapter(adapter_name)
            else:
                self.backbone.base_model.disable_adapter_layers()
                for name, parameter in self.backbone.named_parameters():
                    if "lora_" in name:
                        parameter.requires_grad_(False)

    def _check_positions(self, config: LabelTokConfig) -> None:
        info = self.backbone_info
        if config.label_attention == LabelAttention.ISOLATED and not info.supports_custom_4d_mask:
            raise ValueError(
                f"label_attention='isolated' needs a custom 4D attention mask, which {info.model_type!r} backbones do "
                "not accept; use label_attention='full' (or an encoder such as BERT, RoBERTa or ModernBERT)."
            )
        if config.label_positions == LabelPositions.SHARED and not info.accepts_position_ids:
            raise ValueError(
                f"label_positions='shared' needs explicit position ids, which {info.model_type!r} backbones do not "
                "accept; use label_positions='sequential'."
            )
        if config.label_positions == LabelPositions.SEQUENTIAL and info.max_positions is not None:
            if config.num_labels + 2 > info.max_positions:
                raise ValueError(
                    f"{config.num_labels} labels do not fit in the {info.max_positions} positions of this "
                    f"{info.model_type!r} backbone with label_positions='sequential' (every label takes a position). "
                    "Use label_positions='shared' (all labels share one position; label_attention='isolated' keeps "
                    "their logits independent)."
                )

    def max_text_length(self, adapter_name: str | None = None) -> int | None:
        """How many text tokens fit beside the adapter's labels, or `None` where positions are not limited."""
        info = self.backbone_info
        if info.max_positions is None:
            return None
        config = self.labeltok_configs[adapter_name or self._require_active()]
        if config.label_positions == LabelPositions.SHARED:
            return info.max_positions - 1
        return info.max_positions - config.num_labels

    # ----------------------------------------------------------------------------------------- save / load

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        adapter_name: str | None = None,
        dataset_name: str | None = None,
        metrics: dict[str, float] | None = None,
        model_card: bool = True,
    ) -> Path:
        """Saves one adapter (never the backbone) as safetensors + JSON, with a model card; see docs/adapter_format.md.

        Args:
            save_directory: folder to write; created if needed. Files of an earlier save there are replaced.
            adapter_name: adapter to save; the active one by default.
            dataset_name: name of the training data, shown in the model card (kept for later saves).
            metrics: evaluation metrics (name -> number), shown in the model card (kept for later saves).
            model_card: write README.md.

        Returns:
            The folder written.
        """
        return save_adapter(self, save_directory, adapter_name, dataset_name, metrics, model_card)

    @classmethod
    def from_pretrained(
        cls,
        backbone: nn.Module,
        adapter_directory: str | os.PathLike,
        adapter_name: str = DEFAULT_ADAPTER_NAME,
        is_trainable: bool = False,
        tokenizer=None,
    ) -> LabelTokModel:
        """Builds a model from a backbone and a folder written by `save_pretrained` (the counterpart of PEFT's).

        Args:
            backbone: the transformers model the adapter was trained on (checked against the saved fingerprint).
            adapter_directory: the saved adapter folder.
            adapter_name: name the adapter gets in this model.
            is_trainable: load for further training; otherwise its weights do not require grad and the model is put
                in eval mode.
            tokenizer: the backbone's tokenizer (needed by `predict`).

        Returns:
            A `LabelTokModel` with the loaded adapter active. Its logits equal those of the saved model (bitwise on
            the same device and dtype).
        """
        model = cls(backbone, tokenizer=tokenizer)
        model.load_adapter(adapter_directory, adapter_name, is_trainable=is_trainable)
        if not is_trainable:
            model.eval()
        return model

    def load_adapter(
        self,
        adapter_directory: str | os.PathLike,
        adapter_name: str,
        is_trainable: bool = False,
        replace: bool = False,
    ) -> None:
        """Loads a saved adapter onto this model's backbone, beside the adapters already there.

        Every file and the fit to this backbone are checked before the model changes: on any error nothing is
        loaded. The active adapter stays as it is (the loaded one becomes active only in a model without adapters);
        switch with `set_adapter`.

        Args:
            adapter_directory: a folder written by `save_pretrained`.
            adapter_name: name of the adapter in this model (letters, digits, `_`, `-`).
            is_trainable: with `False` its weights are loaded frozen. As in PEFT, `set_adapter(adapter_name)` makes
                the active adapter trainable.
            replace: overwrite an adapter of the same name instead of raising an error.
        """
        load_adapter(self, adapter_directory, adapter_name, is_trainable=is_trainable, replace=replace)

    def delete_adapter(self, adapter_name: str) -> None:
        """Removes an adapter (label table, head and LoRA weights); the active adapter cannot be deleted."""
        delete_adapter(self, adapter_name)

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

        Returns:
            The `huggingface_hub.CommitInfo` of the upload.
        """
        return push_adapter_to_hub(
            self, repo_id, adapter_name, dataset_name, metrics, commit_message, private, token, revision
        )

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        """Returns the adapter tensors only: label tables, heads and LoRA weights of every adapter, no backbone.

        An unmodified `transformers.Trainer` saves `model.state_dict()` as the `model.safetensors` of each checkpoint
        and resumes with `model.load_state_dict(..., strict=False)`. Leaving the frozen backbone out here keeps those
        checkpoints at adapter size (plus optimizer state, which only covers trainable tensors anyway) and resuming
        restores exactly the adapter tensors. The backbone comes from its own checkpoint; its weights are in
        `model.base_model.state_dict()`. Conversely `load_state_dict` never reports backbone weights as missing, so
        `model.load_state_dict(other.state_dict())` works with `strict=True`.
        """
        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        return drop_backbone_weights(self, state, prefix)

    # ----------------------------------------------------------------------------------------- forward

    def _after_last_token(self, config: LabelTokConfig) -> bool:
        if config.placement == Placement.AUTO:
            return self.backbone_info.is_causal
        return config.placement == Placement.AFTER_LAST_TOKEN

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        """Scores every label of the active adapter for each row.

        Args:
            input_ids: `[batch, seq_len]` token ids of the text, padded on either side.
            attention_mask: `[batch, seq_len]` 1 for real tokens, 0 for padding. All ones when omitted.
            labels: `[batch]` class ids (single-label) or `[batch, num_labels]` multi-hot floats (multi-label).
            token_type_ids: `[batch, seq_len]` optional segment ids (label tokens get segment 0).

        Returns:
            `SequenceClassifierOutput` with `logits` `[batch, num_labels]` (fp32) and `loss` when labels are given.
        """
        adapter_name = self._require_active()
        config = self.labeltok_configs[adapter_name]
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape [batch, seq_len]; got {tuple(input_ids.shape)}.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text_embeds = self.base_model.get_input_embeddings()(input_ids)  # [batch, seq_len, hidden]
        table = self.label_tables[adapter_name]
        head = self.heads[adapter_name]
        num_labels = config.num_labels
        chunk = config.label_chunk_size or num_labels
        logits = []
        for start in range(0, num_labels, chunk):
            label_slice = slice(start, min(start + chunk, num_labels))
            label_hidden = self._label_hidden_states(
                config, text_embeds, attention_mask, table[label_slice], start, token_type_ids
            )
            logits.append(head(label_hidden, label_slice))
        logits = torch.cat(logits, dim=1)  # [batch, num_labels]
        loss = self._loss(logits, labels, config) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _label_hidden_states(
        self,
        config: LabelTokConfig,
        text_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        label_rows: torch.Tensor,
        first_label_index: int,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """Runs the backbone on text plus one chunk of labels; returns `[batch, chunk, hidden]` label outputs."""
        info = self.backbone_info
        spliced = splice_labels(
            text_embeds,
            attention_mask,
            label_rows,
            after_last_token=self._after_last_token(config),
            isolated=config.label_attention == LabelAttention.ISOLATED,
            causal=info.is_causal,
            shared_positions=config.label_positions == LabelPositions.SHARED,
            first_label_index=first_label_index,
            total_labels=config.num_labels,
            position_offset=info.position_offset,
            token_type_ids=token_type_ids if info.accepts_token_type_ids else None,
        )
        if info.max_positions is not None:
            last_position = int(spliced.position_ids.max()) - info.position_offset
            if last_position >= info.max_positions:
                raise ValueError(
                    f"The batch needs position {last_position} but the backbone has {info.max_positions} positions: "
                    f"truncate texts to at most {self.max_text_length()} tokens (max_length) or use "
                    "label_positions='shared'."
                )
        kwargs: dict[str, Any] = {"inputs_embeds": spliced.inputs_embeds, "attention_mask": spliced.attention_mask}
        if info.accepts_position_ids:
            kwargs["position_ids"] = spliced.position_ids
        if spliced.token_type_ids is not None:
            kwargs["token_type_ids"] = spliced.token_type_ids
        if info.is_causal:
            kwargs["use_cache"] = False
        hidden = self.backbone(**kwargs)[0]  # [batch, seq_len + chunk, hidden]
        index = spliced.label_indices[:, :, None].expand(-1, -1, hidden.shape[-1])
        return hidden.gather(1, index)

    @staticmethod
    def _loss(logits: torch.Tensor, labels: torch.Tensor, config: LabelTokConfig) -> torch.Tensor:
        labels = check_labels_tensor(labels, config.num_labels, config.is_multi_label)
        if config.is_multi_label:
            return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return nn.functional.cross_entropy(logits, labels)

    # ----------------------------------------------------------------------------------------- utilities

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """Returns `(trainable, total)` parameter counts (4-bit weights counted as their unpacked size)."""
        trainable, total = 0, 0
        for parameter in self.parameters():
            count = parameter.numel()
            if type(parameter).__name__ == "Params4bit":
                count *= 2
            total += count
            if parameter.requires_grad:
                trainable += count
        return trainable, total

    def print_trainable_parameters(self) -> None:
        """Prints trainable and total parameter counts, as PEFT does."""
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs: Any) -> None:
        """Turns on the backbone's gradient checkpointing (called by `Trainer` for `gradient_checkpointing=True`).

        The spliced `inputs_embeds` require grad through the label rows, so reentrant checkpointing works with a
        frozen backbone without `enable_input_require_grads`.

        Args:
            gradient_checkpointing_kwargs: passed to `torch.utils.checkpoint.checkpoint` (e.g. `use_reentrant`).
            kwargs: further options of newer transformers (`every_n_layers`, `offload`), passed to the backbone.
        """
        base = self.base_model
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name is deprecated
            base.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs, **kwargs)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None, **kwargs: Any):
        """The newer transformers name of `gradient_checkpointing_enable` (what `Trainer` calls there)."""
        self.gradient_checkpointing_enable(activation_checkpointing_kwargs, **kwargs)

    def gradient_checkpointing_disable(self) -> None:
        base = self.base_model
        if hasattr(base, "activation_checkpointing_disable"):
            base.activation_checkpointing_disable()
        else:
            base.gradient_checkpointing_disable()

    def activation_checkpointing_disable(self) -> None:
        self.gradient_checkpointing_disable()

    @property
    def device(self) -> torch.device:
        return self.base_model.get_input_embeddings().weight.device

    @torch.no_grad()
    def predict(
        self,
        texts: str | list[str],
        batch_size: int = 32,
        threshold: float | dict[str, float] | list[float] = 0.5,
        max_length: int | None = None,
    ) -> list[dict[str, Any]]:
        """Classifies texts with the active adapter.

        Args:
            texts: one text or a list of texts.
            batch_size: texts per forward pass.
            threshold: multi-label only: probability above which a label is predicted; one value, or one per label
                (a list in label order or a dict keyed by label name).
            max_length: truncate texts to this many tokens (default: what fits beside the labels, at most 512).

        Returns:
            One dict per text. Single-label: `{"label", "score", "scores"}`; multi-label: `{"labels", "scores"}`, where
            `scores` maps every label to its probability.
        """
        if self.tokenizer is None:
            raise ValueError("predict() needs a tokenizer: pass tokenizer=... to get_labeltok_model or from_pretrained.")
        single = isinstance(texts, str)
        texts = validate_texts([texts] if single else texts)
        config = self.labeltok_config
        thresholds = _threshold_vector(threshold, config)
        limit = self.max_text_length()
        max_length = max_length or min(512, limit or 512)
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length={max_length} does not fit beside the labels; at most {limit} tokens do.")
        was_training = self.training
        self.eval()
        results: list[dict[str, Any]] = []
        try:
            for start in range(0, len(texts), batch_size):
                encoded = self.tokenizer(
                    texts[start : start + batch_size],
                    truncation=True,
                    max_length=max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(self.device)
                logits = self(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
                probabilities = logits.sigmoid() if config.is_multi_label else logits.softmax(dim=-1)
                for row in probabilities.cpu():
                    scores = {label: float(p) for label, p in zip(config.labels, row)}
                    if config.is_multi_label:
                        chosen = [label for label, p, t in zip(config.labels, row, thresholds) if float(p) >= t]
                        results.append({"labels": chosen, "scores": scores})
                    else:
                        best = int(row.argmax())
                        results.append({"label": config.labels[best], "score": float(row[best]), "scores": scores})
        finally:
            self.train(was_training)
        return results[0] if single else results


def _threshold_vector(threshold: float | dict[str, float] | list[float], config: LabelTokConfig) -> list[float]:
    if isinstance(threshold, dict):
        unknown = sorted(set(threshold) - set(config.labels))
        if unknown:
            raise ValueError(f"Thresholds given for unknown labels {unknown}; known labels: {config.labels}.")
        return [float(threshold.get(label, 0.5)) for label in config.labels]
    if isinstance(threshold, (list, tuple)):
        if len(threshold) != config.num_labels:
            raise ValueError(f"Got {len(threshold)} thresholds for {config.num_labels} labels; give one per label.")
        return [float(t) for t in threshold]
    return [float(threshold)] * config.num_labels


def get_labeltok_model(
    backbone: nn.Module,
    config: LabelTokConfig,
    tokenizer=None,
    adapter_name: str = DEFAULT_ADAPTER_NAME,
) -> LabelTokModel:
    """Wraps a backbone with a new label-token adapter (the counterpart of `peft.get_peft_model`).

    Args:
        backbone: a transformers model that accepts `inputs_embeds` (`AutoModel.from_pretrained(...)`; an
            `*ForCausalLM` works too, its bare transformer is used). Its weights are frozen.
        config: the adapter's `LabelTokConfig`.
        tokenizer: the backbone's tokenizer; needed for `predict` and the 'label_text'/'cls' initialisations. A
            decoder tokenizer without a pad token gets its EOS token as pad token.
        adapter_name: name of the first adapter.

    Returns:
        A `LabelTokModel` whose trainable parameters are the label table, the head and the LoRA weights.
    """
    model = LabelTokModel(backbone, tokenizer=tokenizer)
    model.add_adapter(adapter_name, config)
    return model
