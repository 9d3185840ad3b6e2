"""``sam3lite anatomy``: token lengths, context use, vocabulary and embedding dimensionality of prompt files."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from . import UsageError

DEFAULT_CONTEXT_LENGTHS = "8,16,32,77"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "anatomy",
        help="measure prompts and text embeddings (tokens per prompt, context use, vocabulary, dimensionality)",
        description="Measure prompt files the way SAM3-LiteText's anatomical study does and write report.md, "
        "report.json and PNG charts. Every non-empty line is a prompt; each file is a corpus named by its stem.",
    )
    p.add_argument("prompt_files", nargs="+", metavar="PROMPT_FILES", help="text files (a directory: its *.txt)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory (created if needed)")
    p.add_argument(
        "--context-lengths",
        default=DEFAULT_CONTEXT_LENGTHS,
        metavar="L,L,...",
        help=f"context lengths to evaluate, counting BOS and EOS (default {DEFAULT_CONTEXT_LENGTHS})",
    )
    p.add_argument(
        "--model",
        action="extend",
        nargs="+",
        default=[],
        metavar="M",
        help="measure text features of these models (name, hub id or path); with several, each is compared "
        "with the first (the teacher). Put it after PROMPT_FILES.",
    )
    p.add_argument(
        "--separate",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="corpora (file stems) reported on their own but left out of 'overall', e.g. definitions or templates",
    )
    p.add_argument(
        "--notes", type=Path, metavar="FILE", help="markdown inserted into report.md (how corpora were treated)"
    )
    p.add_argument(
        "--embed-prompts", type=int, default=2000, metavar="N", help="prompts sampled per corpus for --model"
    )
    p.add_argument("--embed-length", type=int, default=32, metavar="L", help="context length for --model (default 32)")
    p.add_argument("--max-points", type=int, default=10000, metavar="N", help="feature rows sampled for TwoNN")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per model forward")
    p.add_argument("--device", default=None, help="device for --model: cpu (default), cuda, auto, ...")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt and row samples")
    return p


def parse_context_lengths(text: str) -> list[int]:
    """'8,16,32' -> [8, 16, 32] (sorted, unique); each L >= 3 (BOS, one token, EOS)."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise UsageError(f"--context-lengths must be comma-separated integers, got {text!r}") from None
    if not values or values[0] < 3:
        raise UsageError(f"--context-lengths must be integers >= 3 (BOS + a token + EOS), got {text!r}")
    return values


def resolve_files(paths: list[str]) -> list[Path]:
    """Prompt files in the given order; a directory stands for its *.txt files, sorted by name."""
    files: list[Path] = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            found = sorted(path.glob("*.txt"))
            if not found:
                raise UsageError(f"{path}: directory has no .txt files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such prompt file: {text}")
    stems: dict[str, Path] = {}
    for f in dict.fromkeys(files):  # the same file twice is one corpus
        if f.stem in stems and stems[f.stem].resolve() != f.resolve():
            raise UsageError(f"two prompt files share the corpus name {f.stem!r}: {stems[f.stem]} and {f}")
        stems.setdefault(f.stem, f)
    return list(stems.values())


