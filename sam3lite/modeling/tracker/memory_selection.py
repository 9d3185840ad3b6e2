"""Which memories a frame reads: pure functions over frame indices, mirroring the reference's choices.

For one object on frame ``t`` (forward tracking; reverse mirrors the time axis):

- conditioning frames (frames where the user prompted the object): all of them when there are at
  most ``max_cond_frame_num``, else the closest one before ``t``, the closest one at/after ``t``, then
  the others closest to ``t``. They read with the temporal-encoding row ``num_maskmem - 1``.
- recent frames: ``t - k`` for k = num_maskmem - 1 .. 1 when that frame has a memory (a tracked frame,
  or a conditioning frame not selected above); it reads with row ``k - 1``.
- object pointers: every conditioning frame at or before ``t`` (offset ``t - frame``), then tracked
  frames ``t - k`` for k = 1 .. P - 1 (offset k), where P = min(num_frames, max_object_pointers_in_encoder)
  (``max_object_pointers_in_encoder`` when streaming); offsets are later divided by P - 1.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MemorySelection:
    """What one object reads on one frame.

    memory_frames: (frame index, temporal row) pairs, conditioning frames first, then recent frames
        from the oldest; the row indexes ``memory_temporal_positional_encoding``.
    pointer_frames: (frame index, temporal offset) pairs of the object pointers read.
    max_pointer_offset: the offsets' normaliser (number of pointer slots - 1).
    """

    memory_frames: tuple[tuple[int, int], ...]
    pointer_frames: tuple[tuple[int, int], ...]
    max_pointer_offset: int


@dataclass
class ObjectMemory:
    """The tensors one object reads on one frame (see ``gather_memory``).

    features: [F, 64, h, w] encoded memories (bfloat16 as stored, or any float dtype).
    temporal_rows: [F] long, row of ``memory_temporal_positional_encoding`` per memory frame.
    pointers: [P, C] object pointers; pointer_offsets: [P] temporal offsets (signed ints as float).
    max_pointer_offset: normaliser of the offsets.
    """

    features: torch.Tensor
    temporal_rows: torch.Tensor
    pointers: torch.Tensor
    pointer_offsets: torch.Tensor
    max_pointer_offset: int


def select_conditioning_frames(frame: int, cond_frames: Sequence[int], max_cond_frames: int) -> list[int]:
    """Up to ``max_cond_frames`` conditioning frames (-1 = all) nearest ``frame``, in the reference's order."""
    if max_cond_frames == -1 or len(cond_frames) <= max_cond_frames:
        return list(cond_frames)
    selected: list[int] = []
    before = max((t for t in cond_frames if t < frame), default=None)
    if before is not None:
        selected.append(before)
    after = min((t for t in cond_frames if t >= frame), default=None)
    if after is not None:
        selected.append(after)
    rest = sorted((t for t in cond_frames if t not in selected), key=lambda t: abs(t - frame))
    return selected + rest[: max_cond_frames - len(selected)]


def select_memory(
    frame: int,
    cond_frames: Sequence[int],
    tracked_frames: Collection[int],
    *,
    num_maskmem: int,
    max_cond_frame_num: int,
    max_object_pointers: int,
    num_frames: int | None = None,
    reverse: bool = False,
) -> MemorySelection:
    """Choose the memory frames and object pointers one object reads on ``frame``.

    Args:
        frame: the frame being tracked.
        cond_frames: the object's conditioning frames, in the order they were prompted.
        tracked_frames: the object's other frames that hold a memory and a pointer.
        num_maskmem, max_cond_frame_num, max_object_pointers: the config's ``num_maskmem``,
            ``max_cond_frame_num`` and ``max_object_pointers_in_encoder``.
        num_frames: the video's length, or None when streaming (length unknown).
        reverse: tracking towards earlier frames.
    """
    step = -1 if reverse else 1
    selected = select_conditioning_frames(frame, cond_frames, max_cond_frame_num)
    unselected = set(cond_frames) - set(selected)
    memory = [(t, num_maskmem - 1) for t in selected]
    for k in range(num_maskmem - 1, 0, -1):
        previous = frame - step * k
        if previous in tracked_frames or previous in unselected:
            memory.append((previous, k - 1))

    slots = max_object_pointers if num_frames is None else min(num_frames, max_object_pointers)
    pointers = [(t, (frame - t) * step) for t in cond_frames if (t - frame) * step <= 0]
    for k in range(1, slots):
        previous = frame - step * k
        if previous < 0 or (num_frames is not None and previous >= num_frames):
            break
        if previous in tracked_frames:
            pointers.append((previous, k))
    # A one-frame video has a single slot; the reference would divide by zero (never reached there).
    return MemorySelection(tuple(memory), tuple(pointers), max(slots - 1, 1))


def gather_memory(
    selection: MemorySelection,
    memories: Mapping[int, torch.Tensor],
    pointers: Mapping[int, torch.Tensor],
) -> ObjectMemory:
    """Stack one object's stored tensors for ``selection``.

    memories: frame -> encoded memory [64, h, w]; pointers: frame -> object pointer [C].
    """
    if not selection.memory_frames:
        raise ValueError("the selection reads no memory frame; a frame without memory is an initial conditioning frame")
    frames = [t for t, _ in selection.memory_frames]
    missing = [t for t in frames if t not in memories] + [t for t, _ in selection.pointer_frames if t not in pointers]
    if missing:
        raise KeyError(f"no stored memory/pointer for frames {sorted(set(missing))}")
    first = memories[frames[0]]
    rows = torch.tensor([r for _, r in selection.memory_frames], dtype=torch.long, device=first.device)
    if selection.pointer_frames:
        pointer_stack = torch.stack([pointers[t] for t, _ in selection.pointer_frames])
    else:
        width = next(iter(pointers.values())).shape[-1] if pointers else 0
        pointer_stack = first.new_zeros(0, width, dtype=torch.float32)
    offsets = torch.tensor([float(o) for _, o in selection.pointer_frames], device=pointer_stack.device)
    return ObjectMemory(
        features=torch.stack([memories[t] for t in frames]),
        temporal_rows=rows,
        pointers=pointer_stack,
        pointer_offsets=offsets,
        max_pointer_offset=selection.max_pointer_offset,
    )
