"""The open label set: adding labels to, and removing labels from, a (trained) adapter without retraining.

A label is a row of the adapter's label table read by one head shared by every label, so a new label needs only a new
row: it starts where a label of that name would have started when the adapter was created (the adapter's
`label_init` rule, from the label's name or description), and the head and the LoRA weights stay as they were.
Whether the trained adapter then scores the new label well is a question of transfer, measured in
`recipes/benchmarks/zero_shot.py`; this module only makes the operation exact and safe:

- the rows of the labels kept are copied bitwise; the new rows are exactly `initial_label_table(extended config)`
  at the new labels' indices (with late injection, hidden states of layer L-n, as at creation);
- with a per-label bias, new labels start at the mean of the existing biases: the bias is a learned prior per label,
  and the mean is the prior of a typical label, where 0 would be an arbitrary value on the trained biases' scale
  (only differences matter to a softmax; a sigmoid reads 0 as probability 1/2, rarely the typical prior);
- with the residual head (`head_type="residual"`), new labels' weight vectors start at zero: a new label is scored by
  the shared head alone until its own weights are trained;
- every check (names, descriptions, the position budget, the new rows) runs before the model changes, so a failed
  call leaves the model bitwise as it was;
- the label table stays one `nn.Parameter`, replaced by a new one with the same `requires_grad` (and so are the
  per-label head parameters). An optimizer built before the call still holds the old Parameter: build a new
  optimizer (a new `Trainer`) after changing the label set. A `Trainer` checkpoint of the old label set no longer resumes into the
  model (its fingerprint lists the labels), and multi-label thresholds tuned for the old label set no longer apply.

`train_only_labels` then fine-tunes the new rows alone on a few examples: every other parameter is frozen and a
gradient hook zeroes the other rows, so the old labels' rows stay bitwise as they were.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .config import LabelTokConfig
from .label_init import initial_label_table

logger = logging.getLogger(__name__)


def _label_names(names: str | Sequence[str], what: str) -> list[str]:
    """The requested names as a list (one string is one label), checked for type, emptiness and repeats."""
    if isinstance(names, str):
        names = [names]
    if isinstance(names, bytes) or not isinstance(names, Sequence):
        raise TypeError(f"{what} takes a list of label names; got {type(names).__name__}.")
    names = list(names)
    if not names:
        raise ValueError(f"{what} got no label names; pass at least one.")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{what}: label names must be non-empty strings; got {name!r}.")
    seen: set[str] = set()
    repeated = sorted({name for name in names if name in seen or seen.add(name)})
    if repeated:
        raise ValueError(f"{what} got the label(s) {repeated} more than once; give each label once.")
    return names


def _new_descriptions(
    config: LabelTokConfig, names: list[str], descriptions: Mapping[str, str] | None
) -> dict[str, str] | None:
    """The adapter's descriptions plus those of the new labels (`None` when there are none at all)."""
    merged = dict(config.label_descriptions or {})
    if descriptions is None:
        return merged or None
    if not isinstance(descriptions, Mapping):
        raise TypeError(f"descriptions must be a dict of label name -> text; got {type(descriptions).__name__}.")
    others = sorted(set(descriptions) - set(names), key=str)
    if others:
        raise ValueError(
            f"descriptions has keys {others} that are not among the labels being added {names}; descriptions of "
            "existing labels cannot change here (their rows were initialised and trained from the old text)."
        )
    empty = sorted(name for name, text in descriptions.items() if not isinstance(text, str) or not text.strip())
    if empty:
        raise ValueError(
            f"descriptions of {empty} are empty or not strings; give each a short text, or leave the label out of "
            "descriptions to initialise it from its name."
        )
    merged.update(descriptions)
    return merged


def _new_rows(model, config: LabelTokConfig, first_new: int) -> torch.Tensor:
    """`[num_new, hidden]` fp32: the rows `initial_label_table(config)` gives the labels from index `first_new` on.

    The whole extended table is computed and the new rows taken, so the new rows are exactly what the adapter's init
    gives these labels at these indices ('random' continues the seeded stream, late injection batches the texts as at
    creation), with no special case per init. With late injection the init runs the backbone with LoRA switched off
    (`label_init.layer_label_text_rows`); PEFT's switch resets `requires_grad` of LoRA weights, so every flag is put
    back as it was.
    """
    trainable = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    try:
        full = initial_label_table(config, model.base_model.get_input_embeddings(), model.tokenizer, model.backbone)
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(trainable[name])
    return full[first_new:]


# Head parameters with one entry per label along dim 0 (None when the adapter's head has no such term).
PER_LABEL_HEAD_PARAMETERS = ("label_bias", "label_weight")


def per_label_head_parameters(head: nn.Module) -> dict[str, nn.Parameter]:
    """The head's per-label parameters by attribute name: the bias (`[num_labels]`), the residual weights."""
    found = {name: getattr(head, name, None) for name in PER_LABEL_HEAD_PARAMETERS}
    return {name: parameter for name, parameter in found.items() if parameter is not None}


