"""Real datasets that install offline from package registries, built deterministically into `datasets` objects."""

from __future__ import annotations

from .bbc_news import BBC_NEWS_LABELS, load_bbc_news
from .wordnet import WORDNET_APT_PACKAGE, load_wordnet_hypernyms, load_wordnet_lexnames

__all__ = ["BBC_NEWS_LABELS", "WORDNET_APT_PACKAGE", "load_bbc_news", "load_wordnet_hypernyms", "load_wordnet_lexnames"]
