"""The label-token model: a frozen backbone, per-adapter label tables and heads, optional LoRA."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from peft import PeftModel
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from .backbone import BackboneInfo, base_transformer, inspect_backbone
from .config import LabelAttention, LabelPositions, LabelTokConfig, Placement
from .constants import DEFAULT_ADAPTER_NAME, validate_adapter_name  # noqa: F401 (re-exported)
from .data import check_labels_tensor, validate_texts
from .decoding import prediction_rows, probabilities_from_logits, resolve_max_length, resolve_thresholds
from .label_pass import LabelPassState, check_attention_implementation, run_pass
from .late_injection import find_layer_list, inject_at, num_layers
from .registry import AdapterRegistry
from .sampling import sample_labels, sampled_loss, scatter_scores
from .splice import insertion_indices, label_token_positions, splice_labels


class LabelTokModel(AdapterRegistry, nn.Module):
    """A frozen transformers backbone with label-token adapters.

    Build it with `get_labeltok_model`. Each adapter owns a label table `[num_labels, hidden]`, a `LabelHead` and
    optionally LoRA weights in the backbone; the backbone's own weights are never trained and stored once. Adding,
    loading, switching, deleting and saving adapters come from `AdapterRegistry` (registry.py).

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
        # Per adapter: the label table it started from, `[num_labels, hidden]`, for `label_anchor_weight` (not saved).
        self.label_anchors: dict[str, torch.Tensor] = {}
        self.active_adapter: str | None = None
        # Per adapter: training data name and metrics written into its model card (see save_pretrained).
        self.adapter_training_info: dict[str, dict[str, Any]] = {}
        # state_dict() holds adapter tensors only; loading checks them first and never reports backbone weights.
        self._register_state_dict_hooks()

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

    def _check_positions(self, config: LabelTokConfig) -> None:
        info = self.backbone_info
        if config.label_attention == LabelAttention.ISOLATED:
            if not info.supports_custom_4d_mask:
                raise ValueError(
                    f"label_attention='isolated' needs a custom 4D attention mask, which {info.model_type!r} backbones "
                    "do not accept; use label_attention='full' (or an encoder such as BERT, RoBERTa or ModernBERT)."
                )
            check_attention_implementation(self.base_model.config)
            for name in ("label_layers", "label_sample_size"):
                if getattr(config, name) is not None and not info.accepts_position_ids:
                    raise ValueError(
                        f"{name} runs on the label pass, which needs a backbone whose forward takes position_ids; "
                        f"{info.model_type!r} backbones do not. Use {name}=None."
                    )
        if config.label_layers is not None:
            depth = num_layers(self.base_model)
            if depth is None or config.label_layers > depth:
                raise ValueError(
                    f"LabelTokConfig.label_layers={config.label_layers} exceeds the {depth} layers of this "
                    f"{info.model_type!r} backbone; use at most {depth} (or None for all layers)."
                )
            if config.label_layers < depth:
                find_layer_list(self.base_model)  # refuses backbones without one plain layer stack, with the fix
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
            With `label_sample_size` in training (`model.training` and labels given) only a sampled set of labels is
            scored (sampling.py): `loss` is the sampled loss, and `logits` holds the sampled labels' scores with the
            fp32 minimum (finite) at every other label, so its shape never changes. Evaluation scores every label.
        """
        adapter_name = self._require_active()
        config = self.labeltok_configs[adapter_name]
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape [batch, seq_len]; got {tuple(input_ids.shape)}.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        sampled = None
        if labels is not None and self._samples_labels(config):
            labels = check_labels_tensor(labels, config.num_labels, config.is_multi_label)
            sampled = sample_labels(labels, config.num_labels, config.label_sample_size, config.is_multi_label)
        text_embeds = self.base_model.get_input_embeddings()(input_ids)  # [batch, seq_len, hidden]
        table = self.label_tables[adapter_name]
        head = self.heads[adapter_name]
        label_ids = sampled.ids if sampled is not None else None
        if self._uses_label_pass(config):
            chunks = self._label_pass_hidden_states(
                config, text_embeds, attention_mask, table, token_type_ids, label_ids
            )
        else:
            if config.label_layers is not None or sampled is not None:
                raise ValueError(
                    "label_layers and label_sample_size run on the label pass, which this backbone or setting does not "
                    "use (it needs label_attention='isolated' and a backbone that takes position_ids); set them to None."
                )
            chunks = self._spliced_hidden_states(config, text_embeds, attention_mask, table, token_type_ids)
        scores = torch.cat(
            [head(label_hidden, label_index, table[label_index]) for label_index, label_hidden in chunks], dim=1
        )
        if sampled is not None:
            loss = sampled_loss(scores, labels, sampled, config.is_multi_label)
            logits = scatter_scores(scores, sampled, config.num_labels)
        else:
            loss = self._loss(scores, labels, config) if labels is not None else None
            logits = scores
        if loss is not None and self.training and config.label_anchor_weight > 0:
            loss = loss + config.label_anchor_weight * self._anchor_penalty(adapter_name, table)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _anchor_penalty(self, adapter_name: str, table: torch.Tensor) -> torch.Tensor:
        """Mean over labels of the squared distance of each row `[num_labels, hidden]` from its starting row."""
        anchor = self.label_anchors[adapter_name]
        if anchor.device != table.device:
            anchor = self.label_anchors[adapter_name] = anchor.to(table.device)
        return (table - anchor).pow(2).sum(dim=-1).mean()

    def _samples_labels(self, config: LabelTokConfig) -> bool:
        """Whether a training step scores a sampled label set (`label_sample_size` below the label count)."""
        size = config.label_sample_size
        return self.training and size is not None and size < config.num_labels

    # Tests set this to compare the label pass with the spliced sequence and its isolating 4D mask.
    _splice_isolated_labels: bool = False

    def _uses_label_pass(self, config: LabelTokConfig) -> bool:
        """Isolated labels are scored by the label pass wherever the backbone takes explicit position ids."""
        return (
            config.label_attention == LabelAttention.ISOLATED
            and self.backbone_info.accepts_position_ids
            and not self._splice_isolated_labels
        )

    def _label_chunks(self, config: LabelTokConfig, label_ids: torch.Tensor | None = None) -> list:
        """Which labels each backbone call scores: slices of all labels, or pieces of `label_ids` when given."""
        chunk = config.label_chunk_size or config.num_labels
        if label_ids is not None:
            return list(label_ids.split(chunk))
        return [slice(start, min(start + chunk, config.num_labels)) for start in range(0, config.num_labels, chunk)]

    def _check_position_limit(self, last_position: int) -> None:
        info = self.backbone_info
        if info.max_positions is not None and last_position >= info.max_positions:
            raise ValueError(
                f"The batch needs position {last_position} but the backbone has {info.max_positions} positions: "
                f"truncate texts to at most {self.max_text_length()} tokens (max_length) or use "
                "label_positions='shared'."
            )

    def _spliced_hidden_states(self, config, text_embeds, attention_mask, table, token_type_ids):
        """Yields `(label_slice, [batch, chunk, hidden])`: text and each chunk of labels in one spliced sequence."""
        if config.label_attention == LabelAttention.ISOLATED:
            check_attention_implementation(self.base_model.config)
        for label_slice in self._label_chunks(config):
            hidden = self._label_hidden_states(
                config, text_embeds, attention_mask, table[label_slice], label_slice.start, token_type_ids
            )
            yield label_slice, hidden

    def _label_pass_hidden_states(self, config, text_embeds, attention_mask, table, token_type_ids, label_ids=None):
        """Yields `(label_index, [batch, chunk, hidden])` from one text pass and one label call per chunk.

        With `config.label_layers = n` below the backbone's depth, each label call runs the label rows through the
        last n layers only (late_injection.py); the text pass is the same full pass.

        Args:
            config: the active adapter's config (isolated attention).
            text_embeds: `[batch, seq_len, hidden]` input embeddings of the text.
            attention_mask: `[batch, seq_len]` 1 for real tokens, 0 for padding.
            table: `[num_labels, hidden]` the adapter's label table.
            token_type_ids: `[batch, seq_len]` optional segment ids (labels get segment 0).
            label_ids: `[set_size]` the labels to score (a training step's sampled set), or `None` for all.
        """
        info = self.backbone_info
        base_config = self.base_model.config
        name = check_attention_implementation(base_config)
        late = self._late_layers(config)
        batch_size = text_embeds.shape[0]
        mask = attention_mask.to(device=text_embeds.device, dtype=torch.long)
        insert_at = insertion_indices(mask, self._after_last_token(config))
        shared = config.label_positions == LabelPositions.SHARED
        text_positions, all_label_positions = label_token_positions(
            mask, insert_at, config.num_labels, shared_positions=shared
        )
        self._check_position_limit(int(torch.cat([text_positions, all_label_positions], dim=1).max()))
        state = LabelPassState(text_positions=text_positions, text_real=mask.bool())
        text_inputs: dict[str, Any] = {"inputs_embeds": text_embeds, "attention_mask": mask}
        text_inputs["position_ids"] = text_positions + info.position_offset
        use_token_types = token_type_ids is not None and info.accepts_token_type_ids
        if use_token_types:
            text_inputs["token_type_ids"] = token_type_ids.to(text_embeds.device)
        if info.is_causal:
            text_inputs["use_cache"] = False
        run_pass(self.backbone, base_config, name, state, "text", **text_inputs)
        for label_index in self._label_chunks(config, label_ids):
            rows = table[label_index].to(text_embeds.dtype)[None].expand(batch_size, -1, -1)
            num_rows = rows.shape[1]
            state.label_positions = all_label_positions[:, label_index]
            label_inputs: dict[str, Any] = {
                "inputs_embeds": rows,
                "attention_mask": torch.ones(batch_size, num_rows, dtype=torch.long, device=text_embeds.device),
                "position_ids": state.label_positions + info.position_offset,
            }
            if use_token_types:
                label_inputs["token_type_ids"] = torch.zeros_like(label_inputs["attention_mask"])
            if info.is_causal:
                label_inputs["use_cache"] = False
            with inject_at(self.base_model, late, rows) if late else contextlib.nullcontext():
                label_hidden = run_pass(self.backbone, base_config, name, state, "labels", **label_inputs)
            yield label_index, label_hidden

    def _late_layers(self, config: LabelTokConfig) -> int | None:
        """`config.label_layers` when it is below the backbone's depth (late injection), else `None`."""
        depth = num_layers(self.base_model)
        if config.label_layers is None or depth is None or config.label_layers >= depth:
            return None
        return config.label_layers

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
        self._check_position_limit(int(spliced.position_ids.max()) - info.position_offset)
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
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
        )

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs: Any) -> None:
        """Turns on the backbone's gradient checkpointing (called by `Trainer` for `gradient_checkpointing=True`).

        Checkpointing is non-reentrant unless `use_reentrant=True` is asked for. Isolated attention (the label pass)
        refuses reentrant checkpointing at forward time: its layers run without gradients, so the text keys/values the
        labels attend to would carry none. With full attention the spliced `inputs_embeds` require grad through the
        label rows, so both kinds work with a frozen backbone.

        Args:
            gradient_checkpointing_kwargs: passed to `torch.utils.checkpoint.checkpoint` (e.g. `use_reentrant`);
                `{"use_reentrant": False}` when omitted.
            kwargs: further options of newer transformers (`every_n_layers`, `offload`), passed to the backbone.
        """
        if gradient_checkpointing_kwargs is None:
            gradient_checkpointing_kwargs = {"use_reentrant": False}
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
            batch_size: texts per forward pass (at least 1).
            threshold: multi-label only: probability at or above which a label is predicted, in [0, 1]; one value,
                or one per label (a list in label order or a dict keyed by label name).
            max_length: truncate texts to this many tokens (default: what fits beside the labels, at most 512).

        Returns:
            One dict per text. Single-label: `{"label", "score", "scores"}`; multi-label: `{"labels", "scores"}`, where
            `scores` maps every label to its probability.
        """
        if self.tokenizer is None:
            raise ValueError(
                "predict() needs a tokenizer: pass tokenizer=... to get_labeltok_model or from_pretrained."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
        single = isinstance(texts, str)
        texts = validate_texts([texts] if single else texts)
        config = self.labeltok_config
        thresholds = _threshold_vector(threshold, config)
        max_length = resolve_max_length(self, max_length, self.tokenizer, flag="max_length")
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
                probabilities = probabilities_from_logits(logits.float().cpu().numpy(), config.is_multi_label)
                results += prediction_rows(probabilities, config.labels, config.is_multi_label, thresholds)
        finally:
            self.train(was_training)
        return results[0] if single else results


def _threshold_vector(threshold: float | dict[str, float] | list[float] | None, config: LabelTokConfig) -> list[float]:
    """One checked threshold per label of `config` (see `decoding.resolve_thresholds`)."""
    return resolve_thresholds(threshold, config.labels, source="threshold")


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
