"""A `transformers.Trainer` that builds the label-token optimizer groups itself (so it works under FSDP/DeepSpeed)
and never leaves a half-written checkpoint behind."""

from __future__ import annotations

import errno
import logging
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .optim import adapter_parameter_groups, keep_untouched_label_rows

logger = logging.getLogger(__name__)

# What a failed file write raises: `open`/`write` raise OSError, safetensors SafetensorError ("No space left on
# device (os error 28)"), `torch.save` a RuntimeError ("[enforce fail at inline_container.cc] unexpected pos ...").
WRITE_ERRORS = (OSError, SafetensorError, RuntimeError)
# Below this much free space a failed write is reported as a full disk whatever the library's message says.
NEARLY_FULL_BYTES = 64 * 2**20


class CheckpointWriteError(OSError):
    """A Trainer checkpoint could not be written (for example the disk is full); no partial checkpoint is left."""


class LabelTokTrainer(Trainer):
    """`Trainer` whose optimizer gives the label table (and optionally the head) its own learning rate.

    Passing `optimizers=(create_optimizer(model, ...), None)` to a plain `Trainer` works on one device and under
    DDP, but FSDP refuses a ready-made optimizer (its parameters are replaced when the model is wrapped) and
    DeepSpeed builds its own. Building the groups in `create_optimizer`, after wrapping, works everywhere: the
    group split matches parameter names, which wrapping keeps apart from prefixes. The optimizer class and its
    other settings still come from `--optim`, `--adam_beta1`, ... as usual. Label rows without a gradient in a step
    (labels that `label_sample_size` did not draw) keep their values and optimizer state
    (`optim.keep_untouched_label_rows`).

    Args:
        label_learning_rate: learning rate of the label table; `None` uses `args.learning_rate`.
        head_learning_rate: learning rate of the head; `None` uses the label table's rate.
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
        keep_untouched_label_rows(self.optimizer)
        return self.optimizer

    def _save_checkpoint(self, model, trial) -> None:
        """Writes `checkpoint-<step>` as `Trainer` does; if that fails, removes the partial folder and raises.

        `Trainer` writes a checkpoint file by file into its final folder, so a failed write (a full disk) leaves a
        `checkpoint-<step>` that `get_last_checkpoint` and `resume_from_checkpoint=True` would pick up, and that
        `save_total_limit` would count (and keep, as the newest) while deleting complete ones. Rotation runs only
        after a successful write, so the checkpoints written before stay as they were. A checkpoint whose trainer
        state was written in this call is complete and is kept (only copying it to the Hub folder failed).

        Raises:
            CheckpointWriteError: a file of the checkpoint could not be written; names the folder, the cause and
                the fix. Other errors are raised unchanged, after the partial folder is removed.
        """
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        started_ns = time.time_ns()
        try:
            super()._save_checkpoint(model, trial)
        except BaseException as error:
            complete = _written_since(folder / "trainer_state.json", started_ns)
            if not complete:
                shutil.rmtree(folder, ignore_errors=True)
            if not isinstance(error, WRITE_ERRORS):
                raise
            raise _write_error(folder, error, complete) from error


def _written_since(path: Path, started_ns: int) -> bool:
    """Whether `path` exists and was last written at or after `started_ns` (1 s slack for coarse clocks)."""
    try:
        return path.stat().st_mtime_ns >= started_ns - 1_000_000_000
    except OSError:
        return False


def _write_error(folder: Path, error: BaseException, complete: bool) -> CheckpointWriteError:
    """The one-line error for a checkpoint that could not be written."""
    try:
        free = shutil.disk_usage(folder.parent).free
    except OSError:
        free = None
    code = getattr(error, "errno", None)
    if code == errno.ENOSPC or "No space left" in str(error) or (free is not None and free < NEARLY_FULL_BYTES):
        code = errno.ENOSPC
        reason = "the disk is full" + (f" ({free / 2**20:.0f} MiB free)" if free is not None else "")
    else:
        reason = f"{type(error).__name__}: {error}".replace("\n", " ")
    kept = (
        "the checkpoint itself is complete and was kept"
        if complete
        else "the partial folder was removed, so resuming uses the last complete checkpoint"
    )
    failure = CheckpointWriteError(
        f"Could not write the checkpoint {folder}: {reason}; {kept}. Free disk space (or lower --save_total_limit, "
        "save less often, or use an --output_dir on a larger disk), then run again with --resume_from_checkpoint "
        "true to continue."
    )
    failure.errno = code
    return failure
