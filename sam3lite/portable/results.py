"""``PromptResult``: every instance found for one prompt, with conversions to RLE, dicts, supervision.

Torch-free: the ONNX runtime fills it with numpy arrays. ``sam3lite.predictor.PromptResult`` is the
same class for torch tensors (it adds ``to_dict(kind="torch")``). Arrays are converted with
``as_numpy``, which recognises torch tensors without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .rle import as_numpy, masks_to_rle


@dataclass
class PromptResult:
    """Every instance found for one prompt.

    masks: bool [N, H, W] at the original image size.
    boxes: float32 [N, 4] xyxy in pixels.
    scores: float32 [N] = sigmoid(logit) * sigmoid(presence), in decreasing query order of the model.
    prompt: the text prompt ("visual" for boxes only).

    The arrays are numpy arrays (ONNX runtime) or torch tensors (``sam3lite.Predictor``).
    """

    prompt: str
    masks: Any
    boxes: Any
    scores: Any

    # Array kinds ``to_dict`` converts to; the torch subclass adds "torch".
    KINDS: ClassVar[tuple[str, ...]] = ("numpy",)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the image the masks cover."""
        return (int(self.masks.shape[-2]), int(self.masks.shape[-1]))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __repr__(self) -> str:
        # Shapes and counts: the dataclass default would print every mask pixel.
        shown = ", ".join(f"{float(s):.2f}" for s in as_numpy(self.scores[:5]).tolist())
        shown += ", ..." if len(self) > 5 else ""
        return (
            f"{type(self).__name__}(prompt={self.prompt!r}, instances={len(self)}, "
            f"masks={describe(self.masks)}, boxes={describe(self.boxes)}, scores=[{shown}])"
        )

    def to_rle(self) -> list[dict[str, Any]]:
        """COCO compressed RLE per mask: ``{"size": [H, W], "counts": str}``."""
        return masks_to_rle(self.masks)

    def to_dict(self, kind: str = "numpy") -> dict[str, Any]:
        """``{"prompt", "masks", "boxes", "scores"}`` with the arrays as numpy arrays (``kind="numpy"``)."""
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, self.KINDS))}, got {kind!r}")
        arrays = {"masks": self.masks, "boxes": self.boxes, "scores": self.scores}
        return {"prompt": self.prompt, **{k: self._convert(v, kind) for k, v in arrays.items()}}

    def _convert(self, array: Any, kind: str) -> Any:
        return as_numpy(array)

    def to_supervision(self) -> Any:
        """A ``supervision.Detections`` (needs ``pip install supervision``)."""
        try:
            import supervision as sv
        except ImportError as err:
            raise ImportError("to_supervision() needs the 'supervision' package: pip install supervision") from err
        n = len(self)
        return sv.Detections(
            xyxy=as_numpy(self.boxes).astype(np.float32),
            mask=as_numpy(self.masks),
            confidence=as_numpy(self.scores),
            class_id=np.zeros(n, dtype=int),
            data={"class_name": np.array([self.prompt] * n)},
        )


def describe(array: Any) -> str:
    """``bool[3, 480, 640]`` for a numpy array or a torch tensor (plus the device when not the CPU)."""
    dims = ", ".join(str(d) for d in array.shape)
    device = getattr(array, "device", None)
    where = f" on {device}" if device is not None and getattr(device, "type", "cpu") != "cpu" else ""
    return f"{str(array.dtype).removeprefix('torch.')}[{dims}]{where}"
