"""Prompt corpora: reading, de-duplication, the train/val split, tokenization, word shuffling and batch order.

A prompts file holds one prompt per line (``.txt`` and anything else) or a JSON list of strings (``.json``).
Whitespace is collapsed; blank lines are skipped.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..processing.tokenizer import EOS_ID, Tokenizer


def normalize(prompt: str) -> str:
    """One line of text: whitespace runs (newlines included) become one space, ends stripped."""
    return " ".join(prompt.split())


def read_prompts_file(path: str | Path) -> list[str]:
    """Prompts of one file, normalized, blank ones dropped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, not UTF-8, bad JSON, or no prompt in it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:  # permissions, a directory, an I/O error
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from err
    items = _json_prompts(path, text) if path.suffix.lower() == ".json" else text.splitlines()
    prompts = [p for p in (normalize(item) for item in items) if p]
    if not prompts:
        raise ValueError(f"{path}: no prompts in it (the file is empty or holds only blank lines)")
    return prompts


def _json_prompts(path: Path, text: str) -> list[str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise ValueError(f"{path}: a .json prompts file must hold a list of strings")
    return data


def read_prompts(paths: Sequence[str | Path]) -> list[str]:
    """All prompts of ``paths`` in order (duplicates kept; see ``dedupe``)."""
    if not paths:
        raise ValueError("no prompts files given")
    prompts: list[str] = []
    for path in paths:
        prompts.extend(read_prompts_file(path))
    return prompts


def prompt_key(prompt: str) -> str:
    """What the CLIP tokenizer sees: NFC, collapsed whitespace, lowercase. Equal keys give equal tokens."""
    return unicodedata.normalize("NFC", normalize(prompt)).lower()


def dedupe(prompts: Iterable[str]) -> list[str]:
    """First occurrence of every distinct ``prompt_key``, in order."""
    seen: set[str] = set()
    out: list[str] = []
    for prompt in prompts:
        key = prompt_key(prompt)
        if key not in seen:
            seen.add(key)
            out.append(prompt)
    return out


def split_train_val(prompts: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic split: the ``round(val_fraction * N)`` prompts (at least 1) with the smallest hash go to val.

    Hash-based: the split does not depend on the order of files or lines. Both sides keep the input order.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(prompts) < 2:
        raise ValueError(f"need at least 2 distinct prompts to split into train and val, got {len(prompts)}")
    num_val = min(max(1, round(val_fraction * len(prompts))), len(prompts) - 1)
    digests = [hashlib.sha1(prompt_key(p).encode("utf-8")).digest() for p in prompts]
    val_ids = set(sorted(range(len(prompts)), key=digests.__getitem__)[:num_val])
    train = [p for i, p in enumerate(prompts) if i not in val_ids]
    val = [p for i, p in enumerate(prompts) if i in val_ids]
    return train, val


def tokenize(prompts: Sequence[str], tokenizer: Tokenizer, chunk: int = 4096) -> np.ndarray:
    """Token ids [N, T] int32 (BOS .. EOS, padded with EOS); long prompts truncated keeping EOS, silently."""
    out = np.empty((len(prompts), tokenizer.context_length), dtype=np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation is counted by the caller, not warned per chunk
        for start in range(0, len(prompts), chunk):
            ids, _ = tokenizer(list(prompts[start : start + chunk]))
            out[start : start + len(ids)] = ids.numpy()
    return out


def token_counts(prompts: Sequence[str], tokenizer: Tokenizer) -> np.ndarray:
    """Untruncated token count of every prompt, BOS and EOS included ([N] int)."""
    return np.array([len(tokenizer.encode(p)) for p in prompts], dtype=np.int64)


def lengths_from_ids(ids: np.ndarray) -> np.ndarray:
    """Real tokens per row ([N]): up to and including the first EOS (the pad id is EOS too)."""
    return (ids == EOS_ID).argmax(axis=1) + 1


def attention_mask(lengths: np.ndarray, context_length: int) -> np.ndarray:
    """[N, T] int64 mask, 1 on BOS .. EOS."""
    return (np.arange(context_length)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)


def shuffle_words(prompt: str, rng: np.random.Generator) -> str:
    """The prompt with its words in another order (unchanged when it has one word or all words are equal)."""
    words = prompt.split()
    if len(set(words)) < 2:
        return prompt
    order = rng.permutation(len(words))
    shuffled = [words[i] for i in order]
    if shuffled == words:  # a permutation that changes nothing teaches nothing: rotate instead
        shuffled = words[1:] + words[:1]
    return " ".join(shuffled)


def batch_indices(step: int, num_items: int, batch_size: int, seed: int) -> np.ndarray:
    """Item indices of global batch ``step``: epoch ``e`` walks a permutation seeded by (seed, e).

    A pure function of its arguments, so a resumed run (with any number of processes) sees the same
    batches as an uninterrupted one. The last partial batch of an epoch is dropped.
    """
    per_epoch = num_items // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch size {batch_size} is larger than the {num_items} training prompts")
    epoch, index = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_items)
    return order[index * batch_size : (index + 1) * batch_size]


def item_rng(seed: int, step: int, position: int) -> np.random.Generator:
    """Random numbers for item ``position`` of global batch ``step`` (its word shuffle).

    Seeded per item, so a prompt gets the same shuffle whichever process holds it.
    """
    return np.random.default_rng([seed, step, position, 1])
