"""report.json, report.md and the PNG charts of a prompt-anatomy run.

report.json: ``{"corpora": {NAME: STATS}, "overall": STATS, "separate": [NAME], "settings": {...}}`` with
STATS as built by ``corpus.corpus_stats`` (plus ``"embeddings": {MODEL: ...}`` when models were given).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .plot import GREY, PALETTE, Axes, grid

DEFINITIONS = """\
- **Prompt**: every non-empty line of a file (stripped); duplicates are counted. A corpus is one file, named
  by its stem. **Overall** pools every corpus not listed as *separate*, again counting duplicates, so a
  prompt that appears in two files counts twice.
- **Tokens**: CLIP BPE tokens of the processor's tokenizer (49,408 ids; lowercased), *without* BOS and
  EOS and without truncation. Percentiles interpolate linearly between order statistics (numpy's default).
- **Context length L** counts BOS and EOS: a prompt of n tokens fills min(n + 2, L) positions.
  *Truncated* = share of prompts with n + 2 > L; *padding* = pad positions / all N x L positions;
  *density* = 1 - padding.
- **Vocabulary**: distinct token ids used, their share of the 49,408-id vocabulary, and the number of most
  frequent ids that together make up 90 / 95 / 99% of all token occurrences (BOS/EOS not counted).
"""

EMBEDDING_DEFINITIONS = """\
- **Embeddings**: the detector's prompt tokens, `get_text_features(...).pooler_output` (C-d after
  `text_projection`), for a uniform sample of at most {embed_prompts} prompts per corpus, padded or
  truncated to L = {embed_length} as the processor does. *Token* rows are every real position (BOS, tokens,
  EOS); a *pooled* feature is the masked mean of a prompt's rows. *Overall* pools the samples of the
  non-separate corpora, so small corpora weigh more here than in the token statistics.
- **PCA**: eigenvalues of the exact (streamed, float64) covariance; *PCA 90/95/99* = fewest components
  explaining that share of the variance.
- **TwoNN** (Facco et al. 2017) on a uniform sample of at most {max_points} rows, exact duplicates removed:
  *MLE* d = (N - 1) / sum log(r2 / r1); *fit* = slope of -log(1 - F(mu)) on log(mu) through the origin,
  10% largest mu discarded.
- **Agreement**: cosine similarity between each model's features and the first model's (the teacher) on
  the same tokens (and pooled features) of the same prompts.
