"""``sam3lite.load`` and ``Sam3LiteTextModel``: the detector network with hub conveniences.

The network (``modeling.Sam3Detector``) knows nothing of files; this layer adds ``from_pretrained`` /
``save_pretrained`` on a subclass, so that no module of ``modeling`` imports loading code.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from ..modeling.detector import Sam3Detector
from ..modeling.tracker.config import TrackerConfig
from ..modeling.video_config import check_tracker_fits
from ..runtime import check_text_mode, resolve_device, select_dtype
from .contents import CheckpointContents
from .files import CheckpointError, load_state_dict_strict, read_contents, skip_weight_init, write_checkpoint
from .hub import resolve


class Sam3LiteTextModel(Sam3Detector):
    """SAM3-LiteText (or SAM3) detector with transformers-style ``from_pretrained`` / ``save_pretrained``.

    ``Sam3LiteTextModel(config)`` builds every part with random weights (see ``Sam3Detector``).
    """

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device_map: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        text_mode: str | None = None,
    ) -> Sam3LiteTextModel:
        """Load a checkpoint (short name, hub id, local directory or original ``.pt``); see ``sam3lite.load``."""
        return load(name_or_path, device=device_map, dtype=dtype, text_mode=text_mode)

    def save_pretrained(self, directory: str | Path, max_shard_size: int | str = "5GB") -> None:
        """Write ``config.json`` + safetensors in the HF layout (transformers' AutoModel loads it)."""
        write_checkpoint(self, directory, max_shard_size=max_shard_size)


def load(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    text_mode: str | None = None,
    tracker: str | Path | bool | None = None,
    context_length: int | None = None,
    position_table: str = "slice",
) -> Sam3LiteTextModel:
    """Load a SAM3-LiteText (or SAM3) model in eval mode.

    Args:
        name_or_path: ``s0`` / ``s1`` / ``l`` / ``sam3``, a hub id, a local HF directory (config.json +
            model.safetensors or a sharded index; the detector layout or facebook/sam3's ``sam3_video``
            layout), a ``.safetensors`` file beside a config.json, or an original EfficientSAM3 / SAM3
            ``.pt`` (converted on load).
        device: ``None`` (CPU), ``"auto"``, or any torch device.
        dtype: ``None`` (float32), ``"auto"`` (bfloat16 where the hardware runs it fast, else
            float32), ``"bfloat16"``, ``"float16"`` or a torch dtype.
        text_mode: ``"transformers"`` (transformers' text path) or ``"original"`` (EfficientSAM3's, with
            which the LiteText weights were trained; see docs/text_modes.md). None: the checkpoint's
            own (``text_mode`` in its config.json), else ``"transformers"``. Kept as ``model.text_mode``
            and written by ``save_pretrained``.
        tracker: SAM3's tracker for point / object-box / mask prompts and video. None: the file's own,
            if it has one (facebook/sam3's hub file does, and so do original ``.pt`` files: sam3.pt and
            EfficientSAM3's LiteText files, converted on load); a name or path (``"sam3"``, a directory in
            the ``sam3_video`` layout, an original ``.pt``): that file's tracker, combined with this
            detector (LiteText keeps SAM3's ViT, so SAM3's tracker fits every LiteText model); False: no
            tracker.
        context_length / position_table: for original ``.pt`` files whose MobileCLIP position table is
            longer than the context they were trained at (older files store 77 rows): the number of
            rows to keep (default: a sibling config.json's, else 16) and how (``"slice"``, as
            EfficientSAM3 does, or ``"interpolate"``).
    """
    if text_mode is not None:
        check_text_mode(text_mode)
    target_device = resolve_device(device)
    target_dtype = select_dtype(dtype, target_device)
    path = resolve(name_or_path)
    contents = read_contents(path, context_length=context_length, position_table=position_table)
    config, state = contents.config, contents.detector
    if text_mode is not None:
        config.text_mode = text_mode
    source = _tracker_source(contents, tracker)
    _warn_unused(contents)
    tracker_config, settings = None, None
    if source is not None:
        tracker_config, settings = _tracker_parts(source, state)
        try:
            check_tracker_fits(config, tracker_config)
        except ValueError as err:
            raise CheckpointError(f"{source.source}: {err}") from err
    # Built on the meta device, the model allocates nothing; the checkpoint's tensors, each moved to
    # the target device and dtype one at a time, become its parameters. Peak memory is one copy of
    # the weights (plus one tensor), not two.
    with skip_weight_init(), torch.device("meta"):
        model = Sam3LiteTextModel(config, tracker_config=tracker_config, video_settings=settings)
    for key, value in state.items():
        state[key] = value.to(target_device, target_dtype if value.is_floating_point() else value.dtype)
    load_state_dict_strict(model, state, source=str(path), assign=True)
    # Moves only what the loop did not: BatchNorm counters filled in for files that lack them.
    return model.to(device=target_device, dtype=target_dtype).eval()


def _tracker_source(contents: CheckpointContents, tracker: str | Path | bool | None) -> CheckpointContents | None:
    """The checkpoint whose tracker the model gets, or None."""
    if tracker is False:
        return None
    if tracker is None or tracker is True:
        if contents.tracker:
            return contents
        if contents.tracker_error is not None:
            raise CheckpointError(
                f"{contents.source}: its tracker could not be converted: {contents.tracker_error} "
                "(pass tracker=False to load the detector alone)"
            )
        if tracker is True:
            raise CheckpointError(f"{contents.source}: holds no tracker; pass tracker='sam3' (or a path) to add one")
        return None
    source = read_contents(resolve(tracker))
    if not source.tracker:
        if source.tracker_error is not None:
            raise CheckpointError(f"{tracker}: its tracker could not be converted: {source.tracker_error}")
        raise CheckpointError(f"{tracker}: holds no SAM3 tracker")
    return source


def _tracker_parts(source: CheckpointContents, state: dict[str, torch.Tensor]) -> tuple[TrackerConfig, dict[str, Any]]:
    """Add the tracker's tensors to ``state`` (under our module names); return its config and settings."""
    if source.tracker_config is None:
        raise CheckpointError(f"{source.source}: tracker tensors without a tracker_config in config.json")
    try:
        tracker_config = TrackerConfig.from_dict(source.tracker_config)
    except ValueError as err:
        raise CheckpointError(f"{source.source}: tracker_config: {err}") from err
    state.update({"tracker_model." + k: v for k, v in source.tracker.items()})
    state.update({"tracker_neck." + k: v for k, v in source.tracker_neck.items()})
    settings = {k: v for k, v in (source.video_config or {}).items() if k != "model_type"}
    return tracker_config, settings


def _warn_unused(contents: CheckpointContents) -> None:
    """One line for parts of the file that sam3lite does not run (SAM 3.1's), so nothing is dropped unseen."""
    if contents.unused:
        parts = "; ".join(f"{part}: {n} tensors, {why}" for part, (n, why) in contents.unused.items())
        sam31 = (
            " This is a SAM 3.1 file: its detector is loaded as SAM3's."
            if any(part.startswith("sam3.1") for part in contents.unused)
            else ""
        )
        warnings.warn(f"{contents.source}: not loaded: {parts}.{sam31}", stacklevel=3)
