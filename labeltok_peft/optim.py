"""An AdamW optimizer with its own learning rates for the label table and the head."""

from __future__ import annotations

import torch
from torch import nn


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
        "labels": {"params": [], "lr": label_lr, "weight_decay": 0.0},
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
            no_decay = name.endswith(("bias", "label_weight", "cosine_scale"))
            groups["head_no_decay" if no_decay else "head"]["params"].append(parameter)
        else:
            groups["lora"]["params"].append(parameter)
    return [dict(group, name=name) for name, group in groups.items() if group["params"]]


def create_optimizer(
    model: nn.Module,
    learning_rate: float,
    label_learning_rate: float | None = None,
    head_learning_rate: float | None = None,
    weight_decay: float = 0.0,
) -> torch.optim.AdamW:
    """AdamW over `adapter_parameter_groups`; pass it to `Trainer(optimizers=(optimizer, None))`.

    `Trainer` then builds its usual scheduler (warm-up, decay) on top; each group's rate is scaled by the schedule.
    """
    groups = adapter_parameter_groups(model, learning_rate, label_learning_rate, head_learning_rate, weight_decay)
    return torch.optim.AdamW(groups, lr=learning_rate)