def _swap_in(
    model,
    adapter_name: str,
    config: LabelTokConfig,
    table: torch.Tensor,
    per_label: dict[str, torch.Tensor],
    anchor: torch.Tensor,
):
    """Replaces the adapter's config, label table, its anchor rows (`label_anchor_weight`) and per-label head
    parameters (each keeps its `requires_grad`)."""
    old_table = model.label_tables[adapter_name]
    head = model.heads[adapter_name]
    old_head = per_label_head_parameters(head)
    old_config = model.labeltok_configs[adapter_name]
    old_anchor = model.label_anchors[adapter_name]
    try:
        model.label_tables[adapter_name] = nn.Parameter(table, requires_grad=old_table.requires_grad)
        for name, value in per_label.items():
            setattr(head, name, nn.Parameter(value, requires_grad=old_head[name].requires_grad))
        model.labeltok_configs[adapter_name] = config
        model.label_anchors[adapter_name] = anchor
    except BaseException:
        model.label_tables[adapter_name] = old_table
        for name, parameter in old_head.items():
            setattr(head, name, parameter)
        model.labeltok_configs[adapter_name] = old_config
        model.label_anchors[adapter_name] = old_anchor
        raise


def add_labels(
    model,
    names: str | Sequence[str],
    descriptions: Mapping[str, str] | None = None,
    adapter_name: str | None = None,
) -> None:
    """Appends labels to an adapter: new rows from the adapter's `label_init` rule; head and LoRA untouched.

    Args:
        model: a `LabelTokModel`.
        names: the new label names (one string is one label); they get logits `num_labels ... num_labels + m - 1`.
        descriptions: optional text per new label (name -> text), used by `label_init='label_text'` instead of the
            name and stored in the config; labels left out start from their name.
        adapter_name: the adapter to extend; the active one by default.

    Raises:
        ValueError: no names, a name given twice or already a label, a description that is empty or belongs to
            no new label, or labels that no longer fit the backbone's positions (`label_positions='sequential'`).
            The model is left unchanged.
    """
    adapter_name = adapter_name or model._require_active()
    model._require_adapter(adapter_name)
    config = model.labeltok_configs[adapter_name]
    names = _label_names(names, "add_labels")
    existing = sorted(set(names) & set(config.labels))
    if existing:
        raise ValueError(
            f"add_labels: {existing} are already labels of adapter {adapter_name!r}; add only new names "
            "(remove_labels first to re-initialise a label)."
        )
    new_config = dataclasses.replace(
        copy.deepcopy(config),
        labels=config.labels + names,
        label_descriptions=_new_descriptions(config, names, descriptions),
    )
    model._check_positions(new_config)
    old_table = model.label_tables[adapter_name]
    new_rows = _new_rows(model, new_config, config.num_labels).to(old_table.device, old_table.dtype)
    table = torch.cat([old_table.detach(), new_rows]).clone()
    per_label = {}
    for name, parameter in per_label_head_parameters(model.heads[adapter_name]).items():
        old = parameter.detach()
        start = old.mean(dim=0, keepdim=True) if name == "label_bias" else torch.zeros_like(old[:1])
        per_label[name] = torch.cat([old, start.expand(len(names), *old.shape[1:])]).clone()
    anchor = torch.cat([model.label_anchors[adapter_name].to(new_rows.device), new_rows])
    _swap_in(model, adapter_name, new_config, table, per_label, anchor)
    if "label_weight" in per_label:
        logger.warning(
            "add_labels: adapter %r has the residual head, whose trained labels have their own weight vectors; the new "
            "labels %s start at zero and rarely outscore them (measured on WordNet lexnames: 0.03 accuracy on the new "
            "labels' rows, against 0.48 with head_type='linear'). Fine-tune them on a few examples with "
            "model.train_only_labels(...), or train adapters meant for labels added by name with head_type='linear'.",
            adapter_name,
            names,
        )


