"""Whose output folder is this? The settings a run was made with, and the files it wrote.

Two files mark a folder as a ``sam3lite segment`` run:

    DIR/run.json       {"format": 1, "sam3lite": version, "settings": {...}, "model": {"name", "path"}}
    DIR/manifest.txt   the output names (``<name>``) whose files our runs wrote, one per line

``settings`` holds everything that shapes the outputs (model weights, dtype, thresholds, prompts,
boxes, ...). A rerun with other settings would mix two kinds of results in one folder, so it is
refused, naming what changed, unless ``--overwrite`` asks to redo every image. A folder that is not
empty and holds no run is refused too (unless it holds the input images: ``--out`` may be the input
folder), and a file that our runs did not write is never replaced: the manifest says which are ours.
Each rank adds an image's name to the manifest before it writes the image's files, so a run killed
in between leaves nothing unlisted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .inputs import OVERLAY_SUFFIX, ImageItem
from .writer import RUN_FILES, atomic_write, atomic_write_json

RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.txt"
FORMAT = 1

# A setting added after runs were recorded without it: the value those runs had in effect. A key
# missing here and in an old record counts as changed.
SETTING_DEFAULTS: dict[str, Any] = {
    "text_mode": None,  # runs before --text-mode used the checkpoint's
    "backend": "torch",  # runs before --backend onnx ran PyTorch
    "object": None,  # runs before --point/--object-box had no object
    "tracker": None,
}
# How a setting is named in messages (default: ``--key-with-dashes``).
SETTING_NAMES = {
    "model": "--model (weights)",
    "prompts": "--prompt",
    "category_ids": "category ids",
    "boxes": "--box",
    "box_labels": "--box labels",
    "object": "--point/--object-box",
    "tracker": "--tracker (weights)",
}
_SAMPLE_CHUNKS, _CHUNK = 16, 64 * 1024
_WEIGHT_SUFFIXES = (".json", ".safetensors", ".pt", ".pth", ".bin", ".onnx", ".data")  # .onnx/.data: ONNX exports


@dataclass
class FolderState:
    """What ``inspect_folder`` found: a fresh folder, or an earlier run's names (``listed``)."""

    fresh: bool
    listed: set[str] = field(default_factory=set)
    changed: list[str] = field(default_factory=list)  # settings that differ (only with --overwrite)


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------


