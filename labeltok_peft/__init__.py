"""Label-token text classification as a PEFT-style adapter.

Importing the package is cheap: torch, transformers and peft are imported on first use of a name that needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AdapterFormatError": "serialization",
    "BackboneMismatchError": "serialization",
    "DEFAULT_ADAPTER_NAME": "model",
    "HeadType": "config",
    "LabelAttention": "config",
    "LabelInit": "config",
    "LabelPositions": "config",
    "LabelTokConfig": "config",
    "LabelTokModel": "model",
    "Placement": "config",
    "ProblemType": "config",
    "classification_metrics": "metrics",
    "encode_label": "data",
    "encode_labels": "data",
    "get_labeltok_model": "model",
    "labeltok_pipeline": "pipeline",
    "load_backbone": "quantization",
    "prepare_kbit_training": "quantization",
    "make_compute_metrics": "metrics",
    "tokenize_function": "data",
    "validate_texts": "data",
}

__all__ = [
    "AdapterFormatError",
    "BackboneMismatchError",
    "DEFAULT_ADAPTER_NAME",
    "HeadType",
    "LabelAttention",
    "LabelInit",
    "LabelPositions",
    "LabelTokConfig",
    "LabelTokModel",
    "Placement",
    "ProblemType",
    "__version__",
    "classification_metrics",
    "encode_label",
    "encode_labels",
    "get_labeltok_model",
    "labeltok_pipeline",
    "load_backbone",
    "make_compute_metrics",
    "prepare_kbit_training",
    "tokenize_function",
    "validate_texts",
]

if TYPE_CHECKING:
    from .config import HeadType, LabelAttention, LabelInit, LabelPositions, LabelTokConfig, Placement, ProblemType
    from .data import encode_label, encode_labels, tokenize_function, validate_texts
    from .metrics import classification_metrics, make_compute_metrics
    from .model import DEFAULT_ADAPTER_NAME, LabelTokModel, get_labeltok_model
    from .pipeline import labeltok_pipeline
    from .quantization import load_backbone, prepare_kbit_training
    from .serialization import AdapterFormatError, BackboneMismatchError


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'labeltok_peft' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