def remove_labels(model, names: str | Sequence[str], adapter_name: str | None = None) -> None:
    """Removes labels from an adapter; the other labels keep their rows (bitwise), order, biases and descriptions.

    Args:
        model: a `LabelTokModel`.
        names: the labels to remove (one string is one label).
        adapter_name: the adapter to change; the active one by default.

    Raises:
        ValueError: no names, a name given twice, a name that is not a label, or fewer than two labels left. The
            model is left unchanged.
    """
    adapter_name = adapter_name or model._require_active()
    model._require_adapter(adapter_name)
    config = model.labeltok_configs[adapter_name]
    names = _label_names(names, "remove_labels")
    unknown = sorted(set(names) - set(config.labels))
    if unknown:
        raise ValueError(
            f"remove_labels: {unknown} are not labels of adapter {adapter_name!r}; its labels: {config.labels}."
        )
    keep = [index for index, label in enumerate(config.labels) if label not in set(names)]
    if len(keep) < 2:
        raise ValueError(
            f"remove_labels: removing {names} would leave {len(keep)} label(s) in adapter {adapter_name!r}; an "
            "adapter needs at least two (for a yes/no task keep two labels such as 'no' and 'yes')."
        )
    labels = [config.labels[index] for index in keep]
    descriptions = {label: text for label, text in (config.label_descriptions or {}).items() if label in labels}
    new_config = dataclasses.replace(copy.deepcopy(config), labels=labels, label_descriptions=descriptions or None)
    model._check_positions(new_config)
    old_table = model.label_tables[adapter_name]
    index = torch.tensor(keep, dtype=torch.long, device=old_table.device)
    table = old_table.detach().index_select(0, index)
    per_label = {
        name: parameter.detach().index_select(0, index.to(parameter.device))
        for name, parameter in per_label_head_parameters(model.heads[adapter_name]).items()
    }
    anchor = model.label_anchors[adapter_name].to(index.device).index_select(0, index)
    _swap_in(model, adapter_name, new_config, table, per_label, anchor)


class TrainableLabelRows:
    """What `train_only_labels` changed, with `remove()` to undo it; also a context manager that removes on exit.

    Attributes:
        names: the labels whose rows train.
        indices: their indices in the label table.
        adapter_name: the adapter whose label table is masked.
    """

    def __init__(self, names: list[str], indices: list[int], adapter_name: str, flags, hooks) -> None:
        self.names = names
        self.indices = indices
        self.adapter_name = adapter_name
        self._flags = flags  # [(parameter, requires_grad before the call)] for every parameter of the model
        self._hooks = hooks

    def remove(self) -> None:
        """Removes the gradient masks and restores every parameter's previous `requires_grad` (idempotent)."""
        for hook in self._hooks:
            hook.remove()
        for parameter, flag in self._flags:
            parameter.requires_grad_(flag)
        self._hooks, self._flags = [], []

    def __enter__(self) -> TrainableLabelRows:
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()


def _row_mask_hook(keep: torch.Tensor):
    """A tensor hook that zeroes the gradient of every row not in `keep` (`[num_labels]` bool), NaN included."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        mask = keep.to(grad.device).view(-1, *([1] * (grad.dim() - 1)))
        return torch.where(mask, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))

    return hook


def train_only_labels(model, names: str | Sequence[str], train_head: bool = False) -> TrainableLabelRows:
    """Makes only the named labels' rows of the active adapter's label table trainable (few-shot for new labels).

    Every parameter of the model is frozen except the label table (and the head with `train_head`); a hook on the
    table zeroes the gradient of every other row, so an optimizer built afterwards leaves them bitwise unchanged as
    long as it moves nothing with a zero gradient: `optim.create_optimizer` and `LabelTokTrainer` keep such rows and
    their state whatever the optimizer's history (`optim.keep_untouched_label_rows`); a plain Adam/AdamW does so only
    with fresh state and no weight decay on the table and the per-label bias (decoupled decay shrinks a weight
    whatever its gradient). Per-label head parameters (bias, residual weights) follow the rows: the named labels'
    entries train (also without `train_head`), the others are masked the same way. The hooks sit on the current
    Parameters: call this after `add_labels` / `remove_labels`, which replace them.

    Args:
        model: a `LabelTokModel`.
        names: labels of the active adapter whose rows train (one string is one label).
        train_head: also train the shared head (`score`, and the tied head's scale); the other labels' bias entries
            stay masked.

    Returns:
        A `TrainableLabelRows` handle; `.remove()` (or leaving a `with` block) takes the hooks off and restores
        every parameter's previous `requires_grad`.

    Raises:
        ValueError: no names, a name given twice, or a name that is not a label of the active adapter (the model is
            left unchanged).
    """
    adapter_name = model._require_active()
    labels = model.labeltok_configs[adapter_name].labels
    names = _label_names(names, "train_only_labels")
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise ValueError(
            f"train_only_labels: {unknown} are not labels of the active adapter {adapter_name!r}; its labels: "
            f"{labels}. Add new labels first with add_labels."
        )
    table = model.label_tables[adapter_name]
    head = model.heads[adapter_name]
    keep = torch.zeros(len(labels), dtype=torch.bool)
    indices = [labels.index(name) for name in names]
    keep[indices] = True
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    masked = [table, *per_label_head_parameters(head).values()]
    trainable = {id(parameter) for parameter in masked}
    if train_head:
        trainable |= {id(parameter) for parameter in head.parameters()}
    for parameter, _ in flags:
        parameter.requires_grad_(id(parameter) in trainable)
    hooks = [parameter.register_hook(_row_mask_hook(keep)) for parameter in masked]
    return TrainableLabelRows(names, indices, adapter_name, flags, hooks)
