"""An AdamW optimizer with its own learning rates for the label table and the head, and lazy per-label rows."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

PER_LABEL_ROWS = "per_label_rows"
"""Parameter-group key: the group's tensors hold one row per label along dim 0 (`keep_untouched_label_rows`)."""


def adapter_parameter_groups(
    model: nn.Module,
    learning_rate: float,
    label_learning_rate: float | None = None,
    head_learning_rate: float | None = None,
    weight_decay: float = 0.0,
) -> list[dict]:
    """Splits a `LabelTokModel`'s trainable parameters into optimizer groups.

    Label rows are soft-prompt-like embeddings and learn best with a much larger rate than LoRA weights (see the
    measurements in BENCHMARKS.md), so they get their own group. Weight decay never applies to the label table, to
    biases or to the residual head's per-label weights (so `train_only_labels` leaves other labels' rows bitwise).
    The groups of per-label tensors (the table, the head's `label_weight` and `label_bias`) carry
    `PER_LABEL_ROWS: True`, which `keep_untouched_label_rows` reads.

    Args:
        model: a `LabelTokModel` (or a module wrapping one, such as DDP).
        learning_rate: rate of the LoRA weights (and of the labels when their rate is not given).
        label_learning_rate: rate of the label table; defaults to `learning_rate`.
        head_learning_rate: rate of the head; defaults to the label table's rate (the task's new parameters learn
            at one rate, the fair protocol of BENCHMARKS.md; with labels in the last layer only a head at the LoRA
            rate learns too slowly: 0.897 accuracy against 0.964 on the README's main job).
        weight_decay: decoupled weight decay of LoRA and head weights.

    Returns:
        A list of parameter-group dicts for `torch.optim.AdamW`, with empty groups left out.
    """
    label_lr = learning_rate if label_learning_rate is None else label_learning_rate
    head_lr = label_lr if head_learning_rate is None else head_learning_rate
    groups = {
        "labels": {"params": [], "lr": label_lr, "weight_decay": 0.0, PER_LABEL_ROWS: True},
        "head_per_label": {"params": [], "lr": head_lr, "weight_decay": 0.0, PER_LABEL_ROWS: True},
        "head": {"params": [], "lr": head_lr, "weight_decay": weight_decay},
        "head_no_decay": {"params": [], "lr": head_lr, "weight_decay": 0.0},
        "lora": {"params": [], "lr": learning_rate, "weight_decay": weight_decay},
    }
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if "label_tables." in name:
            groups["labels"]["params"].append(parameter)
        elif "heads." in name:
            # per-label head rows decay no more than table rows; a temperature is not a weight to shrink
            if name.endswith(("label_weight", "label_bias")):
                groups["head_per_label"]["params"].append(parameter)
            else:
                no_decay = name.endswith(("bias", "cosine_scale"))
                groups["head_no_decay" if no_decay else "head"]["params"].append(parameter)
        else:
            groups["lora"]["params"].append(parameter)
    return [dict(group, name=name) for name, group in groups.items() if group["params"]]


def keep_untouched_label_rows(optimizer: torch.optim.Optimizer) -> tuple[RemovableHandle, RemovableHandle]:
    """Makes `optimizer` lazy on per-label rows: a row whose gradient is exactly zero keeps its value and its state.

    With `label_sample_size=k` a training step scores only the sampled labels, so every other label's rows (its
    table row, its `label_weight` row and `label_bias`) get a zero gradient. Adam and AdamW would still move them,
    and too far: the first moment carries a row's last gradient on for tens of steps, and the second moment
    averages mostly zeros, so a label scored in one step of n moves about sqrt(n) times as far per gradient as a
    label scored in every step (n is about 25 with 1,632 labels and 64 scored per step). This keeps
    those rows, and every state tensor of their shape (`exp_avg`, `exp_avg_sq`, ...), as they were before the step,
    which is the lazy (sparse) Adam update: a row moves only in steps that score it. Dense training is unchanged,
    since every row then has a nonzero gradient.

    Applies to the parameter groups marked `PER_LABEL_ROWS` (see `adapter_parameter_groups`); dim 0 of each tensor
    is its rows (a flattened 1-D tensor, as FSDP shards them, is lazy per entry). Works with any `torch.optim`
    optimizer whose per-parameter state tensors have the parameter's shape; other state (Adafactor's factored
    moments) is left to the optimizer. Gradient accumulation, clipping and DDP keep a scored row's gradient nonzero.
    Each step copies the unscored rows and their state aside and back (at most three times the table's size).

    Args:
        optimizer: a `torch.optim.Optimizer` built from `adapter_parameter_groups`.

    Returns:
        The handles of the step pre- and post-hooks; `handle.remove()` on both turns the behaviour off.
    """
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]] = []

    def remember_untouched_rows(opt: torch.optim.Optimizer, args, kwargs) -> None:
        kept.clear()
        for group in opt.param_groups:
            if not group.get(PER_LABEL_ROWS):
                continue
            for parameter in group["params"]:
                if parameter.grad is None or parameter.grad.is_sparse or parameter.dim() == 0:
                    continue
                gradient = parameter.grad.reshape(parameter.shape[0], -1)
                rows = gradient.eq(0).all(dim=1).nonzero().flatten()  # [untouched rows]
                if rows.numel() == 0:
                    continue
                state = {
                    key: value.index_select(0, rows)
                    for key, value in opt.state.get(parameter, {}).items()
                    if torch.is_tensor(value) and value.shape == parameter.shape
                }
                kept.append((parameter, rows, parameter.detach().index_select(0, rows), state))

    @torch.no_grad()
    def restore_untouched_rows(opt: torch.optim.Optimizer, args, kwargs) -> None:
        for parameter, rows, values, state in kept:
            parameter.index_copy_(0, rows, values)
            for key, value in state.items():
                opt.state[parameter][key].index_copy_(0, rows, value)
        kept.clear()

    return (
        optimizer.register_step_pre_hook(remember_untouched_rows),
        optimizer.register_step_post_hook(restore_untouched_rows),
    )


def create_optimizer(
    model: nn.Module,
    learning_rate: float,
    label_learning_rate: float | None = None,
    head_learning_rate: float | None = None,
    weight_decay: float = 0.0,
    lazy_label_rows: bool = True,
) -> torch.optim.AdamW:
    """AdamW over `adapter_parameter_groups`; pass it to `Trainer(optimizers=(optimizer, None))`.

    `Trainer` then builds its usual scheduler (warm-up, decay) on top; each group's rate is scaled by the schedule.

    Args:
        model, learning_rate, label_learning_rate, head_learning_rate, weight_decay: as for
            `adapter_parameter_groups`.
        lazy_label_rows: apply `keep_untouched_label_rows` (labels not scored in a step keep their rows and state;
            what sampled labels need, and a no-op when every label is scored).
    """
    groups = adapter_parameter_groups(model, learning_rate, label_learning_rate, head_learning_rate, weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=learning_rate)
    if lazy_label_rows:
        keep_untouched_label_rows(optimizer)
    return optimizer
