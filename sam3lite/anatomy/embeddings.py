"""How many dimensions text features use: PCA spectrum, TwoNN intrinsic dimension, teacher-student agreement.

Features are the detector's prompt tokens, ``get_text_features(...).pooler_output`` [B, T, C] (C = 256
for the released models): *token-level* rows are the C-d features of every real position (BOS, the BPE
tokens and EOS, attention_mask = 1); the *pooled* feature of a prompt is the masked mean of its rows.

- PCA: eigenvalues of the covariance, accumulated in float64 over the whole stream (Chan et al.'s
  pairwise update), so the spectrum is exact however many rows there are.
- TwoNN (Facco et al. 2017): with r1, r2 the distances of a point to its first and second nearest
  neighbours, mu = r2 / r1 follows a Pareto law with exponent d on a d-dimensional manifold. We report
  the maximum-likelihood estimate d = (N - 1) / sum(log mu) and, for reference, the paper's linear fit
  of -log(1 - F(mu)) on log(mu) through the origin with the 10% largest mu discarded. It runs on a
  uniform sample of at most ``max_points`` rows with exact duplicates removed (a duplicate makes
  r1 = 0; the causal CLIP teacher gives every prompt the same BOS feature).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import torch

from ..processing.tokenizer import Tokenizer
from .corpus import encode, hist_quantile

FRACTIONS = (0.90, 0.95, 0.99)  # explained variance levels reported as component counts


# ----------------------------------------------------------------------------------------------
# PCA
# ----------------------------------------------------------------------------------------------


def explained_variance_ratio(cov: np.ndarray) -> np.ndarray:
    """Covariance [D, D] -> variance share of each principal component [D], descending, summing to 1."""
    # A covariance is symmetric PSD, so its singular values are its eigenvalues, already sorted.
    s = np.linalg.svd(cov, compute_uv=False, hermitian=True)
    total = s.sum()
    return s / total if total > 0 else s


def components_for(ratios: np.ndarray, fraction: float) -> int:
    """Fewest leading components whose variance shares sum to at least ``fraction``."""
    cum = np.cumsum(ratios)
    # The tolerance absorbs rounding in data that lie exactly on a subspace (cum reaches 1 - 1e-16).
    return int(min(np.searchsorted(cum, fraction - 1e-9) + 1, ratios.size))


class Moments:
    """Streaming mean and scatter matrix of rows [n, D] in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        x = np.asarray(x, dtype=np.float64)
        nb, mb = len(x), x.mean(0)
        xc = x - mb
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mb, xc.T @ xc
            return
        # Chan et al.: merge (n, mean, M2) of two parts without a second pass over the data.
        delta, n = mb - self.mean, self.n + nb
        self.m2 += xc.T @ xc + np.outer(delta, delta) * (self.n * nb / n)
        self.mean = self.mean + delta * (nb / n)
        self.n = n

    def covariance(self) -> np.ndarray:
        return self.m2 / max(self.n - 1, 1)


# ----------------------------------------------------------------------------------------------
# TwoNN
# ----------------------------------------------------------------------------------------------


class RowReservoir:
    """Uniform sample without replacement of at most ``k`` rows of a stream: each row gets a random key
    and the k smallest keys are kept."""

    def __init__(self, k: int, seed: int = 0) -> None:
        self.k = k
        self.rng = np.random.default_rng(seed)
        self.rows: np.ndarray | None = None
        self.keys = np.empty(0)

    def update(self, x: np.ndarray) -> None:
        keys = self.rng.random(len(x))
        if self.rows is not None and len(self.rows) >= self.k:
            # Once full, only rows that beat the current largest kept key can enter; skip copying the rest.
            better = keys < self.keys.max()
            x, keys = x[better], keys[better]
        rows = x if self.rows is None else np.concatenate([self.rows, x])
        keys = np.concatenate([self.keys, keys])
        if len(rows) > self.k:
            keep = np.argpartition(keys, self.k)[: self.k]
            rows, keys = rows[keep], keys[keep]
        self.rows, self.keys = rows, keys