def _check_args(args: argparse.Namespace) -> None:
    for name in ("embed_prompts", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_points < 3:
        raise UsageError("--max-points must be >= 3")
    if args.embed_length < 3:
        raise UsageError("--embed-length must be >= 3")
    if len(set(args.model)) != len(args.model):
        raise UsageError("the same --model is given twice")


def command_line(args: argparse.Namespace) -> str:
    """The command, rebuilt from the parsed arguments (for the report)."""
    parts = ["sam3lite", "anatomy", *args.prompt_files]
    if args.context_lengths != DEFAULT_CONTEXT_LENGTHS:
        parts += ["--context-lengths", args.context_lengths]
    if args.separate:
        parts += ["--separate", *args.separate]
    if args.notes:
        parts += ["--notes", str(args.notes)]
    for m in args.model:
        parts += ["--model", m]
    if args.model:
        parts += ["--embed-prompts", str(args.embed_prompts), "--embed-length", str(args.embed_length)]
    parts += ["--out", str(args.out)]
    return shlex.join(parts)


def count_corpora(files: list[Path], sample_size: int, seed: int):
    """Stream every file into a ``CorpusCounts`` -> {stem: counts}, with a progress bar over bytes."""
    from tqdm.auto import tqdm

    from ..anatomy.corpus import CorpusCounts, read_prompts

    counts = {}
    with tqdm(
        total=sum(f.stat().st_size for f in files), unit="B", unit_scale=True, desc="tokenizing", disable=None
    ) as bar:
        for i, f in enumerate(files):
            c = CorpusCounts(sample_size=sample_size, seed=seed + i)
            for prompts, nbytes in read_prompts(f):
                c.update(prompts)
                bar.update(nbytes)
            if c.prompts == 0:
                raise UsageError(f"{f}: no prompts (the file is empty or blank)")
            counts[f.stem] = c
    return counts


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..anatomy.corpus import corpus_stats, merge, rank_frequency
    from ..anatomy.report import render_markdown, write_json, write_plots

    _check_args(args)
    lengths = parse_context_lengths(args.context_lengths)
    files = resolve_files(args.prompt_files)
    names = [f.stem for f in files]
    unknown = sorted(set(args.separate) - set(names))
    if unknown:
        raise UsageError(f"--separate names no corpus: {', '.join(unknown)} (corpora: {', '.join(names)})")
    separate = [n for n in names if n in set(args.separate)]
    pooled = [n for n in names if n not in separate]
    if not pooled:
        raise UsageError("every corpus is --separate: nothing left for 'overall'")
    notes = args.notes.read_text(encoding="utf-8") if args.notes else ""

    counts = count_corpora(files, args.embed_prompts if args.model else 0, args.seed)
    overall_counts = merge(counts[n] for n in pooled)
    report = {
        "corpora": {n: corpus_stats(c, lengths) for n, c in counts.items()},
        "overall": corpus_stats(overall_counts, lengths),
        "separate": separate,
        "settings": {
            "command": command_line(args),
            "version": __version__,
            "context_lengths": lengths,
            "models": list(args.model),
            "embed_prompts": args.embed_prompts,
            "embed_length": args.embed_length,
            "max_points": args.max_points,
            "seed": args.seed,
        },
    }
    if args.model:
        _add_embeddings(report, args, {n: c.sample for n, c in counts.items()}, pooled)

    args.out.mkdir(parents=True, exist_ok=True)
    rank_freq = {n: rank_frequency(c.token_counts) for n, c in counts.items()}
    rank_freq["overall"] = rank_frequency(overall_counts.token_counts)
    plots = write_plots(report, rank_freq, args.out)
    write_json(report, args.out / "report.json")
    (args.out / "report.md").write_text(render_markdown(report, plots, notes), encoding="utf-8")
    _print_summary(report, args.out)
    return 0


def _add_embeddings(report: dict, args: argparse.Namespace, samples: dict[str, list[str]], pooled: list[str]) -> None:
    from ..anatomy.embeddings import embed_corpora
    from ..checkpoints import load

    models = {m: load(m, device=args.device) for m in args.model}
    per_corpus, overall = embed_corpora(
        models,
        samples,
        pooled,
        context_length=args.embed_length,
        batch_size=args.batch_size,
        max_points=args.max_points,
        seed=args.seed,
    )
    for name, stats in per_corpus.items():
        report["corpora"][name]["embeddings"] = stats
    report["overall"]["embeddings"] = overall


def _print_summary(report: dict, out: Path) -> None:
    o = report["overall"]
    print(
        f"{o['prompts']:,} prompts in {len(report['corpora'])} corpora: {o['tokens_mean']:.2f} tokens on average "
        f"(median {o['tokens_median']:g}, p95 {o['tokens_p95']:g}); {o['vocab']['distinct']:,} distinct token ids"
    )
    for L, c in o["context"].items():
        print(f"  L={L:>3}: truncated {100 * c['truncated']:5.1f}%  padding {100 * c['padding']:5.1f}%")
    for model, e in o.get("embeddings", {}).items():
        t, p = e["tokens"], e["pooled"]
        print(
            f"  {model}: tokens PCA99 {t.get('pca99')} TwoNN {t.get('twonn_mle', float('nan')):.1f}; "
            f"pooled PCA99 {p.get('pca99')} TwoNN {p.get('twonn_mle', float('nan')):.1f}"
        )
    print(f"wrote {out / 'report.md'}, {out / 'report.json'} and charts")
