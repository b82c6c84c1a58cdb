"""Late injection (`label_layers=n`): label rows enter the backbone at layer L-n and run through its last n layers only.

The text still runs through every layer (its pass keeps the keys/values the labels attend to); the label call of the
label pass (label_pass.py) runs the backbone's own forward with its layer list temporarily replaced by one of the same
length in which

- layers 0 .. L-n-1 are stand-ins that return their input unchanged (nothing is computed there),
- layer L-n receives the label rows as its hidden states, whatever its input was,
- layers L-n+1 .. L-1 are the backbone's own.

Everything else is the backbone's own code: rotary or other position embeddings (from the position ids), per-layer
attention types and windows (the list keeps its length, so the loop index still names the right layer), and what
follows the layer stack (Llama's final norm, GPT-2's `ln_f`, ModernBERT's `final_norm`). The embedding stage still runs
on the label rows (a few operations per label: BERT's position/type embeddings and LayerNorm, GPT-2's `wpe`, Gemma's
scaling), but its output only reaches the stand-ins and is then replaced, so it changes nothing; this is what makes the
route family-generic. It needs one `nn.ModuleList` of exactly `num_hidden_layers` layers, each called with the hidden
states as its first argument (or `hidden_states=`) and returning them as a tensor (transformers 5.x); a backbone
without one (ALBERT's shared layer groups, for example) is refused with the fix.

Label rows therefore live in the hidden space of the input of layer L-n (`hidden_states[L - n]` in transformers'
`output_hidden_states` numbering); `layer_input` computes that state for any input, which the 'label_text' init uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def num_layers(model: nn.Module) -> int | None:
    """The backbone's `num_hidden_layers` (`n_layer`/`n_layers` are aliases in their configs), or `None`."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text_config, "num_hidden_layers", None)
    return int(value) if isinstance(value, int) else None


def find_layer_list(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """Finds the backbone's layer stack: the one `nn.ModuleList` holding exactly `num_hidden_layers` modules.

    Args:
        model: the bare transformer (LoRA layers may be injected into it).

    Returns:
        `(parent, attribute, layers)` with `getattr(parent, attribute) is layers`.

    Raises:
        ValueError: when there is no such list or more than one, naming the fix.
    """
    count = num_layers(model)
    found = []
    if count is not None:
        for parent_name, parent in model.named_modules():
            for attribute, child in parent.named_children():
                if isinstance(child, nn.ModuleList) and len(child) == count:
                    found.append((parent_name, parent, attribute, child))
    if len(found) != 1:
        where = [f"{name}.{attribute}".lstrip(".") for name, _, attribute, _ in found]
        raise ValueError(
            f"label_layers needs the backbone's layer stack (one ModuleList of num_hidden_layers={count} layers); "
            f"{type(model).__name__} has {len(found)} such lists {where}. Use label_layers=None (labels through every "
            "layer) with this backbone."
        )
    _, parent, attribute, layers = found[0]
    return parent, attribute, layers


def _hidden_states_argument(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden_states(args: tuple, kwargs: dict[str, Any], hidden: torch.Tensor) -> tuple[tuple, dict[str, Any]]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


class _Forwarding(nn.Module):
    """Answers attribute look-ups it cannot answer itself from the layer it stands for (`attention_type`, ...)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            layer = self.__dict__.get("_layer")
            if layer is None:
                raise
            return getattr(layer, name)


class _Skipped(_Forwarding):
    """Stands for a layer below the injection point: returns its hidden states unchanged, computing nothing."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.__dict__["_layer"] = layer  # not registered: its weights do not run here

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return _hidden_states_argument(args, kwargs)


class _Injected(_Forwarding):
    """Runs layer L-n on the label rows instead of whatever the stand-ins below it passed up."""

    def __init__(self, layer: nn.Module, rows: torch.Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.__dict__["_layer"] = layer
        self.rows = rows

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        arriving = _hidden_states_argument(args, kwargs)
        if arriving.shape != self.rows.shape:
            raise ValueError(
                f"Late injection expected hidden states of shape {tuple(self.rows.shape)} at layer input but the "
                f"backbone passed {tuple(arriving.shape)}; {type(self.layer).__name__} backbones cannot take "
                "label_layers. Use label_layers=None."
            )
        args, kwargs = _with_hidden_states(args, kwargs, self.rows.to(arriving.dtype))
        return self.layer(*args, **kwargs)


@contextlib.contextmanager
def inject_at(model: nn.Module, label_layers: int, rows: torch.Tensor) -> Iterator[None]:
    """Makes the backbone's next forward run `rows` through its last `label_layers` layers only.

    Args:
        model: the bare transformer.
        label_layers: n, with `1 <= n < num_hidden_layers`.
        rows: `[batch, labels, hidden]` hidden states entering layer L-n.
    """
    parent, attribute, layers = find_layer_list(model)
    start = len(layers) - label_layers
    if not 0 < start < len(layers):
        raise ValueError(f"label_layers must lie in 1..{len(layers) - 1} for late injection; got {label_layers}.")
    stand_in = nn.ModuleList(
        [_Skipped(layer) for layer in layers[:start]] + [_Injected(layers[start], rows)] + list(layers[start + 1 :])
    )
    setattr(parent, attribute, stand_in)
    try:
        yield
    finally:
        setattr(parent, attribute, layers)


class _Reached(Exception):
    """Stops a forward once the wanted layer input is captured (the layers above it need not run)."""


def layer_input(model: nn.Module, layer_index: int, **inputs: Any) -> torch.Tensor:
    """The hidden states entering layer `layer_index` for the given backbone inputs (the layers above do not run).

    Args:
        model: the backbone as called (a `PeftModel` or the bare transformer); its layer stack is found in
            `base_model` when it has one.
        layer_index: which layer's input to return (0 is the embedding stage's output).
        inputs: the backbone's keyword arguments (`input_ids`, `attention_mask`, ...).

    Returns:
        `[batch, seq_len, hidden]` hidden states.
    """
    bare = model.get_base_model() if hasattr(model, "get_base_model") else model
    _, _, layers = find_layer_list(bare)
    captured: list[torch.Tensor] = []

    def capture(module, args, kwargs):
        captured.append(_hidden_states_argument(args, kwargs))
        raise _Reached

    handle = layers[layer_index].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        model(**inputs)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"The backbone never called layer {layer_index}; it cannot take label_layers.")
    return captured[0]
