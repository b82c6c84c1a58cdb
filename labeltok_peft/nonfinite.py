"""Stopping a training run whose loss or weights become non-finite, before anything non-finite is saved.

`StopOnNonFinite` is a `transformers.TrainerCallback`: it works with a plain `Trainer` as well as with
`LabelTokTrainer` (`labeltok train` always uses it):

```python
>>> trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[StopOnNonFinite()])
>>> trainer.train()  # raises NonFiniteTrainingError at the first step whose weights hold NaN or inf
```

Why a callback raises instead of setting `control.should_training_stop`: a stopped Trainer still saves its final
checkpoint and the caller would go on to save the adapter. Raising from `on_step_end` happens before the step's
checkpoint is written, so the checkpoints on disk are the last finite ones, and the caller never reaches its save.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import torch
from torch import nn
from transformers import TrainerCallback

# Logged training values that must stay finite (`eval_*` values are the evaluation's business).
_CHECKED_LOG_KEYS = ("loss", "grad_norm")


class NonFiniteTrainingError(FloatingPointError):
    """A training run produced a NaN or infinite loss or weight and was stopped; nothing non-finite was saved."""


def first_non_finite(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first tensor holding a NaN or inf, or `None` when all are finite.

    One device synchronisation for all tensors when they are finite (the common case).
    """
    named = [(name, tensor) for name, tensor in named_tensors if tensor.is_floating_point()]
    if not named:
        return None
    flags = torch.stack([torch.isfinite(tensor.detach()).all().to(named[0][1].device) for _, tensor in named])
    if bool(flags.all()):
        return None
    return next(name for (name, _), finite in zip(named, flags.tolist(), strict=True) if not finite)


def trainable_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """`(name, parameter)` for every parameter that training changes."""
    return [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]


def _last_checkpoint(output_dir: str | None) -> str | None:
    if not output_dir or not os.path.isdir(output_dir):
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir)


class StopOnNonFinite(TrainerCallback):
    """Raises `NonFiniteTrainingError` as soon as a training loss, gradient norm or trainable weight is NaN or inf.

    Weights are checked after every optimizer step (before that step's checkpoint or log is written); logged
    losses and gradient norms whenever the Trainer logs.

    Args:
        hint: the fix to suggest in the error (default: lower the learning rates).
    """

    def __init__(self, hint: str | None = None) -> None:
        self.hint = hint or (
            "Lower the learning rates (--learning_rate, --label_learning_rate, --head_learning_rate), enable "
            "gradient clipping (--max_grad_norm), or train in fp32."
        )

    def _fail(self, args, state, what: str) -> None:
        checkpoint = _last_checkpoint(getattr(args, "output_dir", None))
        kept = (
            f"The last checkpoint written before it, {checkpoint}, holds finite weights."
            if checkpoint
            else "No checkpoint had been written."
        )
        raise NonFiniteTrainingError(
            f"Training stopped at step {state.global_step}: {what} became non-finite (NaN or inf). Nothing was saved "
            f"from this step on. {kept} {self.hint}"
        )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            name = first_non_finite(trainable_tensors(model))
            if name is not None:
                self._fail(args, state, f"the trainable weight {name!r}")
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in _CHECKED_LOG_KEYS:
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self._fail(args, state, f"the training {key.replace('_', ' ')} ({value})")
        return control
