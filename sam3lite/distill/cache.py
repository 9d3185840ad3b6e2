"""The teacher cache: every prompt's token ids and the teacher's token-level targets, on disk.

Layout of a cache directory::

    meta.json             teacher identity, context length T, width D, prompt statistics, split sizes
    progress.json         prompts done per split (the resume point)
    {train,val}.txt       the prompts, one per line
    {train,val}_ids.npy   [N, T] int32 token ids (BOS .. EOS, padded with EOS)
    {train,val}_targets.npy  [N, T, D] float16 teacher features (memory-mapped)

The teacher runs once, in chunks; after each chunk the targets are flushed and ``progress.json`` is
replaced atomically, so an interrupted ``distill cache`` resumes where it stopped. A cache holds one
teacher at one context length: asking an existing cache for another is an error, never an overwrite.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..modeling.config import ClipTextConfig
from ..processing.tokenizer import Tokenizer
from ..runtime import resolve_device
from .data import attention_mask, dedupe, lengths_from_ids, read_prompts, split_train_val, token_counts, tokenize
from .tower import TextTower, load_tower

FORMAT = "sam3lite-distill-cache"
VERSION = 1
META, PROGRESS = "meta.json", "progress.json"
SPLITS = ("train", "val")


@dataclass
class CacheSplit:
    """One split, memory-mapped. ``targets`` stay float16 on disk; convert per batch."""

    prompts: list[str]
    ids: np.ndarray  # [N, T] int32
    targets: np.ndarray  # [N, T, D] float16
    lengths: np.ndarray  # [N] real tokens per prompt (BOS .. EOS)

    def __len__(self) -> int:
        return len(self.prompts)

    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids [B, T] int64, attention_mask [B, T] int64, targets [B, T, D] float32) of rows ``index``."""
        ids = torch.from_numpy(np.asarray(self.ids[index], dtype=np.int64))
        mask = torch.from_numpy(attention_mask(self.lengths[index], self.ids.shape[1]))
        targets = torch.from_numpy(np.asarray(self.targets[index], dtype=np.float32))
        return ids, mask, targets


@dataclass
class Cache:
    path: Path
    meta: dict[str, Any]
    train: CacheSplit
    val: CacheSplit

    @property
    def context_length(self) -> int:
        return int(self.meta["context_length"])

    @property
    def width(self) -> int:
        return int(self.meta["width"])

    def identity(self) -> dict[str, Any]:
        return cache_identity(self.meta)


def cache_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """What makes two caches interchangeable for training and evaluation (the prompts may differ)."""
    return {
        "teacher_fingerprint": meta["teacher"]["fingerprint"],
        "context_length": meta["context_length"],
        "width": meta["width"],
    }


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


def build_cache(
    teacher: str,
    prompt_files: Sequence[str | Path],
    out: str | Path,
    *,
    context_length: int = 16,
    val_fraction: float = 0.02,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Cache:
    """Create (or resume) the cache at ``out`` and return it opened.

    Args:
        teacher: ``sam3``, a hub id or a local checkpoint (any SAM3 / LiteText detector).
        prompt_files: prompts files (see ``data.read_prompts_file``).
        context_length: T, the student's context length (16 for the released models).
        val_fraction: share of distinct prompts held out for validation.
        batch_size: prompts per teacher forward.
        device: where the teacher runs (``None``: CPU, ``"auto"``: CUDA if available).
    """
    out = Path(out)
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    existing = _read_existing(out)
    tokenizer = Tokenizer(context_length)
    corpus = _prepare_prompts(prompt_files, tokenizer, val_fraction)
    if existing is not None:
        _check_same_request(out, existing, context_length, corpus["sha256"])
    device = resolve_device(device)
    tower, config, path = load_tower(teacher)
    _check_context(tower, context_length, teacher)
    fingerprint = tower.fingerprint()
    if existing is not None:
        if existing["teacher"]["fingerprint"] != fingerprint:
            raise ValueError(
                f"{out} holds targets of teacher {existing['teacher']['source']!r} "
                f"(fingerprint {existing['teacher']['fingerprint'][:12]}), but {teacher!r} has fingerprint "
                f"{fingerprint[:12]}: a cache holds one teacher; choose another --out"
            )
        meta = existing
        log(f"resuming cache {out}")
    else:
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "context_length": context_length,
            "width": tower.out_dim,
            "dtype": "float16",
            "teacher": {
                "source": str(teacher),
                "path": str(path),
                "fingerprint": fingerprint,
                "model_type": config.model_type,
                "text_config": config.text_config.to_dict(),
            },
            "prompts": {k: v for k, v in corpus.items() if k not in ("train", "val")},
            "val_fraction": val_fraction,
            "splits": {split: len(corpus[split]) for split in SPLITS},
            "complete": False,
        }
        _create(out, meta, corpus, tokenizer)
        log(
            f"cache {out}: {meta['splits']['train']} train / {meta['splits']['val']} val prompts "
            f"({corpus['duplicates']} duplicates removed, {corpus['truncated']} truncated to {context_length} tokens)"
        )
    _run_teacher(out, meta, tower.to(device), batch_size, device, progress)
    meta["complete"] = True
    _write_json(out / META, meta)
    return open_cache(out)


