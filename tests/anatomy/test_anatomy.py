"""Prompt anatomy, corpus side: token counts, context use and vocabulary on corpora with known answers,
and the ``sam3lite anatomy`` command (report layout, errors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sam3lite.anatomy.corpus import (
    CorpusCounts,
    context_stats,
    corpus_stats,
    encode,
    hist_quantile,
    merge,
    read_prompts,
    vocab_stats,
)
from sam3lite.cli import main
from sam3lite.processing.tokenizer import VOCAB_SIZE

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "data/prompts"  # samples: see its README.md
ONE_TOKEN_WORDS = ["dog", "cat", "red", "car", "tree", "house", "blue", "green"]  # each one BPE token


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def counts_of(lines: list[str]) -> CorpusCounts:
    c = CorpusCounts()
    c.update(lines)
    return c


def test_one_token_words_are_one_token():
    lengths, ids = encode(ONE_TOKEN_WORDS)
    assert lengths.tolist() == [1] * len(ONE_TOKEN_WORDS)
    assert len(set(ids.tolist())) == len(ONE_TOKEN_WORDS)


# ----------------------------------------------------------------------------------------------
# Known answers
# ----------------------------------------------------------------------------------------------


def test_fixed_length_prompts_exact_context_fractions():
    prompt = " ".join(ONE_TOKEN_WORDS[:6])  # 6 tokens -> 8 positions with BOS and EOS
    stats = corpus_stats(counts_of([prompt] * 50), [4, 8, 16, 32])
    assert stats["prompts"] == 50 and stats["unique_prompts"] == 1
    assert stats["tokens_mean"] == stats["tokens_median"] == stats["tokens_p95"] == 6.0
    ctx = stats["context"]
    assert ctx["4"] == {"truncated": 1.0, "padding": 0.0, "density": 1.0}
    assert ctx["8"] == {"truncated": 0.0, "padding": 0.0, "density": 1.0}  # 6 + 2 == L is not truncated
    assert ctx["16"] == {"truncated": 0.0, "padding": 0.5, "density": 0.5}
    assert ctx["32"] == {"truncated": 0.0, "padding": 0.75, "density": 0.25}


def test_mixed_lengths_truncation_and_padding():
    short, long = "dog", " ".join(["dog"] * 20)  # 1 and 20 tokens
    stats = corpus_stats(counts_of([short] * 10 + [long] * 10), [8, 22, 23])
    assert stats["tokens_mean"] == 10.5 and stats["tokens_median"] == 10.5 and stats["tokens_max"] == 20
    # L=8: the short ones use 3 positions (5 pad), the long ones are cut to 8 (0 pad).
    assert stats["context"]["8"]["truncated"] == 0.5
    assert stats["context"]["8"]["padding"] == pytest.approx(10 * 5 / (20 * 8))
    assert stats["context"]["22"]["truncated"] == 0.0  # 20 + 2 fits exactly
    assert stats["context"]["23"]["padding"] == pytest.approx((10 * 20 + 10 * 1) / (20 * 23))


def test_known_vocabulary_coverage():
    lines = ["dog"] * 50 + ["cat"] * 30 + ["red"] * 15 + ["car"] * 5
    v = vocab_stats(counts_of(lines).token_counts)
    assert v["occurrences"] == 100 and v["distinct"] == 4
    assert v["share"] == pytest.approx(4 / VOCAB_SIZE)
    # 50 + 30 + 15 = 95: three ids cover 90% and exactly 95%; 99% needs all four.
    assert (v["cover90"], v["cover95"], v["cover99"]) == (3, 3, 4)
    assert v["top"][0] == ["dog ", 50] and [t for t, _ in v["top"]] == ["dog ", "cat ", "red ", "car "]


def test_uniform_vocabulary_coverage():
    # 100 ids used equally: 90 / 95 / 99 of them cover 90 / 95 / 99%.
    counts = np.zeros(VOCAB_SIZE, dtype=np.int64)
    counts[1000:1100] = 7
    v = vocab_stats(counts)
    assert (v["distinct"], v["cover90"], v["cover95"], v["cover99"]) == (100, 90, 95, 99)


@pytest.mark.parametrize("q", [0.0, 0.05, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0])
def test_hist_quantile_matches_numpy(q):
    values = np.random.default_rng(0).poisson(4, size=1001)
    for sample in (values, values[:1000], values[:2]):
        assert hist_quantile(np.bincount(sample), q) == pytest.approx(np.quantile(sample, q))


def test_context_stats_empty_is_nan():
    assert np.isnan(context_stats(np.zeros(3, dtype=np.int64), 16)["padding"])


def test_merge_equals_pooled_corpus():
    a, b = ["dog", "red car", "a red car"], ["tree house", "dog", "blue green tree"]
    merged = corpus_stats(merge([counts_of(a), counts_of(b)]), [8])
    pooled = corpus_stats(counts_of(a + b), [8])
    assert merged == pooled
    assert merged["prompts"] == 6 and merged["unique_prompts"] == 5


def test_reservoir_sample_is_bounded_and_from_the_corpus():
    lines = [f"prompt {i}" for i in range(1000)]
    c = CorpusCounts(sample_size=50, seed=1)
    for start in range(0, 1000, 64):
        c.update(lines[start : start + 64])
    assert len(c.sample) == 50 and len(set(c.sample)) == 50 and set(c.sample) <= set(lines)
    # Uniform over the stream: not just the first 50, and late items get in.
    assert max(int(p.split()[1]) for p in c.sample) > 500


# ----------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------


def test_read_prompts_skips_blank_strips_and_batches(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes("\ufeffdog\n\n  red car  \n\t\ncat\r\n".encode() + b"tree")
    batches = list(read_prompts(path, batch_lines=2))
    assert [b for b, _ in batches] == [["dog", "red car"], ["cat", "tree"]]
    assert sum(n for _, n in batches) == path.stat().st_size


def test_read_prompts_names_bad_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"dog\n\xff\xfe cat\n")
    with pytest.raises(ValueError, match="bad.txt: line 2 is not UTF-8"):
        list(read_prompts(path))


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


def test_cli_report_layout(tmp_path, capsys):
    short = write_lines(tmp_path / "short.txt", ["dog"] * 10 + ["red car"] * 10)
    long = write_lines(tmp_path / "long.txt", [" ".join(["dog"] * 20)] * 5)
    extra = write_lines(tmp_path / "defs.txt", ["a tree"] * 3)
    out = tmp_path / "out"
    code = main(["anatomy", str(short), str(long), str(extra), "--separate", "defs", "--context-lengths", "16,8",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["corpora"]) == {"short", "long", "defs"} and report["separate"] == ["defs"]
    for stats in [*report["corpora"].values(), report["overall"]]:
        assert isinstance(stats["prompts"], int)
        for key in ("tokens_mean", "tokens_median", "tokens_p95"):
            assert isinstance(stats[key], float)
        assert set(stats["context"]) == {"8", "16"}
        for c in stats["context"].values():
            assert set(c) == {"truncated", "padding", "density"}
            assert all(0.0 <= x <= 1.0 for x in c.values())
        assert {"distinct", "share", "cover90", "cover95", "cover99"} <= set(stats["vocab"])
        assert "embeddings" not in stats
    overall = report["overall"]
    assert overall["prompts"] == 25  # defs is reported but not pooled
    assert overall["tokens_mean"] == pytest.approx((10 * 1 + 10 * 2 + 5 * 20) / 25)
    assert overall["context"]["8"]["truncated"] == pytest.approx(5 / 25)
    assert report["corpora"]["long"]["context"]["16"] == {"truncated": 1.0, "padding": 0.0, "density": 1.0}
    md = (out / "report.md").read_text()
    assert "| **overall** | 25 |" in md and "defs *(separate)*" in md
    for png in ("lengths.png", "lengths_by_corpus.png", "context.png", "rank_frequency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png})" in md
    assert "25 prompts in 3 corpora" in capsys.readouterr().out


def test_cli_directory_argument(tmp_path):
    write_lines(tmp_path / "a.txt", ["dog", "cat"])
    write_lines(tmp_path / "b.txt", ["red car"])
    (tmp_path / "ignored.md").write_text("not a prompt file\n")
    assert main(["anatomy", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(report["corpora"]) == ["a", "b"] and report["overall"]["prompts"] == 3


@pytest.mark.parametrize(
    "setup, extra, message",
    [
        (lambda d: None, [], "no such prompt file"),
        (lambda d: write_lines(d / "x.txt", ["", "   "]), [], "no prompts"),
        (lambda d: write_lines(d / "x.txt", ["dog"]), ["--context-lengths", "8,x"], "comma-separated integers"),
        (lambda d: write_lines(d / "x.txt", ["dog"]), ["--context-lengths", "2,16"], ">= 3"),
        (lambda d: write_lines(d / "x.txt", ["dog"]), ["--separate", "nope"], "--separate names no corpus"),
        (lambda d: write_lines(d / "x.txt", ["dog"]), ["--separate", "x"], "nothing left for 'overall'"),
        (lambda d: (d / "x.txt").write_bytes(b"\xff\n"), [], "not UTF-8"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys, setup, extra, message):
    setup(tmp_path)
    code = main(["anatomy", str(tmp_path / "x.txt"), *extra, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_rejects_two_files_with_one_name(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    files = [str(write_lines(tmp_path / d / "same.txt", ["dog"])) for d in ("a", "b")]
    assert main(["anatomy", *files, "--out", str(tmp_path / "out")]) == 2
    assert "share the corpus name 'same'" in capsys.readouterr().err


def test_public_prompt_list_samples(tmp_path):
    files = [PROMPTS_DIR / "lvis_v1.txt", PROMPTS_DIR / "coco80.txt", PROMPTS_DIR / "refytvos_valid_expressions.txt"]
    assert main(["anatomy", *map(str, files), "--out", str(tmp_path)]) == 0
    corpora = json.loads((tmp_path / "report.json").read_text())["corpora"]
    # Line counts of the samples; category names are short, referring expressions much longer.
    assert [corpora[n]["prompts"] for n in ("lvis_v1", "coco80", "refytvos_valid_expressions")] == [300, 80, 300]
    assert 1.0 < corpora["coco80"]["tokens_mean"] < corpora["lvis_v1"]["tokens_mean"] < 3.0
    assert 8.0 < corpora["refytvos_valid_expressions"]["tokens_mean"] < 12.0
    assert corpora["coco80"]["context"]["16"]["truncated"] == 0.0


def test_report_json_is_strict(tmp_path):
    from sam3lite.anatomy.report import write_json

    write_json({"overall": {"twonn_mle": float("nan"), "x": [1.5, float("inf")]}}, tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and json.loads(text) == {"overall": {"twonn_mle": None, "x": [1.5, None]}}