def model_fingerprint(path: Path) -> str:
    """A digest of a checkpoint's contents, stable when the files are copied or moved.

    config.json (and the other json files) whole; each weight file by name, size and 16 chunks of
    64 KiB spread over it (its header included): any retraining changes nearly every chunk, and
    reading 1 MiB per file costs nothing beside loading the model.
    """
    files = sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES) if path.is_dir() else [path]
    if path.is_file() and (path.parent / "config.json").is_file():
        files.append(path.parent / "config.json")
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.name}\0{size}\0".encode())
        with open(file, "rb") as fh:
            if file.suffix == ".json" or size <= _SAMPLE_CHUNKS * _CHUNK:
                digest.update(fh.read())
                continue
            for k in range(_SAMPLE_CHUNKS):
                fh.seek(k * (size - _CHUNK) // (_SAMPLE_CHUNKS - 1))
                digest.update(fh.read(_CHUNK))
    return digest.hexdigest()[:16]


def describe_changes(old: dict[str, Any], new: dict[str, Any], old_model: dict[str, Any] | None = None) -> list[str]:
    """``["--threshold was 0.1, now 0.5", ...]``: the settings whose values differ."""
    changes = []
    for key in sorted(set(old) | set(new)):
        before = old.get(key, SETTING_DEFAULTS.get(key, "(not recorded)"))
        after = new.get(key, SETTING_DEFAULTS.get(key, "(none)"))
        if before == after:
            continue
        name = SETTING_NAMES.get(key, "--" + key.replace("_", "-"))
        if key == "model" and old_model:
            changes.append(f"{name}: other files than the run's {old_model.get('path', '?')}")
        else:
            changes.append(f"{name} was {_short(before)}, now {_short(after)}")
    return changes


def _short(value: Any, limit: int = 48) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


# ----------------------------------------------------------------------------------------------
# The folder
# ----------------------------------------------------------------------------------------------


def inspect_folder(
    out: Path, items: Sequence[ImageItem], settings: dict[str, Any], overwrite: bool, model: dict[str, Any]
) -> FolderState:
    """Decide whether this run may write into ``out``; raise ``ValueError`` (one line) if not.

    Reads only: nothing is created or changed, so a refusal leaves the folder as it was.
    """
    entries = set(os.listdir(out)) if out.is_dir() else set()
    if not {e for e in entries if not e.startswith(".")}:
        return FolderState(fresh=True)
    if RUN_FILE in entries:
        record = _read_run_file(out)
        changed = describe_changes(record.get("settings", {}), settings, record.get("model"))
        if changed and not overwrite:
            raise ValueError(
                f"--out {out} holds a run made with other settings ({'; '.join(changed)}): rerun with "
                "--overwrite to redo every image with the new ones, or choose another --out"
            )
        listed = read_manifest(out)
        state = FolderState(fresh=False, listed=listed, changed=changed)
    else:
        if not _holds_inputs(out, items):
            raise ValueError(
                f"--out {out} is not empty and holds no sam3lite segment run (no {RUN_FILE}); "
                "choose a new or empty folder"
            )
        foreign = sorted(entries & {*RUN_FILES, MANIFEST_FILE})
        if foreign:
            raise ValueError(_not_ours(out, foreign))
        state = FolderState(fresh=True)
    foreign = [
        file
        for item in items
        if item.name not in state.listed
        for file in (f"{item.name}.json", f"{item.name}{OVERLAY_SUFFIX}")
        if file in entries
    ]
    if foreign:
        raise ValueError(_not_ours(out, foreign))
    return state


def _not_ours(out: Path, files: list[str]) -> str:
    more = f" (and {len(files) - 1} more)" if len(files) > 1 else ""
    return (
        f"--out {out} holds {files[0]}{more}, which sam3lite did not write and would replace; "
        "move it away or choose another --out"
    )


def _holds_inputs(out: Path, items: Sequence[ImageItem]) -> bool:
    """``out`` is a folder with input images in it or below it (``--out`` = the input folder)."""
    root = os.path.realpath(out)
    return any(os.path.realpath(item.path).startswith(root + os.sep) for item in items)


def _read_run_file(out: Path) -> dict[str, Any]:
    path = out / RUN_FILE
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is unreadable ({err}); choose another --out") from err
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("settings"), dict):
        raise ValueError(f"{path} is not a sam3lite segment run file this version reads; choose another --out")
    return record


def write_run_file(out: Path, settings: dict[str, Any], model: dict[str, Any], version: str) -> None:
    atomic_write_json(out / RUN_FILE, {"format": FORMAT, "sam3lite": version, "settings": settings, "model": model})


# ----------------------------------------------------------------------------------------------
# The manifest
# ----------------------------------------------------------------------------------------------


def read_manifest(out: Path) -> set[str]:
    try:
        with open(out / MANIFEST_FILE, encoding="utf-8") as fh:
            return {line.rstrip("\n") for line in fh if line.strip()}
    except FileNotFoundError:
        return set()


def add_to_manifest(out: Path, name: str) -> None:
    """Append one name, in one ``write`` on an ``O_APPEND`` descriptor: lines from ranks do not mix."""
    fd = os.open(out / MANIFEST_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{name}\n".encode())
    finally:
        os.close(fd)


def compact_manifest(out: Path) -> None:
    """Drop repeated names (an image redone with --overwrite is added again); rank 0, at the end."""
    path = out / MANIFEST_FILE
    try:
        lines = [line for line in path.read_text("utf-8").splitlines() if line]
    except FileNotFoundError:
        return
    unique = list(dict.fromkeys(lines))
    if len(unique) < len(lines):
        atomic_write(path, ("\n".join(unique) + "\n").encode("utf-8"))
