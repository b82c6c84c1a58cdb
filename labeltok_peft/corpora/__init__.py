"""Real datasets that install offline from package registries, built deterministically into `datasets` objects.

The WordNet tasks are benchmark datasets and live with the benchmarks (`recipes/benchmarks/wordnet.py`).
"""

from __future__ import annotations

from .bbc_news import BBC_NEWS_LABELS, load_bbc_news

__all__ = ["BBC_NEWS_LABELS", "load_bbc_news"]
