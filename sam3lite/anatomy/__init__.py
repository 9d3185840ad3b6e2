"""Prompt anatomy: measure prompts and text embeddings as SAM3-LiteText's anatomical study does.

``corpus`` streams prompt files into token-length and vocabulary histograms, ``embeddings`` measures the
dimensionality of text features (PCA, TwoNN, teacher-student agreement), ``report`` writes
report.json / report.md / PNG charts (drawn by ``plot`` with Pillow). ``sam3lite anatomy`` runs it all.
"""

from .corpus import CorpusCounts, context_stats, corpus_stats, hist_quantile, read_prompts, vocab_stats
from .embeddings import components_for, embed_corpora, explained_variance_ratio, twonn

__all__ = [
    "CorpusCounts",
    "components_for",
    "context_stats",
    "corpus_stats",
    "embed_corpora",
    "explained_variance_ratio",
    "hist_quantile",
    "read_prompts",
    "twonn",
    "vocab_stats",
]
