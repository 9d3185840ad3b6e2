"""Streaming prompt statistics: tokens per prompt, context-length use and vocabulary, in constant memory.

A corpus is a text file; every non-empty line (after stripping) is one prompt and duplicates count.
Prompts are tokenized with the processor's CLIP BPE, without BOS/EOS and without truncation, in batches.
Only histograms are kept (prompts per token count, occurrences per token id, one 8-byte hash per prompt
and an optional fixed-size prompt sample), so every statistic is exact and a million prompts need a few
MB: per-L truncation and padding follow from the length histogram for any L without re-tokenizing.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..processing.tokenizer import VOCAB_SIZE, bpe_backend, bytes_to_unicode

PERCENTILES = (5, 25, 50, 75, 90, 95, 99)
COVERAGES = (90, 95, 99)  # percent of all token occurrences
BATCH_LINES = 8192  # prompts per encode_batch call: large enough for the Rust side's threads, small in memory


def read_prompts(path: str | Path, batch_lines: int = BATCH_LINES) -> Iterator[tuple[list[str], int]]:
    """Yield (prompts, bytes read) batches of at most ``batch_lines`` non-empty stripped lines of ``path``.

    Raises:
        ValueError: the file is not UTF-8 (the message names the file and line).
    """
    batch: list[str] = []
    nbytes = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            nbytes += len(raw)
            try:
                # utf-8-sig on the first line drops a byte-order mark, which would otherwise be a token.
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}: line {lineno} is not UTF-8 ({err.reason})") from None
            if text:
                batch.append(text)
            if len(batch) >= batch_lines:
                yield batch, nbytes
                batch, nbytes = [], 0
    if batch or nbytes:
        yield batch, nbytes


def encode(prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """BPE ids of N prompts without BOS/EOS, untruncated.

    Returns:
        lengths [N] int64 (tokens per prompt) and ids [sum(lengths)] int64 (all ids, concatenated).
    """
    encodings = bpe_backend().encode_batch_fast(prompts, add_special_tokens=False)
    rows = [e.ids for e in encodings]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return lengths, ids


@dataclass
class CorpusCounts:
    """Histograms of one corpus (or of several, merged), filled batch by batch.

    lengths: [max tokens + 1] prompts per BPE token count.
    token_counts: [49408] occurrences per token id.
    hashes: per-batch arrays of prompt-text hashes, for the number of distinct prompts.
    sample: a uniform sample of at most ``sample_size`` prompts (reservoir sampling), for embeddings.
    """

    sample_size: int = 0
    seed: int = 0
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    token_counts: np.ndarray = field(default_factory=lambda: np.zeros(VOCAB_SIZE, dtype=np.int64))
    hashes: list[np.ndarray] = field(default_factory=list)
    sample: list[str] = field(default_factory=list)
    _seen: int = 0

    @property
    def prompts(self) -> int:
        return int(self.lengths.sum())

    def update(self, prompts: list[str]) -> None:
        """Add a batch of prompts."""
        if not prompts:
            return
        lengths, ids = encode(prompts)
        self.lengths = _add_padded(self.lengths, np.bincount(lengths))
        self.token_counts += np.bincount(ids, minlength=VOCAB_SIZE)
        # str hashes are salted per process, which is fine: they are only compared within one run.
        self.hashes.append(np.fromiter((hash(p) for p in prompts), dtype=np.int64, count=len(prompts)))
        self._update_sample(prompts)

    def _update_sample(self, prompts: list[str]) -> None:
        # Reservoir sampling (Algorithm R): item t (0-based) replaces a random slot with probability k/(t+1).
        k = self.sample_size
        if k <= 0:
            return
        rng = random.Random(hash((self.seed, self._seen)))
        for p in prompts:
            if len(self.sample) < k:
                self.sample.append(p)
            else:
                j = rng.randrange(self._seen + 1)
                if j < k:
                    self.sample[j] = p
            self._seen += 1

    def distinct_prompts(self) -> int:
        return int(np.unique(np.concatenate(self.hashes)).size) if self.hashes else 0


def merge(counts: Iterable[CorpusCounts]) -> CorpusCounts:
    """One ``CorpusCounts`` summing several (the sample is left empty: overall samples pool the corpora's)."""
    out = CorpusCounts()
    for c in counts:
        out.lengths = _add_padded(out.lengths, c.lengths)
        out.token_counts += c.token_counts
        out.hashes.extend(c.hashes)
    return out


def _add_padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b for 1-D count arrays of different lengths (the shorter is zero-extended)."""
    if a.size < b.size:
        a, b = b, a
    out = a.copy()
    out[: b.size] += b
    return out


# ----------------------------------------------------------------------------------------------
# Statistics from the histograms
# ----------------------------------------------------------------------------------------------


def hist_quantile(counts: np.ndarray, q: float) -> float:
    """Quantile q in [0, 1] of the values ``i`` repeated ``counts[i]`` times.

    Equals ``np.quantile(values, q)`` (linear interpolation between order statistics) without expanding.
    """
    n = int(counts.sum())
    if n == 0:
        return float("nan")
    cum = np.cumsum(counts)
    pos = q * (n - 1)
    lo, hi = int(np.floor(pos)), int(np.ceil(pos))
    # The k-th order statistic (0-based) is the first value whose cumulative count exceeds k.
    v_lo = int(np.searchsorted(cum, lo, side="right"))
    v_hi = int(np.searchsorted(cum, hi, side="right"))
    return float(v_lo + (pos - lo) * (v_hi - v_lo))


def length_stats(lengths: np.ndarray) -> dict:
    """Tokens per prompt (BPE, no BOS/EOS) from the histogram ``lengths`` [max + 1]."""
    n = int(lengths.sum())
    values = np.arange(lengths.size)
    return {
        "prompts": n,
        "tokens_mean": float((values * lengths).sum() / n) if n else float("nan"),
        "tokens_median": hist_quantile(lengths, 0.5),
        "tokens_p95": hist_quantile(lengths, 0.95),
        "tokens_max": int(np.flatnonzero(lengths)[-1]) if n else 0,
        "tokens_percentiles": {str(p): hist_quantile(lengths, p / 100) for p in PERCENTILES},
        "tokens_histogram": [int(c) for c in lengths],
    }


def context_stats(lengths: np.ndarray, context_length: int) -> dict[str, float]:
    """Use of a context of L positions (BOS + tokens + EOS, then padding) by every prompt.

    truncated: share of prompts with tokens + 2 > L; padding: pad positions / all N * L positions;
    density: 1 - padding (the share of positions holding BOS, a token or EOS).
    """
    n = int(lengths.sum())
    tokens = np.arange(lengths.size)
    used = np.minimum(tokens + 2, context_length)
    truncated = int(lengths[tokens + 2 > context_length].sum())
    pad = int((lengths * (context_length - used)).sum())
    padding = pad / (n * context_length) if n else float("nan")
    return {"truncated": truncated / n if n else float("nan"), "padding": padding, "density": 1.0 - padding}


def vocab_stats(token_counts: np.ndarray, top: int = 20) -> dict:
    """Vocabulary use from occurrences per id [49408]: distinct ids, their share of the vocabulary, and
    how many of the most frequent ids cover 90/95/99% of all occurrences."""
    total = int(token_counts.sum())
    ranked = np.sort(token_counts[token_counts > 0])[::-1]
    cum = np.cumsum(ranked)
    out: dict = {"occurrences": total, "distinct": int(ranked.size), "share": ranked.size / VOCAB_SIZE}
    for pct in COVERAGES:
        # Integer comparison (100 * covered >= pct * total) so exact ties such as 95 of 100 count as covered.
        out[f"cover{pct}"] = int(np.searchsorted(100 * cum, pct * total, side="left") + 1) if total else 0
    order = np.argsort(-token_counts, kind="stable")[:top]
    out["top"] = [[_token_text(int(i)), int(token_counts[i])] for i in order if token_counts[i] > 0]
    return out


def rank_frequency(token_counts: np.ndarray) -> np.ndarray:
    """Occurrences of the used token ids, most frequent first [distinct]."""
    return np.sort(token_counts[token_counts > 0])[::-1]


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def _token_text(token_id: int) -> str:
    """Readable form of one BPE token: the end-of-word marker is shown as a trailing space."""
    token = bpe_backend().id_to_token(token_id) or ""
    word_end = token.endswith("</w>")
    raw = bytes(_byte_decoder().get(c, 63) for c in token.removesuffix("</w>"))
    return raw.decode("utf-8", errors="replace") + (" " if word_end else "")


def corpus_stats(counts: CorpusCounts, context_lengths: Iterable[int]) -> dict:
    """The STATS dict of report.json for one corpus (or the merged overall counts)."""
    stats = length_stats(counts.lengths)
    stats["unique_prompts"] = counts.distinct_prompts()
    stats["context"] = {str(L): context_stats(counts.lengths, L) for L in context_lengths}
    stats["vocab"] = vocab_stats(counts.token_counts)
    return stats
