"""What the train, evaluate and predict commands share: logging, the output folder guard, backbone and adapter
loading, tokenization, the Trainer and clean error exits."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..decoding import DEFAULT_THRESHOLD, resolve_max_length, resolve_thresholds
from ..nonfinite import NonFiniteTrainingError
from .output_lock import LOCK_FILE_NAME

logger = logging.getLogger("labeltok_peft")

# Written by `labeltok train` beside the adapter: what evaluate/predict need to reproduce the training setup.
RECIPE_SETTINGS_NAME = "labeltok_recipe.json"

# Input errors exit with a one-line message; with this environment variable set they raise with a traceback.
DEBUG_ENV = "LABELTOK_DEBUG"


class OutputDirError(ValueError):
    """The output folder already holds results that would be overwritten."""


def setup_logging(training_args) -> None:
    """Logs to stdout at the level `TrainingArguments` chooses for this process (main process: info)."""
    import datasets
    import transformers

    level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def guard_output_dir(path: str | os.PathLike, overwrite: bool, what: str = "--output_dir") -> None:
    """Refuses to write into a folder (or over a file) that already holds results, unless `overwrite`.

    Raises:
        OutputDirError: naming the folder, a few of its files and the flag that allows it.
    """
    target = Path(path)
    if overwrite or not target.exists():
        return
    if target.is_file():
        raise OutputDirError(f"{what} {str(target)!r} already exists; pass --overwrite_output_dir to replace it.")
    entries = sorted(entry.name for entry in target.iterdir() if entry.name != LOCK_FILE_NAME)
    if entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputDirError(
            f"{what} {str(target)!r} already holds files ({shown}), perhaps a trained adapter. Pass "
            "--overwrite_output_dir to write into it anyway, or choose another folder."
        )


def wait_for_everyone(training_args) -> None:
    """Barrier across processes (a no-op in a single process)."""
    training_args.distributed_state.wait_for_everyone()


def write_recipe_settings(output_dir: str | os.PathLike, settings: dict[str, Any]) -> None:
    """Writes `labeltok_recipe.json` (backbone name, columns, max length, thresholds) beside the adapter.

    Written to a temporary file and renamed into place, so a failed write (a full disk) leaves the previous file,
    never a truncated one.
    """
    path = Path(output_dir) / RECIPE_SETTINGS_NAME
    staging = path.with_name(f".{RECIPE_SETTINGS_NAME}.{os.getpid()}.tmp")
    try:
        staging.write_text(json.dumps(settings, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(staging, path)
    except OSError as error:
        staging.unlink(missing_ok=True)
        raise OSError(f"Could not write {path}: {error.strerror or error}. Free disk space and train again.") from error


def read_recipe_settings(adapter_path: str | os.PathLike) -> dict[str, Any]:
    """Reads `labeltok_recipe.json` from an adapter folder; `{}` when it was not written by `labeltok train`."""
    path = Path(adapter_path) / RECIPE_SETTINGS_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); train the adapter again or delete the file.") from None


def stored_model_name(model_args) -> str:
    """The backbone as written to `labeltok_recipe.json`: an absolute path for a local folder, else the name."""
    path = Path(model_args.model_name_or_path).expanduser()
    return str(path.resolve()) if path.is_dir() else model_args.model_name_or_path


def load_backbone_from_args(model_args):
    """Loads the backbone and tokenizer named by `ModelArguments` (`pretrained.load_backbone_and_tokenizer`).

    Returns:
        `(backbone, tokenizer)`.
    """
    from ..pretrained import load_backbone_and_tokenizer

    return load_backbone_and_tokenizer(
        model_args.model_name_or_path,
        tokenizer_name=model_args.tokenizer_name,
        precision=model_args.precision or "fp32",
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
    )


def load_adapter_model(model_args, adapter_args) -> tuple[Any, dict[str, Any]]:
    """Loads the backbone (from the flag, or the name recorded at training) and the trained adapter.

    Returns:
        `(model, settings)`: a `LabelTokModel` in eval mode and the adapter folder's recipe settings.
    """
    from ..model import LabelTokModel

    if not adapter_args.adapter_path:
        raise ValueError("--adapter_path is required: the folder written by `labeltok train` (its --output_dir).")
    from ..constants import is_hub_id
    from ..hub import resolve_adapter_source

    source = adapter_args.adapter_path
    adapter_path = Path(source)
    if not adapter_path.is_dir():
        if not is_hub_id(source):
            raise FileNotFoundError(
                f"--adapter_path {source!r} is not a folder; give the training --output_dir or a Hub repository id "
                "(user/repo)."
            )
        adapter_path, _ = resolve_adapter_source(source)  # the cached snapshot, for the recorded settings
    settings = read_recipe_settings(adapter_path)
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = settings.get("model_name_or_path") or _saved_backbone_name(adapter_path)
        if model_args.model_name_or_path is None:
            raise ValueError(
                f"{adapter_path} does not record its backbone (no {RECIPE_SETTINGS_NAME}, no backbone name in the "
                "adapter config); pass --model_name_or_path with the backbone the adapter was trained on."
            )
    model_args.precision = model_args.precision or settings.get("precision")
    backbone, tokenizer = load_backbone_from_args(model_args)
    model = LabelTokModel.from_pretrained(backbone, source, tokenizer=tokenizer)
    return model, settings


def _saved_backbone_name(adapter_path: Path) -> str | None:
    """The backbone name `save_pretrained` recorded in the adapter config, if any."""
    from ..serialization import CONFIG_NAME

    path = adapter_path / CONFIG_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))["backbone"]["name_or_path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fit_max_length(requested: int, model, tokenizer) -> int:
    """The text length to truncate to: `--max_seq_length`, lowered to the text budget beside the labels.

    One computation for every command (`decoding.resolve_max_length`): with `label_positions='shared'` the labels
    take a single position, so any number of labels leaves the same room for text.
    """
    return resolve_max_length(model, requested, tokenizer, flag="--max_seq_length", lower=True)


def adapter_thresholds(
    threshold_flag: float | None, settings: dict[str, Any], config, adapter_path
) -> list[float] | None:
    """The multi-label thresholds to decide with, one per label of the adapter (in its label order).

    `--threshold` applies to every label. Without it, each label uses the threshold `labeltok train` tuned for it and
    recorded in `labeltok_recipe.json` (keyed by label name), and 0.5 when none was recorded: a label added after
    training (`add_labels`) gets 0.5 and one removed (`remove_labels`) drops out, each with a log line. Files written
    before thresholds were keyed hold a list in label order; it is used while its length still fits the labels.
    `None` for single-label adapters.

    Raises:
        ValueError: a threshold outside [0, 1] or NaN, or recorded thresholds that cannot be matched to the adapter's
            labels (an edited recipe file, or an old list after the label set changed), naming the flag or the file.
    """
    if not config.is_multi_label:
        if threshold_flag is not None:
            logger.warning("--threshold is ignored: the adapter is single-label (it predicts the most likely label).")
        return None
    if threshold_flag is not None:
        return resolve_thresholds(threshold_flag, config.labels, source="--threshold")
    recorded = settings.get("thresholds")
    source = f"'thresholds' in {Path(adapter_path) / RECIPE_SETTINGS_NAME}"
    if isinstance(recorded, list) and len(recorded) != len(config.labels):
        raise ValueError(
            f"{source} is a list of {len(recorded)} thresholds in the label order of the trained adapter, which now "
            f"has {len(config.labels)} labels (its label set changed), so they cannot be matched to labels. Rewrite "
            "them as a mapping from label name to threshold, train the adapter again, or pass --threshold."
        )
    try:
        if isinstance(recorded, dict):
            recorded = _thresholds_for_labels(recorded, config.labels, source)
        return resolve_thresholds(recorded, config.labels, source=source)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{error} Train the adapter again, fix or delete the file, or pass --threshold.") from None


def _thresholds_for_labels(recorded: dict[str, Any], labels: list[str], source: str) -> dict[str, Any]:
    """The recorded thresholds of the labels the adapter still has; logs the labels that gain or lose one."""
    removed = [name for name in recorded if name not in labels]
    added = [name for name in labels if name not in recorded]
    if removed:
        logger.warning("%s: ignoring the thresholds of labels the adapter no longer has: %s", source, removed)
    if added:
        logger.warning(
            "%s has no tuned threshold for %d label(s) added after training, which use %s: %s (pass --threshold to "
            "set one threshold for every label).",
            source,
            len(added),
            DEFAULT_THRESHOLD,
            added,
        )
    return {name: value for name, value in recorded.items() if name in labels}


def tokenize_splits(
    splits, tokenizer, config, text_column: str, label_column: str | None, max_length: int, training_args
):
    """Tokenizes every split (the main process first, so caches are shared) and keeps only model inputs.

    Splits without the label column are tokenized without labels.
    """
    from ..data import tokenize_function

    tokenized = {}
    with training_args.main_process_first(desc="tokenizing"):
        for name, dataset in splits.items():
            has_labels = label_column is not None and label_column in dataset.column_names
            function = tokenize_function(
                tokenizer, config, text_column, label_column if has_labels else None, max_length
            )
            tokenized[name] = dataset.map(
                function,
                batched=True,
                with_indices=True,
                remove_columns=dataset.column_names,
                keep_in_memory=True,
                desc=f"Tokenizing {name}",
            )
    return tokenized


def make_trainer(
    model,
    training_args,
    tokenizer,
    train_dataset=None,
    eval_dataset=None,
    label_learning_rate: float | None = None,
    head_learning_rate: float | None = None,
):
    """A `LabelTokTrainer` over a `LabelTokModel` with dynamic padding, offline metrics and per-group rates.

    A run whose loss or weights become non-finite stops with `NonFiniteTrainingError` (`StopOnNonFinite`).
    """
    from transformers import DataCollatorWithPadding

    from ..metrics import make_compute_metrics
    from ..nonfinite import StopOnNonFinite
    from ..trainer import LabelTokTrainer

    return LabelTokTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=make_compute_metrics(model.labeltok_config.is_multi_label),
        label_learning_rate=label_learning_rate,
        head_learning_rate=head_learning_rate,
        callbacks=[StopOnNonFinite()],
    )


def format_metrics(metrics: dict[str, float], keys: Sequence[str]) -> str:
    """`"accuracy 0.9640 | macro_f1 0.9630"` for the keys present."""
    return " | ".join(f"{key.split('_', 1)[1]} {metrics[key]:.4f}" for key in keys if key in metrics)


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> int:
    """Runs a command's `main`, turning input errors into a one-line message and exit status 1.

    Set `LABELTOK_DEBUG=1` to see the full traceback instead.
    """
    # DataError, OutputDirError, ConfigFileError and the library's own input checks are ValueErrors; missing files
    # and models are OSErrors; a run that diverged raises NonFiniteTrainingError.
    user_errors = (ValueError, TypeError, KeyError, OSError, NonFiniteTrainingError)
    try:
        main(argv)
    except user_errors as error:
        if os.environ.get(DEBUG_ENV):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"error: {message}", file=sys.stderr)
        print(f"(set {DEBUG_ENV}=1 for the full traceback)", file=sys.stderr)
        return 1
    return 0
