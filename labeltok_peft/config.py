"""The label-token adapter configuration."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

logger = logging.getLogger(__name__)


class ProblemType(str, Enum):
    """How label logits become predictions; the names are transformers' `problem_type` values."""

    SINGLE_LABEL = "single_label_classification"
    MULTI_LABEL = "multi_label_classification"


class LabelInit(str, Enum):
    """How the label table rows start (the four options of the original label-token idea)."""

    RANDOM = "random"
    CLS = "cls"
    VOCAB_MEAN = "vocab_mean"
    LABEL_TEXT = "label_text"


class Placement(str, Enum):
    """Where the label tokens go in each row."""

    AUTO = "auto"
    AFTER_FIRST_TOKEN = "after_first_token"
    AFTER_LAST_TOKEN = "after_last_token"


class LabelAttention(str, Enum):
    """What label tokens may attend to; `auto` is resolved by the model when the adapter is added."""

    AUTO = "auto"
    FULL = "full"
    ISOLATED = "isolated"


class LabelPositions(str, Enum):
    """Which position ids label tokens get; `auto` is resolved with the attention (shared with isolated)."""

    AUTO = "auto"
    SEQUENTIAL = "sequential"
    SHARED = "shared"


AUTO = "auto"
"""The value of `label_layers` that the model resolves when the adapter is added (like the `auto` enum members)."""

AUTO_LABEL_LAYERS = 1
"""What `label_layers="auto"` resolves to on encoders that take late injection: labels in the last layer only. On
all-MiniLM-L6-v2 with the residual head and the head at the table's rate (3 seeds, macro-F1 against labels in every
layer) it gained 4.5 points on WordNet hypernyms and 0.2 on lexnames, lost 0.3 on BBC News, at 1.09x the peer's step
instead of 1.66x (BENCHMARKS.md, quality study). It needs a few dozen steps or more: on a few examples per class
labels in every layer are better (recipes/configs/few_shot.yaml). Causal decoders keep every layer: on SmolLM2-135M
labels in the last layer did not learn in 38 steps (0.23 accuracy on a BBC News slice against 0.91)."""


class HeadType(str, Enum):
    """How a label token's output becomes its logit (head.py)."""

    LINEAR = "linear"
    TIED = "tied"
    RESIDUAL = "residual"
    COSINE = "cosine"


def _coerce_enum(enum_cls: type[Enum], field_name: str, value: Any) -> Enum:
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in enum_cls)
        raise ValueError(f"LabelTokConfig.{field_name} must be one of {allowed}; got {value!r}.") from None


