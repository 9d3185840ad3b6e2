"""Prompt anatomy, embedding side: PCA and TwoNN on data of known dimension, streaming accumulators,
cosine agreement, and ``sam3lite anatomy --model`` on tiny random checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from sam3lite.anatomy.corpus import encode
from sam3lite.anatomy.embeddings import (
    CosineStats,
    FeatureStats,
    Moments,
    RowReservoir,
    components_for,
    explained_variance_ratio,
    nearest_two,
    twonn,
)
from sam3lite.cli import main


def on_subspace(n: int, k: int, dim: int = 64, seed: int = 0, noise: float = 0.0) -> np.ndarray:
    """n isotropic Gaussian points on a random k-dimensional linear subspace of R^dim (shifted off 0)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, k)))  # [dim, k] orthonormal columns
    x = rng.standard_normal((n, k)) @ basis.T + 3.0 * rng.standard_normal(dim)
    return x + noise * rng.standard_normal((n, dim))


# ----------------------------------------------------------------------------------------------
# PCA
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 8])
def test_pca_components_equal_subspace_dimension(k):
    x = on_subspace(2000, k)
    ratios = explained_variance_ratio(np.cov(x, rowvar=False))
    assert ratios.shape == (64,) and ratios.sum() == pytest.approx(1.0)
    assert np.all(np.diff(ratios) <= 1e-12)  # descending
    assert components_for(ratios, 0.99) == k
    assert components_for(ratios, 0.90) <= k


def test_components_for_exact_levels():
    ratios = np.array([0.5, 0.3, 0.15, 0.04, 0.01])
    assert [components_for(ratios, f) for f in (0.5, 0.8, 0.9, 0.95, 0.99, 1.0)] == [1, 2, 3, 3, 4, 5]


def test_streamed_moments_equal_numpy():
    x = on_subspace(1000, 5, dim=16)
    m = Moments()
    for start in range(0, 1000, 137):  # uneven batches
        m.update(x[start : start + 137])
    assert m.n == 1000
    np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.covariance(), np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# TwoNN
# ----------------------------------------------------------------------------------------------


def test_nearest_two_matches_brute_force():
    x = np.random.default_rng(1).standard_normal((300, 7))
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(nearest_two(x, chunk=64), np.sort(d, axis=1)[:, :2], rtol=1e-9)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_twonn_recovers_subspace_dimension(k):
    found = twonn(on_subspace(2000, k, dim=64, seed=k))
    # The MLE's standard error is about k / sqrt(N) (~2% here); allow 10%.
    assert found["mle"] == pytest.approx(k, rel=0.1)
    assert found["fit"] == pytest.approx(k, rel=0.1)
    assert found["points"] == 2000


def test_twonn_ignores_duplicate_points():
    x = on_subspace(1000, 4, seed=3)
    with_dups = np.concatenate([x, x[:500], np.repeat(x[:1], 50, axis=0)])
    assert twonn(with_dups) == twonn(x)


def test_twonn_too_few_points_is_nan():
    assert np.isnan(twonn(np.ones((10, 3)))["mle"])


def test_feature_stats_on_known_subspace():
    x = on_subspace(3000, 6, dim=32, seed=7)
    stats = FeatureStats(max_points=1000, seed=0)
    for start in range(0, 3000, 256):
        stats.update(x[start : start + 256])
    s = stats.summary(curve=True)
    assert s["count"] == 3000 and s["dim"] == 32 and s["pca99"] == 6 and s["twonn_points"] == 1000
    assert s["twonn_mle"] == pytest.approx(6, rel=0.15)
    assert len(s["explained_variance"]) == 32 and sum(s["explained_variance"]) == pytest.approx(1.0, abs=1e-5)


def test_row_reservoir_uniform_and_bounded():
    res = RowReservoir(k=200, seed=0)
    rows = np.arange(5000, dtype=np.float64)[:, None]
    for start in range(0, 5000, 300):
        res.update(rows[start : start + 300])
    kept = res.rows[:, 0]
    assert kept.shape == (200,) and len(np.unique(kept)) == 200
    assert 1500 < kept.mean() < 3500  # a uniform sample of 0..4999 has mean ~2500 (sd ~100)