def _read_existing(out: Path) -> dict[str, Any] | None:
    """The meta of an existing cache at ``out``; None for a new or empty directory."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return None
    meta_path = out / META
    if not meta_path.is_file():
        raise ValueError(f"--out {out} is a non-empty directory without {META}: not a distill cache; choose another")
    meta = _read_json(meta_path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a sam3lite distill cache")
    return meta


def _prepare_prompts(files: Sequence[str | Path], tokenizer: Tokenizer, val_fraction: float) -> dict[str, Any]:
    """Read, dedupe, drop prompts with no token, split; with statistics and a digest of the result."""
    read = read_prompts(files)
    distinct = dedupe(read)
    counts = token_counts(distinct, tokenizer)
    kept = [p for p, n in zip(distinct, counts, strict=True) if n > 2]  # BOS + EOS only: nothing to learn
    train, val = split_train_val(kept, val_fraction)
    digest = hashlib.sha256("\n".join(train).encode() + b"\0" + "\n".join(val).encode()).hexdigest()
    return {
        "files": [str(f) for f in files],
        "read": len(read),
        "duplicates": len(read) - len(distinct),
        "dropped_empty": len(distinct) - len(kept),
        "truncated": int((counts[counts > 2] > tokenizer.context_length).sum()),
        "sha256": digest,
        "train": train,
        "val": val,
    }


def _check_same_request(out: Path, meta: dict[str, Any], context_length: int, digest: str) -> None:
    problems = []
    if meta["context_length"] != context_length:
        problems.append(f"it was made for context length {meta['context_length']}, not {context_length}")
    if meta["prompts"]["sha256"] != digest:
        problems.append("it holds other prompts (or another --val-fraction split)")
    if problems:
        raise ValueError(
            f"{out} is a cache of teacher {meta['teacher']['source']!r}, but {' and '.join(problems)}; "
            f"a cache is never overwritten: choose another --out"
        )


def _check_context(tower: TextTower, context_length: int, teacher: str) -> None:
    config = tower.text_config
    if isinstance(config, ClipTextConfig) and context_length > config.max_position_embeddings:
        raise ValueError(
            f"--context-length {context_length} is longer than teacher {teacher!r}'s "
            f"{config.max_position_embeddings} positions"
        )


def _create(out: Path, meta: dict[str, Any], corpus: dict[str, Any], tokenizer: Tokenizer) -> None:
    """Write prompts, ids and empty target files; ``meta.json`` last, so a half-made directory is never taken
    for a cache."""
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        prompts = corpus[split]
        (out / f"{split}.txt").write_text("".join(p + "\n" for p in prompts), encoding="utf-8")
        np.save(out / f"{split}_ids.npy", tokenize(prompts, tokenizer))
        shape = (len(prompts), meta["context_length"], meta["width"])
        np.lib.format.open_memmap(out / f"{split}_targets.npy", mode="w+", dtype=np.float16, shape=shape).flush()
    _write_json(out / PROGRESS, {split: 0 for split in SPLITS})
    _write_json(out / META, meta)


@torch.no_grad()
def _run_teacher(
    out: Path, meta: dict[str, Any], tower: TextTower, batch_size: int, device: torch.device, progress: bool
) -> None:
    from tqdm import tqdm

    done = _read_json(out / PROGRESS)
    remaining = sum(meta["splits"][s] - done[s] for s in SPLITS)
    with tqdm(total=remaining, unit="prompt", desc="teacher", disable=not progress or remaining == 0) as bar:
        for split in SPLITS:
            ids_all = np.load(out / f"{split}_ids.npy", mmap_mode="r")
            targets = np.load(out / f"{split}_targets.npy", mmap_mode="r+")
            for start in range(done[split], meta["splits"][split], batch_size):
                ids_np = np.asarray(ids_all[start : start + batch_size], dtype=np.int64)
                mask = attention_mask(lengths_from_ids(ids_np), ids_np.shape[1])
                features = tower(torch.from_numpy(ids_np).to(device), torch.from_numpy(mask).to(device))
                half = features.float().cpu().half()
                if not bool(torch.isfinite(half).all()):
                    raise ValueError(f"teacher features overflow float16 in {split} prompts {start}..")
                targets[start : start + len(ids_np)] = half.numpy()
                targets.flush()
                done[split] = start + len(ids_np)
                _write_json(out / PROGRESS, done)  # after the flush: progress never runs ahead of the data
                bar.update(len(ids_np))


# ---------------------------------------------------------------------------------------------
# Opening
# ---------------------------------------------------------------------------------------------


def open_cache(path: str | Path) -> Cache:
    """Open a complete cache read-only (memory-mapped)."""
    path = Path(path)
    if not (path / META).is_file():
        raise FileNotFoundError(f"no distill cache at {path} (no {META}); make one with `sam3lite distill cache`")
    meta = _read_json(path / META)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path / META} is not a sam3lite distill cache")
    if not meta.get("complete"):
        raise ValueError(
            f"cache {path} is incomplete; run the same `sam3lite distill cache` command again to finish it"
        )
    splits = {}
    for split in SPLITS:
        prompts = (path / f"{split}.txt").read_text(encoding="utf-8").splitlines()
        ids = np.load(path / f"{split}_ids.npy", mmap_mode="r")
        targets = np.load(path / f"{split}_targets.npy", mmap_mode="r")
        expected = (meta["splits"][split], meta["context_length"])
        if ids.shape != expected or targets.shape != (*expected, meta["width"]) or len(prompts) != expected[0]:
            raise ValueError(f"cache {path}: {split} files do not match {META} (expected {expected[0]} prompts)")
        splits[split] = CacheSplit(prompts, ids, targets, lengths_from_ids(np.asarray(ids)))
    return Cache(path, meta, splits["train"], splits["val"])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable ({err})") from err


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write via a temporary file and an atomic rename: a crash leaves the old or the new file, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
