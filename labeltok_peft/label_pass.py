"""The label pass: isolated label tokens scored against one text pass, through transformers' attention interface.

With `label_attention="isolated"` the text never sees the labels, so its hidden states do not depend on them. The
text therefore runs once through the backbone with its ordinary 2D padding mask, and every attention module keeps the
keys and values it computed (after rotary embeddings: exactly what its attention function received). The labels then
run through the backbone in a second call, as a sequence `[batch, num_labels, hidden]` of their own; at every layer
each label attends to the kept text keys plus its own key only. Embeddings, layer norms, MLPs and position handling
are the backbone's own code in both calls, so the label outputs equal those of the spliced sequence with the isolating
4D mask, while the text is computed once for any number of label chunks.

The route: an attention function and a mask function registered under our own names in transformers'
`AttentionInterface` and `AttentionMaskInterface` (registered on first use, not on import). The backbone's
`config._attn_implementation` points at them only during our calls (and during the recomputation of checkpointed
layers). For the text both delegate to the backbone's own sdpa or eager code. The labels' attention is computed here:
on sdpa backbones on a GPU as one SDPA call over the text keys and the labels' own keys with a boolean mask
(`label_attention_sdpa`); elsewhere (CPU, eager backbones, very many labels per call) with each label's own-key
score as a row-wise product (`label_attention`, which costs `labels x seq_len`). Other kernels (flash attention,
flex attention) are refused with the fix. Switching the config is not thread-safe: do not run one backbone from two
threads at once.

Windows: in layers with sliding-window or local attention (Mistral with `sliding_window`, Gemma 2/3 sliding layers,
ModernBERT local layers) a label sees the text keys its own position would see in that layer: with label position `p`
and text position `q`, `p - q < window` in causal layers and `|p - q| < window` in bidirectional ones (the window as
the model passes it to its attention function). The text pass uses the backbone's own masks, windows included.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# Our registered implementation for each attention implementation a backbone may use.
_NAMES = {"sdpa": "labeltok_label_pass_sdpa", "eager": "labeltok_label_pass_eager"}
# The backbone attention implementations the label pass reproduces exactly (and our own names for them).
LABEL_PASS_KERNELS = frozenset(_NAMES) | frozenset(_NAMES.values())
# On sdpa backbones on a GPU the labels' attention is one SDPA call over text + label keys while a call has at most
# this many labels per text key (it scores labels x (seq_len + labels) pairs), and `label_attention` (labels x seq_len)
# beyond. Measured on an H200 (bf16, 12 heads x 64, batch 16 x 256 text keys, forward + backward): SDPA took 0.57x,
# 0.52x and 0.72x the time of `label_attention` at 64, 512 and 2,048 labels, 2.3x at 8,192
# (docs/benchmarks/runs/gpu16/run1_eager_label_attention/label_attention.log).
SDPA_MAX_LABELS_PER_TEXT_KEY = 8
# Devices that take the SDPA call. Not the CPU: there a MiniLM train step with it cost 1.64x / 4.45x / 13.70x the
# peer's against 1.57x / 3.70x / 7.94x with `label_attention` (K = 26 and 128 on 8 x 46 tokens, 512 on 2 x 64): with
# attention dropout CPU SDPA runs its math kernel (docs/benchmarks/runs/gpu16/cpu_label_pass/).
SDPA_LABEL_ATTENTION_DEVICES = frozenset({"cuda"})


@dataclass
class LabelPassState:
    """What the attention function needs during one forward of the label pass.

    Attributes:
        text_positions: `[batch, seq_len]` position ids of the text (without the backbone's position offset).
        text_real: `[batch, seq_len]` True at real text tokens.
        label_positions: `[batch, num_labels]` position ids of the labels of the current chunk.
        kept: per attention module, the text's `(key, value)`, each `[batch, kv_heads, seq_len, head_dim]`.
        masks: text masks of the current chunk's labels, keyed by `(window, causal, num_labels)`.
    """

    text_positions: torch.Tensor
    text_real: torch.Tensor
    label_positions: torch.Tensor | None = None
    kept: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    masks: dict[tuple, torch.Tensor] = field(default_factory=dict)

    def text_mask(self, window: int | None, causal: bool, num_labels: int) -> torch.Tensor:
        """Which text keys each label sees: `[batch, 1, num_labels, seq_len]` bool (every label sees its own key)."""
        key = (window, causal, num_labels)
        if key not in self.masks:
            sees_text = self.text_real[:, None, :].expand(-1, num_labels, -1)  # [batch, labels, seq_len]
            if window is not None:
                distance = self.label_positions[:, :, None] - self.text_positions[:, None, :]
                sees_text = sees_text & ((distance < window) if causal else (distance.abs() < window))
            self.masks[key] = sees_text[:, None]
        return self.masks[key]


# The active pass and its mode ("text": keep keys/values, "labels": attend over them, "recompute": a checkpointed
# text layer runs again in backward and must not replace what the labels used).
_ACTIVE: ContextVar[tuple[LabelPassState, str] | None] = ContextVar("labeltok_label_pass", default=None)


def _module_eager(module: nn.Module) -> Callable:
    """The eager attention function of the module's own modeling file (Gemma's soft-capping, GPT-2's scaling...)."""
    function = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if function is None:
        raise TypeError(
            f"{type(module).__name__} has no eager_attention_forward in its modeling file; load the backbone with "
            "attn_implementation='sdpa' to use label_attention='isolated'."
        )
    return function


def _attention(base: str, module: nn.Module, query, key, value, attention_mask, **kwargs):
    """The registered attention function: the backbone's own sdpa/eager, with the label pass on top.

    Args:
        base: 'sdpa' or 'eager'.
        module: the attention module that calls it.
        query: `[batch, heads, q_len, head_dim]`; key, value: `[batch, kv_heads, kv_len, head_dim]`.
        attention_mask: the mask the backbone built (sdpa: bool, eager: additive float), or `None`.
    """
    underlying = ALL_ATTENTION_FUNCTIONS["sdpa"] if base == "sdpa" else _module_eager(module)
    active = _ACTIVE.get()
    if active is None or active[1] == "recompute":
        return underlying(module, query, key, value, attention_mask, **kwargs)
    state, mode = active
    if mode == "text":
        state.kept[module] = (key, value)
        return underlying(module, query, key, value, attention_mask, **kwargs)
    if module not in state.kept:
        raise RuntimeError(
            f"The label pass reached {type(module).__name__} without keys/values from the text pass; the text and "
            "the labels must run through the same modules."
        )
    text_key, text_value = state.kept[module]
    sees_text = state.text_mask(kwargs.get("sliding_window"), bool(getattr(module, "is_causal", True)), query.shape[2])
    if (
        base == "sdpa"
        and query.device.type in SDPA_LABEL_ATTENTION_DEVICES
        and query.shape[2] <= SDPA_MAX_LABELS_PER_TEXT_KEY * text_key.shape[2]
    ):
        return label_attention_sdpa(module, query, key, value, text_key, text_value, sees_text, **kwargs)
    return label_attention(module, query, key, value, text_key, text_value, sees_text, **kwargs)


def _refuse_unsupported(module: nn.Module, kwargs: dict[str, Any]) -> None:
    unsupported = sorted(name for name in ("s_aux", "sinks", "position_bias") if kwargs.get(name) is not None)
    if unsupported:
        raise ValueError(
            f"The label pass does not implement attention with {unsupported}; use label_attention='full' on "
            f"{type(module).__name__}."
        )


def label_attention_sdpa(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    text_key: torch.Tensor,
    text_value: torch.Tensor,
    sees_text: torch.Tensor,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The labels' attention as one `scaled_dot_product_attention` call over the text keys followed by the label keys.

    The boolean mask is `sees_text` for the text keys and the identity for the label keys, so each label sees its own
    key and no other label's: the same attention as `label_attention`, in one fused kernel (grouped-query attention,
    dropout and the kernel choice are transformers' sdpa code). It scores `labels x (seq_len + labels)` pairs, so it is
    used on `SDPA_LABEL_ATTENTION_DEVICES` while `labels <= SDPA_MAX_LABELS_PER_TEXT_KEY x seq_len`; other calls go
    to `label_attention`.

    Args:
        module: the attention module (for `num_key_value_groups`).
        query: `[batch, heads, labels, head_dim]` label queries.
        key, value: `[batch, kv_heads, labels, head_dim]` the labels' own keys and values.
        text_key, text_value: `[batch, kv_heads, seq_len, head_dim]` kept from the text pass.
        sees_text: `[batch, 1, labels, seq_len]` True where a label may attend to a text key.
        scaling: score scale (default `head_dim ** -0.5`).
        dropout: attention dropout probability (the module passes 0 outside training).

    Returns:
        `([batch, labels, heads, head_dim], None)`, as transformers' attention functions return.
    """
    _refuse_unsupported(module, kwargs)
    num_labels = query.shape[2]
    own_key = torch.eye(num_labels, dtype=torch.bool, device=query.device).expand(sees_text.shape[0], 1, -1, -1)
    mask = torch.cat([sees_text, own_key], dim=-1)  # [batch, 1, labels, seq_len + labels]
    keys = torch.cat([text_key.to(key.dtype), key], dim=2)
    values = torch.cat([text_value.to(value.dtype), value], dim=2)
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    return sdpa(module, query, keys, values, mask, dropout=dropout, scaling=scaling, is_causal=False)


def label_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    text_key: torch.Tensor,
    text_value: torch.Tensor,
    sees_text: torch.Tensor,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of every label over the text keys it may see plus its own key, and no other label's.

    The label-to-label block would be `[labels, labels]` with only its diagonal used, so the own-key score is a
    row-wise dot product instead: the cost grows with `labels x seq_len`, not `labels x (seq_len + labels)`. Scores,
    soft-capping, masking, softmax (fp32) and dropout follow the eager attention of transformers.

    Args:
        module: the attention module (for `num_key_value_groups` and `training`).
        query: `[batch, heads, labels, head_dim]` label queries.
        key, value: `[batch, kv_heads, labels, head_dim]` the labels' own keys and values.
        text_key, text_value: `[batch, kv_heads, seq_len, head_dim]` kept from the text pass.
        sees_text: `[batch, 1, labels, seq_len]` True where a label may attend to a text key.
        scaling: score scale (default `head_dim ** -0.5`).
        dropout: attention dropout probability.
        softcap: Gemma-2-style logit soft-capping, or `None`.

    Returns:
        `([batch, labels, heads, head_dim], None)`, as transformers' attention functions return.
    """
    _refuse_unsupported(module, kwargs)
    groups = query.shape[1] // text_key.shape[1]
    if groups > 1:  # grouped-query attention: every key/value head serves `groups` query heads
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        text_key, text_value = text_key.repeat_interleave(groups, dim=1), text_value.repeat_interleave(groups, dim=1)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    text_scores = torch.matmul(query, text_key.transpose(-1, -2).to(query.dtype)) * scaling  # [b, h, labels, seq]
    own_scores = (query * key.to(query.dtype)).sum(dim=-1, keepdim=True) * scaling  # [b, h, labels, 1]
    if softcap is not None:
        text_scores = torch.tanh(text_scores / softcap) * softcap
        own_scores = torch.tanh(own_scores / softcap) * softcap
    text_scores = text_scores.masked_fill(~sees_text, torch.finfo(text_scores.dtype).min)
    probabilities = torch.softmax(torch.cat([text_scores, own_scores], dim=-1), dim=-1, dtype=torch.float32)
    probabilities = nn.functional.dropout(probabilities.to(query.dtype), p=dropout, training=module.training)
    seq_len = text_key.shape[2]
    output = torch.matmul(probabilities[..., :seq_len], text_value.to(query.dtype))
    output = output + probabilities[..., seq_len:] * value.to(query.dtype)
    return output.transpose(1, 2).contiguous(), None


def _mask(base: str, *args, **kwargs):
    """The registered mask function: the backbone's own sdpa/eager mask for the text, none for the labels."""
    active = _ACTIVE.get()
    if active is not None and active[1] == "labels":
        return None  # the attention function builds the label mask itself
    return (sdpa_mask if base == "sdpa" else eager_mask)(*args, **kwargs)


def _register() -> None:
    for base, name in _NAMES.items():
        if name not in ALL_ATTENTION_FUNCTIONS:
            AttentionInterface.register(name, functools.partial(_attention, base))
            AttentionMaskInterface.register(name, functools.partial(_mask, base))


def check_attention_implementation(config) -> str:
    """Returns our registered name for the backbone's attention implementation, or raises with the fix.

    Raises:
        ValueError: for flash attention, flex attention and any other kernel the label pass cannot reproduce.
    """
    _register()
    implementation = config._attn_implementation or "eager"
    if implementation in _NAMES.values():
        return implementation
    if implementation not in _NAMES:
        raise ValueError(
            f"label_attention='isolated' runs on sdpa or eager attention, but this backbone uses "
            f"attn_implementation={implementation!r}. Load it with attn_implementation='sdpa' "
            "(AutoModel.from_pretrained(..., attn_implementation='sdpa')) or switch it with "
            "backbone.set_attn_implementation('sdpa'); or use label_attention='full'."
        )
    return _NAMES[implementation]


@contextlib.contextmanager
def _dispatch(config, name: str, state: LabelPassState, mode: str) -> Iterator[None]:
    original = config._attn_implementation
    token = _ACTIVE.set((state, mode))
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = original
        _ACTIVE.reset(token)


def _checkpointed_modules(model: nn.Module) -> list[nn.Module]:
    return [
        module
        for module in model.modules()
        if getattr(module, "gradient_checkpointing", False) and hasattr(module, "_gradient_checkpointing_func")
    ]


@contextlib.contextmanager
def _checkpoint_recompute(model: nn.Module, config, name: str, state: LabelPassState, mode: str) -> Iterator[None]:
    """Makes checkpointed layers recompute under the same attention function and mode as their forward.

    Non-reentrant checkpointing re-runs a layer during backward, after our call has restored the backbone's attention
    implementation: a `context_fn` puts ours back for the recomputation. Reentrant checkpointing runs layers without
    gradients, so the kept text keys/values would carry none: it is refused.
    """
    modules = _checkpointed_modules(model) if model.training and torch.is_grad_enabled() else []
    originals = {}
    recompute_mode = "recompute" if mode == "text" else mode
    for module in modules:
        function = module._gradient_checkpointing_func
        options = getattr(function, "keywords", {})
        if options.get("use_reentrant", True) is not False:
            raise ValueError(
                "label_attention='isolated' does not work with reentrant gradient checkpointing (the layers run "
                "without gradients, so the text keys/values the labels attend to would carry none). Enable it with "
                "model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})."
            )
        user_context = options.get("context_fn")

        def context_fn(user_context=user_context):
            forward_context, recompute_context = user_context() if user_context else (None, None)

            @contextlib.contextmanager
            def recompute() -> Iterator[None]:
                with recompute_context or contextlib.nullcontext(), _dispatch(config, name, state, recompute_mode):
                    yield

            return forward_context or contextlib.nullcontext(), recompute()

        originals[module] = function
        module._gradient_checkpointing_func = functools.partial(function, context_fn=context_fn)
    try:
        yield
    finally:
        for module, function in originals.items():
            module._gradient_checkpointing_func = function


def run_pass(model: nn.Module, config, name: str, state: LabelPassState, mode: str, **inputs: Any) -> torch.Tensor:
    """Runs one backbone call of the label pass and returns its last hidden state.

    Args:
        model: the backbone as called (a `PeftModel` or the bare transformer).
        config: the bare transformer's config.
        name: our registered attention implementation (see `check_attention_implementation`).
        state: the state shared by the text call and the label calls of one forward.
        mode: 'text' (keep keys/values) or 'labels' (attend over them; set `state.label_positions` first).
        inputs: the backbone's keyword arguments (`inputs_embeds`, `attention_mask`, `position_ids`, ...).

    Returns:
        `[batch, length, hidden]` last hidden state.
    """
    if mode == "labels":
        state.masks.clear()
    with _checkpoint_recompute(model, config, name, state, mode), _dispatch(config, name, state, mode):
        return model(**inputs)[0]