def test_cosine_stats_known_values():
    c = CosineStats()
    c.update(np.array([1.0, 1.0, 0.5, -1.0]))
    c.update(np.array([0.0]))
    s = c.summary()
    assert s["count"] == 5 and s["mean"] == pytest.approx(0.3)
    assert s["median"] == pytest.approx(0.5, abs=1e-3) and s["min"] == pytest.approx(-1.0, abs=1e-3)


# ----------------------------------------------------------------------------------------------
# Models (tiny random checkpoints)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """Tiny random student (MobileCLIP s0 layout), an identical copy, and a CLIP teacher, saved in the HF
    layout. Built with sam3lite itself: importing transformers would cost more than the tests."""
    from reference import randomize_, tiny_config_dict

    from sam3lite import Sam3LiteTextModel

    root = tmp_path_factory.mktemp("anatomy_models")
    for name, text, seed in (("student", "s0", 0), ("teacher", "sam3", 1)):
        randomize_(Sam3LiteTextModel(tiny_config_dict(text)), seed).save_pretrained(root / name)
    shutil.copytree(root / "student", root / "student_copy")  # identical weights: agreement must be 1
    return root


PROMPTS = ["dog", "a red car", "the tree next to the house", "cat", "blue green tree", "a dog on a car", "house"] * 3


def test_cli_embeddings_identical_models_agree(tiny_checkpoints, tmp_path):
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("\n".join(PROMPTS) + "\n")
    a, b = str(tiny_checkpoints / "student"), str(tiny_checkpoints / "student_copy")
    out = tmp_path / "out"
    assert main(["anatomy", str(corpus), "--model", a, b, "--embed-length", "8", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    emb = report["overall"]["embeddings"]
    assert list(emb) == [a, b]
    lengths, _ = encode(PROMPTS)
    real_tokens = int(np.minimum(lengths + 2, 8).sum())  # BOS + tokens + EOS, cut to L = 8
    for model in (a, b):
        assert emb[model]["tokens"]["count"] == real_tokens and emb[model]["pooled"]["count"] == len(PROMPTS)
        assert emb[model]["tokens"]["dim"] == 32  # the tiny detector's width
        assert 1 <= emb[model]["pooled"]["pca99"] <= 7  # 7 distinct prompts span at most 6 dims (+ rounding)
    agreement = emb[b]["agreement"]
    assert agreement["reference"] == a
    assert agreement["tokens"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert agreement["pooled"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert report["corpora"]["prompts"]["embeddings"][b]["agreement"]["tokens"]["count"] == real_tokens
    assert (out / "pca.png").exists() and "Teacher-student agreement" in (out / "report.md").read_text()


def test_cli_embeddings_teacher_and_student(tiny_checkpoints, tmp_path):
    corpus = tmp_path / "nouns.txt"
    corpus.write_text("\n".join(f"{c} {w}" for c in ("red", "blue", "green") for w in ("dog", "car", "tree")) + "\n")
    teacher, student = str(tiny_checkpoints / "teacher"), str(tiny_checkpoints / "student")
    out = tmp_path / "out"
    args = ["anatomy", str(corpus), "--model", teacher, "--model", student, "--embed-prompts", "5", "--out", str(out)]
    assert main(args) == 0
    emb = json.loads((out / "report.json").read_text())["overall"]["embeddings"]
    assert emb[teacher]["pooled"]["count"] == 5  # the per-corpus sample cap
    agreement = emb[student]["agreement"]["tokens"]
    assert -1.0 <= agreement["p05"] <= agreement["median"] <= 1.0 and agreement["mean"] < 0.99
    assert "agreement" not in emb[teacher]


def test_cli_unknown_model_is_a_usage_error(tmp_path, capsys):
    corpus = tmp_path / "p.txt"
    corpus.write_text("dog\n")
    assert main(["anatomy", str(corpus), "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err
