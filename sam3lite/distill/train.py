"""Distillation training: a flat loop in the manner of nanoGPT's train.py, on one process or many.

One process: ``sam3lite distill train --cache C --student s0 --out RUN``. Many (one machine or several):
``torchrun --nproc-per-node N [--nnodes M ...] -m sam3lite distill train ...``; WORLD_SIZE > 1 turns on
DistributedDataParallel (nccl on GPUs, gloo on CPUs).

Exactness, by construction:
- ``--batch-size`` is the global batch. Each process takes an equal contiguous share; the loss divides by
  the real-token and prompt counts of the whole global batch (see ``loss.py``), so N processes compute
  the one-process gradient, up to float summation order.
- The batch order, the word shuffles and the learning rate are pure functions of (seed, step). A
  checkpoint (model, optimizer, step) is therefore all that a resumed run needs to continue exactly as
  an uninterrupted one, with any number of processes.
- BatchNorm layers (S0's RepMixer blocks) keep their running statistics and run in eval mode; their
  affine weights train. Outputs do not depend on how a batch is split, and the folded inference model
  (``reparameterize``) computes exactly what was trained.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..modeling.config import TextConfig
from ..processing.tokenizer import Tokenizer
from ..runtime import resolve_device
from .cache import Cache, CacheSplit, open_cache
from .data import batch_indices, item_rng, shuffle_words
from .loss import LossWeights, MetricSums, distill_loss
from .student import RUN_CHECKPOINT, build_student, recipe_variant, student_config
from .tower import TextTower

RUN_CONFIG = "run.json"
TRAIN_CSV, VAL_CSV = "train.csv", "val.csv"
TRAIN_COLUMNS = ["step", "loss", "mse", "cos", "cons", "lr", "grad_norm", "ms_per_step"]
VAL_COLUMNS = ["step", "token_cos", "mse", "pooled_cos"]
PROBE_PROMPTS = 8  # validation prompts kept in the checkpoint, so export can check its --base is the teacher
DEFAULT_EPOCHS = 10.0


@dataclass
class TrainConfig:
    """Everything that defines a run (stored in ``run.json``). ``None`` means "the default"."""

    cache: str
    student: str
    out: str
    init: str | None = None
    steps: int | None = None  # total optimizer steps; default: ``epochs`` over the training prompts
    epochs: float | None = None
    batch_size: int = 256  # global: split over the processes
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int | None = None  # default: 10% of the steps
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0
    lambda_cos: float | None = None  # default: by variant (s0 2.0, s1 1.5, l 1.0; see recipe_variant)
    lambda_cons: float | None = None  # default: by variant (s0 0.1, s1 0.1, l 0.05)
    seed: int = 0
    precision: str = "auto"  # bf16 autocast on CUDA, fp32 elsewhere; or "bf16" / "fp32"
    # Free to change when resuming (they do not change the weights):
    device: str = "auto"
    until: int | None = None  # stop (with a checkpoint) after this step; resume later with --resume
    eval_every: int = 500
    save_every: int = 500
    log_every: int = 10
    eval_batch_size: int = 512


RESUMABLE_CHANGES = {"device", "until", "eval_every", "save_every", "log_every", "eval_batch_size"}


def resolve_config(given: dict[str, Any], resume: bool) -> TrainConfig:
    """The run's config from command-line values (None = not given) and, when resuming, ``run.json``.

    Raises ValueError for a new run in a directory that already holds one, for a resume without a
    checkpoint, and for a resume whose given values differ from the stored ones.
    """
    out = Path(given["out"])
    if not resume:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(
                f"--out {out} already exists and is not empty; pass --resume to continue it or pick another"
            )
        return TrainConfig(**{k: v for k, v in given.items() if v is not None})
    if not (out / RUN_CHECKPOINT).is_file():
        raise FileNotFoundError(f"--resume: no {RUN_CHECKPOINT} in {out}")
    stored = json.loads((out / RUN_CONFIG).read_text())["config"]
    conflicts = [
        f"--{k.replace('_', '-')} {v} (run: {stored.get(k)})"
        for k, v in given.items()
        if v is not None and k not in RESUMABLE_CHANGES | {"out"} and v != stored.get(k)
    ]
    if conflicts:
        raise ValueError(f"--resume: these differ from the run in {out}: {', '.join(conflicts)}; leave them out")
    merged = {**stored, **{k: v for k, v in given.items() if v is not None and k in RESUMABLE_CHANGES}}
    merged["until"] = given.get("until")  # a stop point belongs to one invocation, not to the run
    return TrainConfig(**{**merged, "out": str(out)})


# ---------------------------------------------------------------------------------------------
# Small pieces of the loop
# ---------------------------------------------------------------------------------------------


def lr_at(step: int, cfg: TrainConfig, total: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay from ``lr`` to ``min_lr`` at ``total``."""
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (cfg.lr - cfg.min_lr)


