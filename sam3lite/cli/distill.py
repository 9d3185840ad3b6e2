"""``sam3lite distill``: train your own LiteText text encoder from SAM3's.

sam3lite distill cache --teacher sam3 --prompts ../shared/data/prompts/*.txt --out cache16
sam3lite distill train --cache cache16 --student s0 --out runs/s0 [--steps N | --epochs E]
torchrun --nproc-per-node 8 -m sam3lite distill train --cache cache16 --student s0 --out runs/s0
sam3lite distill eval --run runs/s0 --cache cache16 [--json]
sam3lite distill export --run runs/s0 --base sam3 --out sam3-litetext-mine
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from . import UsageError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``distill`` and its subcommands cache / train / eval / export."""
    parser = subparsers.add_parser(
        "distill",
        help="train a LiteText (MobileCLIP) text encoder to reproduce SAM3's",
        description="Distillation pipeline: cache the teacher's token features, train a student, evaluate it, "
        "export it as a Sam3LiteText checkpoint.",
    )
    sub = parser.add_subparsers(dest="distill_command", metavar="STEP")
    sub.required = True
    _add_cache(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_export(sub)
    return parser


def _add_cache(sub: Any) -> None:
    p = sub.add_parser(
        "cache",
        help="run the teacher once over prompt files and store its token features",
        description="Dedupe the prompts, split train/val, run the teacher and store float16 token targets "
        "(memory-mapped) with the token ids. Resumable: run the same command again after an interruption.",
    )
    p.add_argument("--teacher", default="sam3", help="sam3 (default), a hub id or a local SAM3/LiteText checkpoint")
    p.add_argument(
        "--prompts", nargs="+", required=True, metavar="FILE", help="one prompt per line (.txt) or a JSON list (.json)"
    )
    p.add_argument("--out", required=True, metavar="CACHE", help="cache directory (new, empty, or to resume)")
    p.add_argument("--context-length", type=int, default=16, help="student context length T (default: 16)")
    p.add_argument("--val-fraction", type=float, default=0.02, help="share held out for validation (default: 0.02)")
    p.add_argument("--batch-size", type=int, default=256, help="prompts per teacher forward (default: 256)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a student on a cache (one process, or many under torchrun)",
        description="Masked token MSE + λ_cos (1 − cos) + λ_cons word-shuffle consistency; AdamW, cosine "
        "schedule with warmup, gradient clipping, bf16 autocast on GPUs. Under torchrun (WORLD_SIZE > 1) "
        "it uses DistributedDataParallel; --batch-size is the global batch. Unset options take their defaults "
        "for a new run and the run's values with --resume.",
    )
    p.add_argument("--cache", metavar="CACHE", help="cache from `sam3lite distill cache`")
    p.add_argument("--student", metavar="S", help="s0, s1, l or a MobileCLIP text config JSON")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory (checkpoint.pt, CSV metrics, run.json)")
    p.add_argument("--init", metavar="PATH", help="start from a LiteText checkpoint, a run, or MobileCLIP text weights")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps in all")
    length.add_argument("--epochs", type=float, help="passes over the training prompts (default: 10)")
    p.add_argument("--batch-size", type=int, help="global batch, split over processes (default: 256)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 1e-3)")
    p.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine (default: 1e-5)")
    p.add_argument("--warmup-steps", type=int, help="linear warmup steps (default: 10%% of the steps)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (default: 0.05)")
    p.add_argument("--grad-clip", type=float, help="gradient norm clip (default: 1.0)")
    p.add_argument("--lambda-cos", type=float, help="cosine weight (default: s0 2.0, s1 1.5, l 1.0)")
    p.add_argument("--lambda-cons", type=float, help="consistency weight (default: s0 0.1, s1 0.1, l 0.05)")
    p.add_argument("--seed", type=int, help="init, batch order and shuffles (default: 0)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], help="autocast (default: auto = bf16 on CUDA)")
    p.add_argument("--device", help="cpu, cuda or auto (default: auto)")
    p.add_argument("--eval-every", type=int, help="validation every N steps (default: 500)")
    p.add_argument("--save-every", type=int, help="checkpoint every N steps (default: 500)")
    p.add_argument("--log-every", type=int, help="training metrics every N steps (default: 10)")
    p.add_argument("--eval-batch-size", type=int, help="validation batch (default: 512)")
    p.add_argument("--until", type=int, metavar="STEP", help="stop with a checkpoint after STEP (e.g. job time limits)")


def _add_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="validation metrics of a run's student against a cache")
    p.add_argument("--run", required=True, metavar="RUN", help="run directory (or its checkpoint.pt)")
    p.add_argument("--cache", required=True, metavar="CACHE", help="cache of the same teacher and context length")
    p.add_argument("--split", choices=["val", "train"], default="val", help="default: val")
    p.add_argument("--batch-size", type=int, default=512, help="default: 512")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def _add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="student + base SAM3 checkpoint -> Sam3LiteText checkpoint directory",
        description="Combine the run's student with the base checkpoint's vision, geometry, DETR, mask and "
        "scoring weights. The base must be the teacher's checkpoint (checked on a few cached prompts).",
    )
    p.add_argument("--run", required=True, metavar="RUN", help="run directory (or its checkpoint.pt)")
    p.add_argument("--base", default="sam3", help="sam3 (default), a hub id or a local checkpoint: the teacher's")
    p.add_argument("--out", required=True, metavar="DIR", help="new checkpoint directory")


_TRAIN_FIELDS = (
    "cache student out init steps epochs batch_size lr min_lr warmup_steps weight_decay grad_clip lambda_cos "
    "lambda_cons seed precision device eval_every save_every log_every eval_batch_size until"
).split()


def run(args: argparse.Namespace) -> int:
    command = args.distill_command
    if command == "cache":
        return _run_cache(args)
    if command == "train":
        return _run_train(args)
    if command == "eval":
        return _run_eval(args)
    return _run_export(args)


def _run_cache(args: argparse.Namespace) -> int:
    from ..distill import build_cache

    if args.context_length < 3:
        raise UsageError("--context-length must be at least 3 (BOS, a token, EOS)")
    cache = build_cache(
        args.teacher,
        args.prompts,
        args.out,
        context_length=args.context_length,
        val_fraction=args.val_fraction,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
    )
    print(f"cache {cache.path}: {len(cache.train)} train, {len(cache.val)} val prompts, T={cache.context_length}")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from ..distill import resolve_config, train

    given = {name: getattr(args, name) for name in _TRAIN_FIELDS}
    for name in ("steps", "batch_size", "eval_every", "save_every", "log_every", "eval_batch_size", "until"):
        if given[name] is not None and given[name] <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    if not args.resume and (args.cache is None or args.student is None):
        raise UsageError("a new run needs --cache and --student")
    train(resolve_config(given, args.resume), resume=args.resume)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from ..distill import evaluate, load_run, open_cache
    from ..distill.train import check_cache_matches, pick_device

    device = pick_device(args.device, 0)
    student, ckpt = load_run(args.run, device)
    cache = open_cache(args.cache)
    check_cache_matches(ckpt["cache"], cache, "run")
    metrics = evaluate(student, getattr(cache, args.split), args.batch_size, device)
    result = {"run": args.run, "step": ckpt["step"], "cache": args.cache, "split": args.split, **metrics}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.run} step {ckpt['step']} on {args.cache} ({args.split}, {metrics['prompts']} prompts): "
            f"token cos {metrics['token_cos']:.4f}, mse {metrics['mse']:.4g}, pooled cos {metrics['pooled_cos']:.4f}"
        )
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from ..distill import export

    export(args.run, args.base, args.out)
    return 0
