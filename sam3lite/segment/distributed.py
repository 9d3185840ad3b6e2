"""Ranks under torchrun: who am I, what is done, wait for the others.

Ranks exchange only small control data (a digest of the image list and the done-mask at the start,
per-rank counts at the end, a progress counter), all on the CPU, so every rank uses the gloo
backend; GPU ranks compute on ``cuda:LOCAL_RANK`` and never need NCCL. Outside torchrun (no
``WORLD_SIZE``) nothing is started.

Multi-machine runs need the output folder on a shared file system: rank 0 merges the files that
every rank wrote there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch.distributed as dist

# Ranks wait for each other only at the start and the end; a slow shard of a big run may finish
# hours after the others, so the collective timeout is far above gloo's 30-minute default.
WAIT_TIMEOUT = timedelta(hours=48)
_PROGRESS_KEY = "sam3lite/segment/done"


@dataclass
class Ranks:
    """This process's place in the run (rank 0 of 1 when not under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1 and dist.is_initialized()


def from_environment() -> Ranks:
    """Rank and world size as torchrun sets them (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    env = os.environ
    return Ranks(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))


def start(ranks: Ranks) -> None:
    """Join the process group (gloo) when there is more than one rank."""
    if ranks.world_size > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=WAIT_TIMEOUT)


def stop(ranks: Ranks) -> None:
    if ranks.active:
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.active:
        dist.barrier()


def share_done_mask(ranks: Ranks, mask: list[bool] | None, fingerprint: str) -> list[bool]:
    """Rank 0's view of which images are done, given to every rank, so that all shard the same
    pending list even if a shared file system shows the ranks slightly different listings.

    ``fingerprint`` identifies the image list; a rank whose list differs from rank 0's (another
    working folder, a file system not shared) stops with an error instead of taking a wrong shard.
    """
    if not ranks.active:
        assert mask is not None
        return mask
    shared: list[Any] = [fingerprint, mask]
    dist.broadcast_object_list(shared, src=0)
    if shared[0] != fingerprint:
        raise RuntimeError(
            f"rank {ranks.rank} lists other images than rank 0: start every rank in the same folder with the "
            "same arguments, on a file system they all share"
        )
    return shared[1]


def gather(ranks: Ranks, value: Any) -> list[Any]:
    """Every rank's ``value`` on rank 0 (others get []). Waits for all ranks: the end-of-run barrier."""
    if not ranks.active:
        return [value]
    out: list[Any] | None = [None] * ranks.world_size if ranks.main else None
    dist.gather_object(value, out, dst=0)
    return out or []


class ProgressCounter:
    """Images finished by all ranks together, kept in the process group's key-value store.

    ``add`` is one atomic increment on the store (no collective), so ranks never wait for each other.
    """

    def __init__(self, ranks: Ranks) -> None:
        self._store = None
        if ranks.active:
            # The default store is private API; without it, the overall count is simply not shown.
            get_store = getattr(dist.distributed_c10d, "_get_default_store", None)
            self._store = get_store() if get_store is not None else None
        self._key = f"{_PROGRESS_KEY}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        self._local = 0

    def add(self, count: int) -> int:
        """Record ``count`` more finished images; return the total so far (this rank's without a store)."""
        self._local += count
        if self._store is None:
            return self._local
        return int(self._store.add(self._key, count))
