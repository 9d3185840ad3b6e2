"""``sam3lite.load`` and ``Sam3LiteTextModel``: the detector network with hub conveniences.

The network (``modeling.Sam3Detector``) knows nothing of files; this layer adds ``from_pretrained`` /
``save_pretrained`` on a subclass, so that no module of ``modeling`` imports loading code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..modeling.detector import Sam3Detector
from ..runtime import resolve_device, select_dtype
from .files import load_state_dict_strict, read_checkpoint, skip_weight_init, write_checkpoint
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
    ) -> Sam3LiteTextModel:
        """Load a checkpoint (short name, hub id, local directory or original ``.pt``); see ``sam3lite.load``."""
        return load(name_or_path, device=device_map, dtype=dtype)

    def save_pretrained(self, directory: str | Path, max_shard_size: int | str = "5GB") -> None:
        """Write ``config.json`` + safetensors in the HF layout (transformers' AutoModel loads it)."""
        write_checkpoint(self, directory, max_shard_size=max_shard_size)


def load(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
) -> Sam3LiteTextModel:
    """Load a SAM3-LiteText (or SAM3) model in eval mode.

    Args:
        name_or_path: ``s0`` / ``s1`` / ``l`` / ``sam3``, a hub id, a local HF directory (config.json +
            model.safetensors or a sharded index), a ``.safetensors`` file beside a config.json, or an
            original EfficientSAM3 ``.pt`` (converted on load).
        device: ``None`` (CPU), ``"auto"``, or any torch device.
        dtype: ``None`` (float32), ``"auto"`` (bfloat16 where the hardware runs it fast, else
            float32), ``"bfloat16"``, ``"float16"`` or a torch dtype.
    """
    target_device = resolve_device(device)
    target_dtype = select_dtype(dtype, target_device)
    path = resolve(name_or_path)
    config, state = read_checkpoint(path)
    # Built on the meta device, the model allocates nothing; the checkpoint's tensors, each moved to
    # the target device and dtype one at a time, become its parameters. Peak memory is one copy of
    # the weights (plus one tensor), not two.
    with skip_weight_init(), torch.device("meta"):
        model = Sam3LiteTextModel(config)
    for key, value in state.items():
        state[key] = value.to(target_device, target_dtype if value.is_floating_point() else value.dtype)
    load_state_dict_strict(model, state, source=str(path), assign=True)
    # Moves only what the loop did not: BatchNorm counters filled in for files that lack them.
    return model.to(device=target_device, dtype=target_dtype).eval()
