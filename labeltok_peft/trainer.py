"""A `transformers.Trainer` that builds the label-token optimizer groups itself, so it works under FSDP/DeepSpeed."""

from __future__ import annotations

import logging

import torch
from transformers import Trainer

from .optim import adapter_parameter_groups

logger = logging.getLogger(__name__)


class LabelTokTrainer(Trainer):
    """`Trainer` whose optimizer gives the label table (and optionally the head) its own learning rate.

    Passing `optimizers=(create_optimizer(model, ...), None)` to a plain `Trainer` works on one device and under
    DDP, but FSDP refuses a ready-made optimizer (its parameters are replaced when the model is wrapped) and
    DeepSpeed builds its own. Building the groups in `create_optimizer`, after wrapping, works everywhere: the
    group split matches parameter names, which wrapping keeps apart from prefixes. The optimizer class and its
    other settings still come from `--optim`, `--adam_beta1`, ... as usual.

    Args:
        label_learning_rate: learning rate of the label table; `None` uses `args.learning_rate`.
        head_learning_rate: learning rate of the head; `None` uses `args.learning_rate`.
        *args, **kwargs: as for `transformers.Trainer`.
    """

    def __init__(
        self, *args, label_learning_rate: float | None = None, head_learning_rate: float | None = None, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.label_learning_rate = label_learning_rate
        self.head_learning_rate = head_learning_rate

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        is_class = isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)
        if not is_class or {"params", "model", "optimizer_dict"} & set(optimizer_kwargs):
            # Factories and optimizers that choose their own parameters (GaLore, LOMO, layer-wise) get the default.
            logger.warning(
                "--optim %s builds its own parameter groups; label/head learning rates are not applied.",
                self.args.optim,
            )
            return super().create_optimizer(model)
        groups = adapter_parameter_groups(
            opt_model,
            self.args.learning_rate,
            label_learning_rate=self.label_learning_rate,
            head_learning_rate=self.head_learning_rate,
            weight_decay=self.args.weight_decay,
        )
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer
