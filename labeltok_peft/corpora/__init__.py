"""Real datasets that install offline from package registries, built deterministically into `datasets` objects."""

from __future__ import annotations

from .bbc_news import BBC_NEWS_LABELS, load_bbc_news

__all__ = ["BBC_NEWS_LABELS", "load_bbc_news"]