"""


def write_json(report: dict, path: Path) -> None:
    """Strict JSON: NaN / infinity (e.g. TwoNN on fewer than 3 distinct rows) become null."""
    path.write_text(json.dumps(_finite(report), indent=1, allow_nan=False) + "\n")


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------


def _pct(x: float, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if 0 < 100 * x < 10**-digits:  # a few prompts in a large corpus: show them rather than 0.0%
        return f"{100 * x:.2g}%"
    return f"{100 * x:.{digits}f}%"


def _num(x: float, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _rows(report: dict) -> list[tuple[str, dict]]:
    """(label, STATS) for every corpus, then overall; separate corpora are marked."""
    sep = set(report.get("separate", []))
    rows = [(f"{name} *(separate)*" if name in sep else name, s) for name, s in report["corpora"].items()]
    return rows + [("**overall**", report["overall"])]


def length_table(report: dict) -> str:
    rows = [
        [
            label,
            f"{s['prompts']:,}",
            f"{s['unique_prompts']:,}",
            _num(s["tokens_mean"]),
            _num(s["tokens_median"], 1),
            _num(s["tokens_p95"], 1),
            str(s["tokens_max"]),
        ]
        for label, s in _rows(report)
    ]
    return _table(["corpus", "prompts", "distinct", "tokens mean", "median", "p95", "max"], rows)


def context_table(report: dict) -> str:
    lengths = report["settings"]["context_lengths"]
    header = ["corpus"] + [f"L={L} trunc / pad" for L in lengths]
    rows = []
    for label, s in _rows(report):
        cells = [
            f"{_pct(s['context'][str(L)]['truncated'])} / {_pct(s['context'][str(L)]['padding'])}" for L in lengths
        ]
        rows.append([label, *cells])
    return _table(header, rows)


def overall_context_table(report: dict) -> str:
    ctx = report["overall"]["context"]
    rows = [
        [str(L), _pct(ctx[str(L)]["truncated"]), _pct(ctx[str(L)]["padding"]), _num(ctx[str(L)]["density"], 3)]
        for L in report["settings"]["context_lengths"]
    ]
    return _table(["L", "truncated", "padding", "density"], rows)


def vocab_table(report: dict) -> str:
    rows = []
    for label, s in _rows(report):
        v = s["vocab"]
        rows.append(
            [
                label,
                f"{v['occurrences']:,}",
                f"{v['distinct']:,}",
                _pct(v["share"], 2),
                str(v["cover90"]),
                str(v["cover95"]),
                str(v["cover99"]),
            ]
        )
    return _table(["corpus", "token occurrences", "distinct ids", "vocab share", "90%", "95%", "99%"], rows)


def embedding_tables(report: dict) -> str:
    rows, agree = [], []
    for label, s in _rows(report):
        for model, e in s.get("embeddings", {}).items():
            for kind in ("tokens", "pooled"):
                f = e[kind]
                if "dim" not in f:
                    continue
                rows.append(
                    [label, f"`{model}`", kind, f"{f['count']:,}", str(f["dim"]), str(f["pca90"]), str(f["pca95"]),
                     str(f["pca99"]), _num(f["twonn_mle"], 1), _num(f["twonn_fit"], 1), f"{f['twonn_points']:,}"]
                )  # fmt: skip
            a = e.get("agreement")
            if a and "tokens" in a:
                t, p = a["tokens"], a["pooled"]
                agree.append(
                    [label, f"`{model}` vs `{a['reference']}`", _num(t["mean"], 3), _num(t["median"], 3),
                     _num(t["p05"], 3), _num(p["mean"], 3), _num(p["median"], 3), _num(p["p05"], 3)]
                )  # fmt: skip
    header = ["corpus", "model", "rows", "count", "dim", "PCA 90%", "95%", "99%", "TwoNN MLE", "TwoNN fit", "points"]
    out = _table(header, rows)
    if agree:
        header = ["corpus", "models", "token cos mean", "median", "p05", "pooled cos mean", "median", "p05"]
        out += "\n\nTeacher-student agreement (cosine of the features at the same positions):\n\n" + _table(
            header, agree
        )
    return out


def render_markdown(report: dict, plots: list[str], notes: str = "") -> str:
    settings = report["settings"]
    o = report["overall"]
    n_corpora = len(report["corpora"]) - len(report.get("separate", []))
    parts = [
        "# Prompt anatomy",
        f"Generated by `{settings['command']}` (sam3lite {settings['version']}).",
        "## How the numbers are computed",
        DEFINITIONS + (EMBEDDING_DEFINITIONS.format(**settings) if settings.get("models") else ""),
    ]
    if notes.strip():
        parts += ["## Corpora", notes.strip()]
    v = o["vocab"]
    parts += [
        "## Overall",
        f"{o['prompts']:,} prompts ({o['unique_prompts']:,} distinct) from {n_corpora} corpora: "
        f"{_num(o['tokens_mean'])} tokens on average (median {_num(o['tokens_median'], 1)}, "
        f"p95 {_num(o['tokens_p95'], 1)}, max {o['tokens_max']}); {v['distinct']:,} distinct token ids "
        f"({_pct(v['share'], 1)} of the vocabulary), of which {v['cover90']:,} / {v['cover95']:,} / "
        f"{v['cover99']:,} cover 90 / 95 / 99% of all token occurrences.",
        overall_context_table(report),
        "Most frequent tokens (`·` marks the end of a word): "
        + ", ".join(f"`{t.rstrip()}{'·' if t.endswith(' ') else ''}` {c:,}" for t, c in v["top"][:20])
        + ".",
        "## Tokens per prompt",
        length_table(report),
        "## Context length: truncated / padding",
        context_table(report),
        "## Vocabulary (ids covering 90 / 95 / 99% of occurrences)",
        vocab_table(report),
    ]
    if settings.get("models"):
        parts += ["## Embeddings", embedding_tables(report)]
    if plots:
        parts += ["## Plots", "\n\n".join(f"![{Path(p).stem}]({p})" for p in plots)]
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------
# Charts
# ----------------------------------------------------------------------------------------------


def _length_chart(stats: dict, title: str, size=(720, 420), font_size: int = 13, cap: int = 40) -> Axes:
    """Share of prompts per token count; counts above ``cap`` are folded into the last bar."""
    hist = np.asarray(stats["tokens_histogram"], dtype=np.float64)
    if hist.size > cap + 1:
        hist = np.concatenate([hist[:cap], [hist[cap:].sum()]])
    share = hist / max(hist.sum(), 1)
    ax = Axes(title=title, xlabel="BPE tokens per prompt (no BOS/EOS)", ylabel="share of prompts", size=size,
              font_size=font_size, integer_x=True)  # fmt: skip
    ax.bars(range(hist.size), share, color=PALETTE[0])
    return ax


def _log_spaced(counts: np.ndarray, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """(ranks, counts) at about ``points`` log-spaced ranks: a log-log line needs no more."""
    ranks = np.unique(np.geomspace(1, counts.size, points).round().astype(np.int64))
    return ranks, counts[ranks - 1]


def write_plots(report: dict, rank_freq: dict[str, np.ndarray], out: Path) -> list[str]:
    """Write the charts into ``out``; returns their file names.

    rank_freq: corpus name (and "overall") -> occurrences of used token ids, most frequent first.
    """
    files = []
    lengths = report["settings"]["context_lengths"]

    ax = _length_chart(report["overall"], "Tokens per prompt, overall")
    for i, L in enumerate(lengths):
        if L - 2 <= 40:
            ax.vline(L - 2 + 0.5, color=PALETTE[(i + 1) % len(PALETTE)], label=f"L={L}: {L - 2} tokens fit")
    ax.save(out / "lengths.png")
    files.append("lengths.png")

    separate = set(report.get("separate", []))
    charts = [
        _length_chart(s, f"{name} (separate)" if name in separate else name, size=(300, 190), font_size=10)
        for name, s in [*report["corpora"].items(), ("overall", report["overall"])]
    ]
    for c in charts:
        c.xlabel = c.ylabel = ""
    grid(charts, cols=5).save(out / "lengths_by_corpus.png", optimize=True)
    files.append("lengths_by_corpus.png")

    ctx = report["overall"]["context"]
    ax = Axes(title="Context use, overall", xlabel="context length L (with BOS and EOS)",
              ylabel="% of prompts / positions", xlog=True, ylim=(0, 100), legend="center right")  # fmt: skip
    ax.line(lengths, [100 * ctx[str(L)]["padding"] for L in lengths], label="padding", marker=True)
    ax.line(lengths, [100 * ctx[str(L)]["truncated"] for L in lengths], label="truncated", marker=True)
    ax.xlim, ax.xticks = (min(lengths) / 1.3, max(lengths) * 1.3), [float(L) for L in lengths]
    ax.save(out / "context.png")
    files.append("context.png")

    ax = Axes(title="Token rank-frequency", xlabel="rank", ylabel="occurrences", xlog=True, ylog=True)
    for name, counts in rank_freq.items():
        if name != "overall" and counts.size:
            ax.line(*_log_spaced(counts), color=GREY, width=1)
    ax.line(*_log_spaced(rank_freq["overall"]), color=PALETTE[3], label="overall")
    ax.line([1], [1], color=GREY, label="each corpus")  # legend entry only
    ax.save(out / "rank_frequency.png")
    files.append("rank_frequency.png")

    embeddings = report["overall"].get("embeddings", {})
    if embeddings:
        ax = Axes(title="PCA of text features, overall", xlabel="principal components",
                  ylabel="cumulative explained variance", xlog=True, ylim=(0, 1), legend="lower right")  # fmt: skip
        for i, (model, e) in enumerate(embeddings.items()):
            for kind, dash in (("tokens", False), ("pooled", True)):
                curve = e[kind].get("explained_variance")
                if curve:
                    cum = np.cumsum(curve)
                    label = f"{Path(model).name or model} {kind}"
                    ax.line(np.arange(1, cum.size + 1), cum, color=PALETTE[i % len(PALETTE)], dash=dash, label=label)
                    ax.xlim = (1, cum.size)
        for level in (0.9, 0.95, 0.99):
            ax.hline(level)
        ax.save(out / "pca.png")
        files.append("pca.png")
    return files