def nearest_two(x: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Distances of every row of x [N, D] to its first and second nearest other rows -> [N, 2].

    torch.cdist in float64 over row chunks keeps memory at chunk * N.
    """
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    out = np.empty((len(t), 2))
    for start in range(0, len(t), chunk):
        d = torch.cdist(t[start : start + chunk], t)  # [c, N]
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = float("inf")  # a point is not its own neighbour
        out[start : start + chunk] = d.topk(2, dim=1, largest=False).values.numpy()
    return out


def twonn(x: np.ndarray, discard: float = 0.1) -> dict[str, float]:
    """TwoNN intrinsic dimension of the rows of x [N, D] (N >= 3 distinct rows, else NaN).

    Returns ``mle`` (the maximum-likelihood estimate), ``fit`` (Facco et al.'s linear fit) and ``points``
    (distinct rows used).
    """
    x = np.unique(np.asarray(x, dtype=np.float64), axis=0)
    if len(x) < 3:
        return {"mle": float("nan"), "fit": float("nan"), "points": len(x)}
    r = nearest_two(x)
    r = r[r[:, 0] > 0]  # rounding can still leave r1 = 0 for near-identical rows
    log_mu = np.sort(np.log(r[:, 1] / r[:, 0]))
    n = len(log_mu)
    mle = (n - 1) / log_mu.sum() if log_mu.sum() > 0 else float("inf")
    kept = int(np.floor((1 - discard) * n))
    f = np.arange(1, kept + 1) / n  # empirical CDF of the sorted mu, F < 1 on the kept part
    y = -np.log1p(-f)
    xs = log_mu[:kept]
    fit = float(xs @ y / (xs @ xs)) if kept and xs @ xs > 0 else float("nan")
    return {"mle": float(mle), "fit": fit, "points": n}


# ----------------------------------------------------------------------------------------------
# Accumulators
# ----------------------------------------------------------------------------------------------


class FeatureStats:
    """PCA spectrum and TwoNN dimension of a stream of feature rows [n, C]."""

    def __init__(self, max_points: int, seed: int = 0) -> None:
        self.moments = Moments()
        self.reservoir = RowReservoir(max_points, seed)

    def update(self, x: np.ndarray) -> None:
        self.moments.update(x)
        self.reservoir.update(x)

    def summary(self, curve: bool = False) -> dict:
        if self.moments.n < 2:
            return {"count": self.moments.n}
        ratios = explained_variance_ratio(self.moments.covariance())
        out: dict = {"count": self.moments.n, "dim": int(ratios.size)}
        for f in FRACTIONS:
            out[f"pca{round(f * 100)}"] = components_for(ratios, f)
        found = twonn(self.reservoir.rows)
        out.update(twonn_mle=found["mle"], twonn_fit=found["fit"], twonn_points=found["points"])
        if curve:
            out["explained_variance"] = [float(f"{r:.6g}") for r in ratios]
        return out


class CosineStats:
    """Mean and quantiles of a stream of cosine similarities (histogram of 4000 bins on [-1, 1])."""

    BINS = 4000

    def __init__(self) -> None:
        self.hist = np.zeros(self.BINS, dtype=np.int64)
        self.total = 0.0

    def update(self, cos: np.ndarray) -> None:
        idx = np.clip(((cos + 1) / 2 * self.BINS).astype(np.int64), 0, self.BINS - 1)
        self.hist += np.bincount(idx, minlength=self.BINS)
        self.total += float(cos.sum())

    def summary(self) -> dict[str, float]:
        n = int(self.hist.sum())
        width = 2 / self.BINS

        def value(q: float) -> float:
            return -1 + (hist_quantile(self.hist, q) + 0.5) * width  # bin centre, error <= width / 2

        return {"count": n, "mean": self.total / n, "median": value(0.5), "p05": value(0.05), "min": value(0.0)}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of a, b [n, C] -> [n]."""
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


class EmbeddingStats:
    """Per model: token-level and pooled feature statistics; for every model after the first, its
    cosine agreement with the first (the teacher) on the same tokens and prompts."""

    def __init__(self, models: list[str], max_points: int, seed: int = 0) -> None:
        self.models = models
        self.tokens = {m: FeatureStats(max_points, seed) for m in models}
        self.pooled = {m: FeatureStats(max_points, seed) for m in models}
        self.agree = {m: (CosineStats(), CosineStats()) for m in models[1:]}

    def update(self, feats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """feats: model -> (token rows [n, C], pooled [B, C]) of the same batch of prompts."""
        ref_tokens, ref_pooled = feats[self.models[0]]
        for m, (tokens, pooled) in feats.items():
            self.tokens[m].update(tokens)
            self.pooled[m].update(pooled)
            if m in self.agree and tokens.shape[1] == ref_tokens.shape[1]:
                self.agree[m][0].update(cosine(tokens, ref_tokens))
                self.agree[m][1].update(cosine(pooled, ref_pooled))

    def summary(self, curve: bool = False) -> dict[str, dict]:
        out = {}
        for m in self.models:
            out[m] = {"tokens": self.tokens[m].summary(curve), "pooled": self.pooled[m].summary(curve)}
            if m in self.agree:
                tok, pool = self.agree[m]
                out[m]["agreement"] = (
                    {"reference": self.models[0], "tokens": tok.summary(), "pooled": pool.summary()}
                    if tok.hist.any()
                    else {"reference": self.models[0], "skipped": "feature widths differ"}
                )
        return out


# ----------------------------------------------------------------------------------------------
# Running the models
# ----------------------------------------------------------------------------------------------


@torch.inference_mode()
def text_features(model: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Prompt tokens of a batch: token rows [sum(mask), C] (BOS..EOS of each prompt, in order) and pooled
    features [B, C] (masked mean over each prompt's rows)."""
    feats = model.get_text_features(input_ids, mask).pooler_output.float()  # [B, T, C]
    m = mask.to(feats.device)
    tokens = feats[m.bool()]
    pooled = (feats * m[..., None]).sum(1) / m.sum(1, keepdim=True)
    return tokens.cpu().numpy(), pooled.cpu().numpy()


def embed_corpora(
    models: dict[str, torch.nn.Module],
    samples: dict[str, list[str]],
    pooled_corpora: Iterable[str],
    context_length: int = 32,
    batch_size: int = 64,
    max_points: int = 10000,
    seed: int = 0,
    progress: bool | None = None,
) -> tuple[dict[str, dict], dict]:
    """Embedding statistics of each corpus sample and of all samples of ``pooled_corpora`` together.

    ``progress``: show a progress bar (None: only on a terminal).

    Prompts longer than ``context_length`` - 2 tokens are truncated as the processor would (the
    tokenizer's warning is silenced; the corpus statistics report the truncation rate).

    Returns:
        ({corpus: {model: stats}}, {model: stats} for the pooled samples, with explained-variance curves).
    """
    from tqdm.auto import tqdm

    names = list(models)
    tok = Tokenizer(context_length)
    pooled_set = set(pooled_corpora)
    overall = EmbeddingStats(names, max_points, seed)
    per_corpus: dict[str, dict] = {}
    disable = None if progress is None else not progress  # tqdm: None = only on a terminal
    bar = tqdm(total=sum(len(s) for s in samples.values()), desc="embedding", unit="prompt", disable=disable)
    for corpus, prompts in samples.items():
        lengths, _ = encode(prompts) if prompts else (np.zeros(0), None)
        prompts = [p for p, n in zip(prompts, lengths, strict=True) if n > 0]  # the tokenizer rejects token-less text
        stats = EmbeddingStats(names, max_points, seed)
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ids, mask = tok(batch)
            feats = {}
            for name, model in models.items():
                feats[name] = text_features(model, ids.to(model.device), mask.to(model.device))
            stats.update(feats)
            if corpus in pooled_set:
                overall.update(feats)
            bar.update(len(batch))
        per_corpus[corpus] = stats.summary()
    bar.close()
    return per_corpus, overall.summary(curve=True)
