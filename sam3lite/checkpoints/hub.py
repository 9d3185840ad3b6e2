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
        raise DownloadError(asked, repo_id, f"{type(err).__name__}: {_shorten(str(err))}") from err


class DownloadError(CheckpointError):
    """A hub model that could not be downloaded (offline, unknown repo, no access).

    ``str(err)`` advises Python users (``sam3lite.load(folder)``); ``err.for_cli(option)`` says the
    same for the command line (``--model folder``). Both give the one command that fetches the files
    on a machine with network access.
    """

    def __init__(self, asked: str, repo_id: str, detail: str) -> None:
        self.asked, self.repo_id, self.detail = asked, repo_id, detail
        self.folder = repo_id.split("/")[-1]
        super().__init__(self._message(f"load it with sam3lite.load('{self.folder}')"))

    def for_cli(self, option: str | None) -> str:
        """The message for a command whose ``option`` (e.g. ``--model``; None: a positional) named the model."""
        use = f"pass {option} {self.folder}" if option else f"give {self.folder} in place of {self.asked!r}"
        return self._message(use)

    def _message(self, use: str) -> str:
        return (
            f"could not get model {self.asked!r} (hub repo {self.repo_id!r}): {self.detail} "
            f"Without network access here, run `hf download {self.repo_id} --local-dir {self.folder}` on a "
            f"machine that has it, copy the folder over and {use}."
        )


def _shorten(text: str, limit: int = 240) -> str:
    """The hub's message on one line, cut after a whole sentence (or word) when it is long."""
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    text = " ".join(line if line.endswith((".", "!", "?", ":")) else line + "." for line in lines)
    if len(text) <= limit:
        return text if text.endswith((".", "!", "?")) else text + "."
    head = text[:limit]
    end = head.rfind(". ")
    if end > limit // 3:
        return head[: end + 1]
    return head[: head.rfind(" ")].rstrip(",;:") + " ..."


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