@dataclass
class LabelTokConfig:
    """Configuration of one label-token adapter.

    Every class label becomes a learned token placed in the input beside the text. The backbone's output at each
    label position goes through one shared linear layer to a single logit, so the logits have shape
    `[batch, num_labels]`.

    Example:

    ```python
    >>> from labeltok_peft import LabelTokConfig
    >>> config = LabelTokConfig(labels=["business", "sport"], lora={"r": 16})
    >>> config.label2id
    {'business': 0, 'sport': 1}
    ```
    """

    labels: list[str] = field(
        default_factory=list, metadata={"help": "Class label names, in the order of the logits. At least two."}
    )
    problem_type: ProblemType | str = field(
        default=ProblemType.SINGLE_LABEL,
        metadata={
            "help": "'single_label_classification' (softmax, int labels) or 'multi_label_classification' "
            "(sigmoid, float multi-hot labels)."
        },
    )
    label_init: LabelInit | str = field(
        default=LabelInit.LABEL_TEXT,
        metadata={
            "help": "How label rows start: 'label_text' (mean embedding of the label's text or description; best "
            "measured, see docs/benchmarks_bbc_news.md), 'vocab_mean' (mean of all token embeddings), 'random', or "
            "'cls' (the first special token's embedding: every row starts identical and learns slowly)."
        },
    )
    label_descriptions: dict[str, str] | None = field(
        default=None,
        metadata={"help": "Optional text per label used by the 'label_text' init instead of the label name."},
    )
    placement: Placement | str = field(
        default=Placement.AUTO,
        metadata={
            "help": "'auto' (encoders: after the first special token; causal decoders: after each row's last real "
            "token), 'after_first_token' or 'after_last_token'."
        },
    )
    label_attention: LabelAttention | str = field(
        default=LabelAttention.AUTO,
        metadata={
            "help": "'isolated': every label sees the text and itself only and the text does not see labels, so label "
            "logits are independent of each other (run as the label pass: the text goes through the backbone once). "
            "'full': labels and text attend as the backbone normally does. 'auto' (default): 'isolated' where the "
            "backbone takes it, else 'full' (DeBERTa), with a log line; see BENCHMARKS.md for the measurements."
        },
    )
    label_positions: LabelPositions | str = field(
        default=LabelPositions.AUTO,
        metadata={
            "help": "'sequential': each label token takes its own position id (labels spend the position budget). "
            "'shared': all label tokens take the one position the first label would have and the text keeps its "
            "own positions, so any number of labels fits. 'auto' (default): 'shared' with isolated attention on a "
            "backbone that takes position ids, else 'sequential' (labels that share a position and see each other "
            "blur)."
        },
    )
    label_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "With isolated attention, score at most this many labels per backbone pass (same logits, "
            "less memory per pass). None scores all labels in one pass."
        },
    )
    label_layers: int | str | None = field(
        default="auto",
        metadata={
            "help": "Late injection (needs label_attention='isolated'): labels join only the last n layers of the "
            "backbone; the text runs alone below them. Costs about 1 + K*n/(T*L) of a plain pass instead of 1 + K/T. "
            "Label rows then live in the hidden space of layer L-n ('label_text' starts them from the layer-(L-n) "
            "hidden state of the label text). None (or n = L) runs the labels through every layer. 'auto' "
            "(default): n = 1 on encoders that take late injection (isolated attention, position ids, one plain "
            "layer stack), every layer elsewhere (on SmolLM2-135M the last layer did not learn); on all-MiniLM-L6-v2 it beat "
            "every layer on WordNet hypernyms and lexnames at about the peer's step (BENCHMARKS.md, quality study), "
            "but needs a few dozen training steps or more. A different model for every n: it is saved with the "
            "adapter."
        },
    )
    label_sample_size: int | None = field(
        default=None,
        metadata={
            "help": "Training with very many labels (needs label_attention='isolated'): each training step scores "
            "the batch's positive labels plus this many negatives drawn uniformly from the other labels, shared by the "
            "batch (sampled softmax for single-label, BCE on the set for multi-label, both with the logQ correction "
            "that subtracts each drawn negative's log inclusion probability from its logit). "
            "More negatives learn better and cost more (BENCHMARKS.md: hundreds for a 1,632-label task). "
            "Evaluation and prediction always score every label. None scores all labels in training too."
        },
    )
    label_anchor_weight: float = field(
        default=0.0,
        metadata={
            "help": "Keeps the label table near the rows it started from (an L2-SP penalty): training adds this "
            "weight times the mean over labels of the squared distance between each row and its starting row. The "
            "starting rows are the table when the adapter was added or loaded (rows from add_labels start at their "
            "own init). Trained rows otherwise drift far from their label text (cosine 0.34 on WordNet lexnames), "
            "which is what labels added later by name are initialised from. 0 (default) adds nothing."
        },
    )
    per_label_bias: bool = field(
        default=False,
        metadata={"help": "Add a learned bias per label on top of the shared head (a prior per class)."},
    )
    head_type: HeadType | str = field(
        default=HeadType.RESIDUAL,
        metadata={
            "help": "'residual' (default): the shared `Linear(hidden, 1)` plus a weight vector per label that starts "
            "at zero (labels added later start at zero and are scored by the shared part alone until trained); it "
            "brought label tokens level with PEFT LoRA SEQ_CLS under the fair protocol (BENCHMARKS.md, quality "
            "study). 'linear': the shared Linear only (no parameter per label in the head). 'tied': the shared Linear "
            "plus a learned scale times the cosine between each label's output and the label's own row of the table "
            "(the row is the label's output vector too, as in language models with tied embeddings). 'cosine': the "
            "shared head normalised, a learned temperature times the cosine between each label's output and the "
            "shared weight vector, plus its bias (measured below 'linear' on lexnames: 0.692 vs 0.711)."
        },
    )
    lora: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for peft.LoraConfig (for example {'r': 16}); None trains no LoRA weights. "
            "target_modules defaults to PEFT's choice for the backbone's architecture."
        },
    )
    init_seed: int = field(
        default=0, metadata={"help": "Seed for the random parts of the adapter (label rows with 'random', head)."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.labels, (str, bytes)) or not isinstance(self.labels, (list, tuple)):
            raise TypeError(f"LabelTokConfig.labels must be a list of label names; got {type(self.labels).__name__}.")
        self.labels = list(self.labels)
        if len(self.labels) < 2:
            raise ValueError(
                f"LabelTokConfig.labels needs at least two labels; got {self.labels!r}. "
                "For a yes/no task use two labels such as ['no', 'yes']."
            )
        for label in self.labels:
            if not isinstance(label, str) or not label.strip():
                raise ValueError(f"LabelTokConfig.labels must hold non-empty strings; got {label!r}.")
        seen: set[str] = set()
        duplicates = sorted({label for label in self.labels if label in seen or seen.add(label)})
        if duplicates:
            raise ValueError(f"LabelTokConfig.labels has duplicate labels {duplicates}; each label must appear once.")
        self.problem_type = _coerce_enum(ProblemType, "problem_type", self.problem_type)
        self.label_init = _coerce_enum(LabelInit, "label_init", self.label_init)
        self.placement = _coerce_enum(Placement, "placement", self.placement)
        self.label_attention = _coerce_enum(LabelAttention, "label_attention", self.label_attention)
        self.label_positions = _coerce_enum(LabelPositions, "label_positions", self.label_positions)
        self.head_type = _coerce_enum(HeadType, "head_type", self.head_type)
        if self.label_descriptions is not None:
            unknown = sorted(set(self.label_descriptions) - set(self.labels))
            if unknown:
                raise ValueError(
                    f"LabelTokConfig.label_descriptions has keys that are not labels: {unknown}. "
                    f"Known labels: {self.labels}."
                )
        if self.label_chunk_size is not None:
            if not isinstance(self.label_chunk_size, int) or self.label_chunk_size < 1:
                raise ValueError(
                    f"LabelTokConfig.label_chunk_size must be a positive integer or None; got {self.label_chunk_size!r}."
                )
            if self.label_attention == LabelAttention.FULL:
                raise ValueError(
                    "LabelTokConfig.label_chunk_size needs label_attention='isolated' (with full attention labels "
                    f"see each other, so chunks would change the logits); got label_attention={self.label_attention.value!r}."
                )
        for name in ("label_layers", "label_sample_size"):
            value = getattr(self, name)
            if value is None or (name == "label_layers" and value == AUTO):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                allowed = (
                    "a positive integer, 'auto' or None" if name == "label_layers" else "a positive integer or None"
                )
                raise ValueError(f"LabelTokConfig.{name} must be {allowed}; got {value!r}.")
            if self.label_attention == LabelAttention.FULL:
                raise ValueError(
                    f"LabelTokConfig.{name}={value} needs label_attention='isolated' (with full attention the text "
                    f"and the labels attend to each other in every layer); got "
                    f"label_attention={self.label_attention.value!r}. Set label_attention='isolated' or {name}=None."
                )
        weight = self.label_anchor_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
            raise ValueError(
                f"LabelTokConfig.label_anchor_weight must be a finite number >= 0 (0 turns the penalty off); got "
                f"{weight!r}."
            )
        self.label_anchor_weight = float(weight)
        if self.lora is not None and not isinstance(self.lora, dict):
            raise TypeError(
                f"LabelTokConfig.lora must be a dict of peft.LoraConfig arguments or None; got {type(self.lora).__name__}."
            )

    def resolve_modes(
        self, supports_isolated: bool, accepts_position_ids: bool, supports_late_injection: bool = False
    ) -> LabelTokConfig:
        """Returns a copy whose `auto` attention, positions and label layers are made concrete for a backbone.

        Args:
            supports_isolated: whether the backbone takes isolated label attention (DeBERTa does not).
            accepts_position_ids: whether its forward takes explicit position ids (needed by shared positions).
            supports_late_injection: whether `label_layers='auto'` injects late on it (an encoder with position ids
                and one plain layer stack of two or more layers): `AUTO_LABEL_LAYERS` there, every layer elsewhere.

        Raises:
            ValueError: `auto` attention falls back to 'full' while an option that needs isolation is set.
        """
        attention, positions = self.label_attention, self.label_positions
        if attention == LabelAttention.AUTO:
            attention = LabelAttention.ISOLATED if supports_isolated else LabelAttention.FULL
            if attention == LabelAttention.FULL:
                needs_isolation = [
                    name
                    for name in ("label_chunk_size", "label_layers", "label_sample_size")
                    if getattr(self, name) not in (None, AUTO)
                ]
                if needs_isolation:
                    raise ValueError(
                        f"LabelTokConfig.{needs_isolation[0]} needs isolated label attention, which this backbone "
                        "does not take; unset it (label_attention='auto' falls back to 'full' here)."
                    )
                logger.info("label_attention='auto' is 'full' on this backbone: it takes no isolated label attention.")
        if positions == LabelPositions.AUTO:
            isolated_with_ids = attention == LabelAttention.ISOLATED and accepts_position_ids
            positions = LabelPositions.SHARED if isolated_with_ids else LabelPositions.SEQUENTIAL
        label_layers = self.label_layers
        if label_layers == AUTO:
            late = attention == LabelAttention.ISOLATED and accepts_position_ids and supports_late_injection
            label_layers = AUTO_LABEL_LAYERS if late else None
        return dataclasses.replace(
            self, label_attention=attention, label_positions=positions, label_layers=label_layers
        )

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: index for index, label in enumerate(self.labels)}

    @property
    def is_multi_label(self) -> bool:
        return self.problem_type == ProblemType.MULTI_LABEL

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as plain JSON-serialisable values."""
        values = dataclasses.asdict(self)
        return {key: value.value if isinstance(value, Enum) else value for key, value in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LabelTokConfig:
        """Builds a config from `to_dict()` output; unknown keys are an error, not silently dropped.

        A saved config without `head_type` predates head types and had the shared linear head only, so it reads as
        `head_type="linear"` whatever the current default is; one without `label_layers` predates late injection and
        ran its labels through every layer, so it reads as `label_layers=None`.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown LabelTokConfig keys {unknown}; known keys: {sorted(known)}.")
        return cls(**{"head_type": HeadType.LINEAR.value, "label_layers": None, **values})

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