def total_steps(cfg: TrainConfig, num_train: int) -> int:
    if cfg.steps is not None and cfg.epochs is not None:
        raise ValueError("give --steps or --epochs, not both")
    if cfg.steps is not None:
        return cfg.steps
    per_epoch = num_train // cfg.batch_size
    if per_epoch == 0:
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the {num_train} training prompts")
    return max(1, round((cfg.epochs or DEFAULT_EPOCHS) * per_epoch))


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Train mode everywhere except BatchNorm, which keeps (and uses) its running statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices (Linear, conv, embedding and position tables); not biases, norms or layer scales."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and "layer_scale" not in name else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def autocast_for(precision: str, device: torch.device):
    """A fresh autocast context (bf16) or a null one (fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"--precision must be auto, bf16 or fp32, got {precision!r}")
    return precision


def tokenize_quietly(tokenizer: Tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shuffled long prompts truncate like their originals did
        return tokenizer(texts)


@torch.no_grad()
def evaluate(
    student: TextTower, split: CacheSplit, batch_size: int, device: torch.device, precision: str = "fp32"
) -> dict[str, float]:
    """Token cosine, MSE and pooled cosine of the student against the cached teacher targets."""
    was_training = student.training
    student.eval()
    sums = MetricSums()
    for start in range(0, len(split), batch_size):
        ids, mask, targets = split.batch(np.arange(start, min(start + batch_size, len(split))))
        with autocast_for(precision, device):
            out = student(ids.to(device), mask.to(device))
        sums.add(out.float().cpu(), targets, mask)
    if was_training:
        freeze_batchnorm(student)
    return sums.result()


class CsvLog:
    """Append-only CSV; on resume, rows a resumed run will write again are dropped first."""

    def __init__(self, path: Path, columns: list[str], keep_below: int | None = None) -> None:
        self.path, self.columns = path, columns
        rows: list[dict[str, str]] = []
        if keep_below is not None and path.is_file():
            with path.open(newline="") as fh:
                rows = [row for row in csv.DictReader(fh) if int(row["step"]) < keep_below]
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, self.columns).writerow({k: _fmt(row.get(k)) for k in self.columns})


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _tensorboard(run: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: the CSV files are the record
        return None
    return SummaryWriter(str(run / "tensorboard"))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save via a temporary file and an atomic rename (a crash never leaves a half-written checkpoint)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_run(run: str | Path, device: str | torch.device = "cpu") -> tuple[TextTower, dict[str, Any]]:
    """The student of a run's latest checkpoint (eval mode) and the checkpoint dict."""
    path = Path(run)
    path = path / RUN_CHECKPOINT if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no distill run checkpoint at {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "student_config" not in ckpt:
        raise ValueError(f"{path} is not a sam3lite distill checkpoint")
    student = TextTower(TextConfig.from_dict(ckpt["student_config"]), ckpt["width"])
    student.load_state_dict(ckpt["model"])
    return student.to(device).eval(), ckpt


def check_cache_matches(identity: dict[str, Any], cache: Cache, what: str) -> None:
    """A run's cache identity must equal ``cache``'s: same teacher, context length and width."""
    theirs = cache.identity()
    bad = [f"{k}: {what} {identity[k]!r}, cache {theirs[k]!r}" for k in identity if identity[k] != theirs[k]]
    if bad:
        raise ValueError(f"cache {cache.path} was made for another teacher or context length ({'; '.join(bad)})")


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, resume: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) a distillation run; returns the last validation metrics and the step reached."""
    # -- processes and devices
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    started_group = ddp and not dist.is_initialized()
    if started_group:
        use_nccl = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    master = rank == 0
    device = pick_device(cfg.device, local_rank)
    precision = resolve_precision(cfg.precision, device)
    say = log if master else (lambda _msg: None)

    # -- data, sizes, schedule
    cache = open_cache(cfg.cache)
    train_split = cache.train
    steps = total_steps(cfg, len(train_split))
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, steps // 10)
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")
    local_batch = cfg.batch_size // world
    batch_indices(0, len(train_split), cfg.batch_size, cfg.seed)  # raises early if the batch is too large
    text_config = student_config(cfg.student, cache.context_length)
    variant = recipe_variant(cfg.student, text_config)
    weights = LossWeights.for_variant(variant, cfg.lambda_cos, cfg.lambda_cons)
    tokenizer = Tokenizer(cache.context_length)
    stop = steps if cfg.until is None else min(cfg.until, steps)

    # -- the run directory (every process checks; the master writes)
    run = Path(cfg.out)
    ckpt = None
    if resume:
        ckpt = torch.load(run / RUN_CHECKPOINT, map_location="cpu", weights_only=True)
        check_cache_matches(ckpt["cache"], cache, "run")
    run_info = {
        "config": dataclasses.asdict(cfg),
        "steps": steps,
        "warmup_steps": warmup,
        "loss_weights": dataclasses.asdict(weights),
        "student_config": text_config.to_dict(),
        "cache": cache.identity(),
    }

    # -- model and optimizer (built before anything is written: a bad --init leaves no run directory)
    torch.manual_seed(cfg.seed)  # the same random init in every process
    student = build_student(text_config, cache.width, None if resume else cfg.init).to(device)
    if ddp:
        dist.barrier()  # every process has checked --out (resolve_config) before the master creates it
    if master and not resume:
        run.mkdir(parents=True, exist_ok=True)
        (run / RUN_CONFIG).write_text(json.dumps(run_info, indent=2, sort_keys=True) + "\n")
    optimizer = torch.optim.AdamW(optimizer_groups(student, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    step = 0
    if ckpt is not None:
        student.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])
        say(f"resuming {run} at step {step}/{steps}")
    freeze_batchnorm(student)
    model: nn.Module = student
    if ddp:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(student, device_ids=ids)
        # Depthwise-conv weight gradients [C, 1, 1, k] come with other strides on their size-1 dims than
        # DDP's buckets; the copy is exact and cheap, the one-time warning only noise.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    params = [p for p in student.parameters() if p.requires_grad]
    probe = _probe(cache.val)

    # -- logs
    train_log = val_log = board = None
    if master:
        train_log = CsvLog(run / TRAIN_CSV, TRAIN_COLUMNS, keep_below=step + 1)
        val_log = CsvLog(run / VAL_CSV, VAL_COLUMNS, keep_below=step)
        board = _tensorboard(run)
    say(
        f"distilling {cfg.student} ({sum(p.numel() for p in params) / 1e6:.1f}M trained parameters) on "
        f"{len(train_split)} prompts: {steps} steps of {cfg.batch_size} on {world} process(es), {device}, {precision}"
    )

    def checkpoint(at: int, val: dict[str, float] | None) -> None:
        state = {
            "format": "sam3lite-distill-run",
            "step": at,
            "model": student.state_dict(),
            "optimizer": optimizer.state_dict(),
            "config": dataclasses.asdict(cfg),
            "student_config": text_config.to_dict(),
            "width": cache.width,
            "cache": cache.identity(),
            "probe": probe,
            "val": val or {},
        }
        save_checkpoint(run / RUN_CHECKPOINT, state)

    val: dict[str, float] | None = None
    train_seconds, logged_at = 0.0, step
    while True:
        # -- validation (master only; the others wait for it at the next gradient all-reduce)
        if master and (step % cfg.eval_every == 0 or step == steps):
            val = evaluate(student, cache.val, cfg.eval_batch_size, device, precision)
            val_log.write({"step": step, **val})
            if board is not None:
                for key in ("token_cos", "mse", "pooled_cos"):
                    board.add_scalar(f"val/{key}", val[key], step)
            say(
                f"val step {step}: token cos {val['token_cos']:.4f}, mse {val['mse']:.4g}, "
                f"pooled cos {val['pooled_cos']:.4f}"
            )
        if step >= stop:
            break

        # -- one optimizer step on this process's share of global batch `step`
        started = time.perf_counter()
        lr = lr_at(step, cfg, steps, warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = batch_indices(step, len(train_split), cfg.batch_size, cfg.seed)
        mine = slice(rank * local_batch, (rank + 1) * local_batch)
        ids, mask, targets = train_split.batch(index[mine])
        num_tokens = int(train_split.lengths[index].sum())  # the global batch's, see loss.py
        if weights.cons > 0:  # the same prompts with their words shuffled, in the same forward
            texts = [
                shuffle_words(train_split.prompts[i], item_rng(cfg.seed, step, pos))
                for pos, i in zip(range(mine.start, mine.stop), index[mine], strict=True)
            ]
            shuffled_ids, shuffled_mask = tokenize_quietly(tokenizer, texts)
            ids, masks = torch.cat([ids, shuffled_ids]), torch.cat([mask, shuffled_mask])
        else:
            masks = mask
        with autocast_for(precision, device):
            out = model(ids.to(device), masks.to(device)).float()  # (B or 2B, T, D)
        shuffled = out[local_batch:] if weights.cons > 0 else None
        shuffled_mask = masks[local_batch:].to(device) if weights.cons > 0 else None
        loss, parts = distill_loss(
            out[:local_batch],
            targets.to(device),
            mask.to(device),
            shuffled,
            shuffled_mask,
            weights,
            num_tokens=num_tokens,
            num_prompts=cfg.batch_size,
        )
        (loss * world).backward()  # DDP averages gradients over processes; each loss is a share of the sum
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        train_seconds += time.perf_counter() - started

        # -- logging and checkpoints
        if step % cfg.log_every == 0 or step == stop:
            values = torch.stack([loss, parts["mse"], parts["cos"], parts["cons"]]).detach()
            if ddp:
                dist.all_reduce(values)  # the shares add up to the global batch's values
            row = dict(zip(["loss", "mse", "cos", "cons"], values.tolist(), strict=True))
            row.update(step=step, lr=lr, grad_norm=grad_norm, ms_per_step=1000 * train_seconds / (step - logged_at))
            train_seconds, logged_at = 0.0, step
            if master:
                train_log.write(row)
                if board is not None:
                    for key in ("loss", "mse", "cos", "cons", "lr", "grad_norm"):
                        board.add_scalar(f"train/{key}", row[key], step)
            say(
                f"step {step}/{steps}: loss {row['loss']:.4f} (mse {row['mse']:.4g}, 1-cos {row['cos']:.4f}, "
                f"cons {row['cons']:.3g}), lr {lr:.3g}, {row['ms_per_step']:.0f} ms/step"
            )
        if master and step % cfg.save_every == 0 and step < stop:
            checkpoint(step, val)

    if master:
        checkpoint(step, val)  # the last weights, with the validation metrics just computed
        say(f"saved {run / RUN_CHECKPOINT} at step {step}/{steps}")
    if board is not None:
        board.close()
    if ddp:
        dist.barrier()  # no process leaves before the master has written the checkpoint
        if started_group:
            dist.destroy_process_group()
    return {"step": step, "steps": steps, "val": val}


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def _probe(split: CacheSplit) -> dict[str, torch.Tensor]:
    """A few validation prompts with their teacher targets: export checks its ``--base`` against them."""
    ids, mask, targets = split.batch(np.arange(min(PROBE_PROMPTS, len(split))))
    return {"input_ids": ids, "attention_mask": mask, "targets": targets.half()}
