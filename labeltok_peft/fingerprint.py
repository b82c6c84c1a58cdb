"""What identifies the backbone an adapter was trained on, and the check that an adapter fits a backbone."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from .backbone import BackboneInfo

logger = logging.getLogger(__name__)


class BackboneMismatchError(ValueError):
    """An adapter was saved on a backbone of another architecture than the one it is loaded onto."""


@dataclass(frozen=True)
class BackboneFingerprint:
    """What identifies the backbone an adapter was trained on.

    Attributes:
        model_type: `config.model_type` (for example `"bert"`).
        hidden_size: width of the hidden states; the label table is `[num_labels, hidden_size]`.
        num_layers: number of transformer layers, when the config says.
        vocab_size: rows of the input embedding matrix.
        name_or_path: `config._name_or_path` (hub id or local folder), when known.
    """

    model_type: str
    hidden_size: int
    num_layers: int | None
    vocab_size: int | None
    name_or_path: str | None

    @classmethod
    def of(cls, base: nn.Module, info: BackboneInfo) -> BackboneFingerprint:
        """The fingerprint of a bare transformer (`LabelTokModel.base_model`) described by `info`."""
        config = base.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        layers = next(
            (
                getattr(text_config, key)
                for key in ("num_hidden_layers", "n_layer", "num_layers")
                if hasattr(text_config, key)
            ),
            None,
        )
        return cls(
            model_type=info.model_type,
            hidden_size=info.hidden_size,
            num_layers=None if layers is None else int(layers),
            vocab_size=int(base.get_input_embeddings().weight.shape[0]),
            name_or_path=getattr(config, "_name_or_path", None) or None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__dataclass_fields__}

    def describe(self) -> str:
        layers = f", {self.num_layers} layers" if self.num_layers is not None else ""
        name = f" ({self.name_or_path})" if self.name_or_path else ""
        return f"{self.model_type!r} backbone with hidden size {self.hidden_size}{layers}{name}"


def check_fingerprint(saved: BackboneFingerprint, current: BackboneFingerprint, source: str | os.PathLike) -> None:
    """Raises `BackboneMismatchError` if `saved` describes a backbone of another architecture than `current`.

    Model type, hidden size and layer count must match. Another vocabulary size or name only logs a warning: the
    label table does not depend on the vocabulary, and the same weights are often loaded from different paths.
    """
    hard = [
        (label, getattr(saved, key), getattr(current, key))
        for label, key in (("model type", "model_type"), ("hidden size", "hidden_size"), ("layer count", "num_layers"))
        if getattr(saved, key) is not None
        and getattr(current, key) is not None
        and getattr(saved, key) != getattr(current, key)
    ]
    if hard:
        differences = "; ".join(f"{label}: saved {old!r}, this backbone {new!r}" for label, old, new in hard)
        raise BackboneMismatchError(
            f"The adapter in {source} was saved on a {saved.describe()}, but this model's backbone is a "
            f"{current.describe()} ({differences}). Load it onto the backbone it was trained on."
        )
    if saved.vocab_size is not None and saved.vocab_size != current.vocab_size:
        logger.warning(
            "Adapter %s was saved on a backbone with %s tokens; this one has %s.",
            source,
            saved.vocab_size,
            current.vocab_size,
        )
    if saved.name_or_path and current.name_or_path and Path(saved.name_or_path).name != Path(current.name_or_path).name:
        logger.warning(
            "Adapter %s was saved on %r; loading it onto %r.", source, saved.name_or_path, current.name_or_path
        )
