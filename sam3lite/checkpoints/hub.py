"""Resolving a model name to local files: short names (``s0``), hub ids, directories, files."""

from __future__ import annotations

from pathlib import Path

from .files import CheckpointError
from .variants import VARIANTS

_HUB_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json", "*.json", "*.txt"]


# ----------------------------------------------------------------------------------------------


def resolve(name_or_path: str | Path) -> Path:
    """Local path for a short name (``s0``), hub id (``vil-uob/sam3-litetext-s0``), directory or file.

    Hub downloads go through huggingface_hub into its usual cache (``HF_HOME``); offline, a cached
    copy is used, and with none a clear error says how to pass a local path.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return path
    repo_id = VARIANTS[text].hub_id if text in VARIANTS else text
    if text.startswith((".", "/", "~")) or text.endswith((".pt", ".pth", ".safetensors", ".json")):
        raise CheckpointError(f"no such file or directory: {text}")
    if repo_id.count("/") != 1:
        known = ", ".join(sorted(VARIANTS))
        raise CheckpointError(
            f"unknown model {text!r}: not a local path, not a short name ({known}) and not a hub id (owner/name)"
        )
    return _download(repo_id, text)


def _download(repo_id: str, asked: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
    except Exception as err:  # network, auth, missing repo: all end the same way for the user
        if is_gated_error(err):
            raise CheckpointError(gated_message(asked, repo_id)) from err
        # One line: the hub's own messages span several lines and would bury the advice below.
        detail = " ".join(str(err).split())
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        raise CheckpointError(
            f"could not get model {asked!r} (hub repo {repo_id!r}): {type(err).__name__}: {detail} "
            f"Without network access, download the repo elsewhere and pass its local directory, e.g. "
            f"sam3lite.load('/path/to/{repo_id.split('/')[-1]}') or --model /path/to/dir."
        ) from err


def is_gated_error(err: BaseException) -> bool:
    """True for the hub's answer to a gated (or private) repo without an accepted licence: 401 / 403."""
    from huggingface_hub.errors import GatedRepoError

    if isinstance(err, GatedRepoError):
        return True
    status = getattr(getattr(err, "response", None), "status_code", None)
    return status in (401, 403)


def gated_message(asked: str, repo_id: str) -> str:
    return (
        f"model {asked!r} (hub repo {repo_id!r}) is gated: accept its licence on https://huggingface.co/{repo_id} "
        "while logged in there, then log in here with `hf auth login` (or `huggingface-cli login`, or set "
        "HF_TOKEN) and retry"
    )
