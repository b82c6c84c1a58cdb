"""Shared fixtures, and the test tiers: every test without a slower tier's marker is a `unit` test."""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on 2 shared cores spinning doubles the wall time of CPU training.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
from tiny_models import make_tokenizer  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

SLOWER_TIERS = ("integration", "multiprocess", "cuda")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks the quick tier, so that `pytest -m unit` is the loop to run while working."""
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in SLOWER_TIERS):
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def encoder_tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer(encoder=True)


@pytest.fixture
def decoder_tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer(encoder=False)
