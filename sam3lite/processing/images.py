"""Image loading and preprocessing: any input -> RGB -> resize to the model size -> normalize.

Matches transformers' ``Sam3ImageProcessor``: RGB, resized straight to ``size`` (no aspect keep, no
padding) with torchvision bilinear + antialias on uint8, then ``(x - mean / rescale) / (std / rescale)``
in float32, i.e. ``(x - 127.5) / 127.5`` for the SAM3 checkpoints.

Accepted images (``ImageInput``):

- ``PIL.Image.Image`` of any mode. Transparency is composited on white (as the reference does for PIL
  images); 16-bit modes are scaled to 8 bits (the reference saturates them to white). The EXIF
  orientation of an in-memory image is left alone, as in the reference.
- file path (``str`` / ``os.PathLike``): decoded with PIL, EXIF orientation applied; alpha is dropped,
  as the reference's file decoder and ``PIL.Image.convert("RGB")`` do.
- ``numpy.ndarray`` HWC or HW; ``torch.Tensor`` CHW or HW. 1, 3 or 4 channels (4 = RGBA, composited on
  white). dtype uint8, uint16 (scaled to 8 bits) or floating point in [0, 1].
- a list of the above, a ``torch.Tensor`` [B, C, H, W] or a ``numpy.ndarray`` [B, H, W, C] (a batch).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvF

from ..portable.images import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    ImageSettings,
    ImageTooLargeError,
    image_size,
    load_image,
    open_image,
    to_rgb_array,
    upright_rgb,
)

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | str | os.PathLike

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "ImageInput",
    "ImageSettings",
    "ImageTooLargeError",
    "as_image_list",
    "image_size",
    "load_image",
    "open_image",
    "preprocess_images",
    "to_rgb_tensor",
    "upright_rgb",
]


# ---------------------------------------------------------------------------------------------
# Any input -> RGB tensor [3, H, W]
# ---------------------------------------------------------------------------------------------


def to_rgb_tensor(image: ImageInput, name: str = "image") -> torch.Tensor:
    """One image of any accepted kind -> [3, H, W] (uint8, or float32 in 0..255 for float inputs).

    ``name`` is used in error messages (e.g. ``"images[3]"``). Everything but torch tensors goes
    through ``sam3lite.portable.images.to_rgb_array``; tensors take the same path as HWC arrays.
    """
    if isinstance(image, torch.Tensor):
        if image.ndim not in (2, 3):
            raise ValueError(f"{name}: torch images must be HW or CHW, got shape {tuple(image.shape)}")
        t = image.detach().cpu()
        t = t[None] if t.ndim == 2 else t
        if t.dtype not in (torch.uint8, torch.uint16) and not t.is_floating_point():
            raise TypeError(f"{name}: unsupported dtype {t.dtype}; use uint8, uint16 or float in [0, 1]")
        if t.is_floating_point() and t.dtype != torch.float64:
            t = t.float()  # numpy has no bfloat16
        image = t.permute(1, 2, 0).numpy()
    elif not isinstance(image, (str, os.PathLike, PIL.Image.Image, np.ndarray)):
        raise TypeError(
            f"{name}: unsupported image type {type(image).__name__}; "
            "expected a PIL image, numpy array, torch tensor or file path"
        )
    rgb = to_rgb_array(image, name)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def as_image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """Split a batch (list, [B, C, H, W] tensor, [B, H, W, C] array) into single images."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list")
        return list(images)
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images.unbind(0))
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images]


# ---------------------------------------------------------------------------------------------
# Batch -> pixel_values
# ---------------------------------------------------------------------------------------------


def preprocess_images(
    images: ImageInput | Sequence[ImageInput], settings: ImageSettings | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images -> model input.

    Returns:
        ``pixel_values`` [B, 3, H, W] float32 (H, W = ``settings.size``) and ``original_sizes`` [B, 2]
        int64, the (height, width) of each input after RGB conversion and EXIF rotation.
    """
    settings = settings or ImageSettings()
    items = as_image_list(images)
    height, width = settings.size
    pixel_values = torch.empty(len(items), 3, height, width, dtype=torch.float32)
    sizes = torch.empty(len(items), 2, dtype=torch.int64)
    for i, image in enumerate(items):
        rgb = to_rgb_tensor(image, name=f"images[{i}]" if len(items) > 1 else "images")
        sizes[i, 0], sizes[i, 1] = rgb.shape[-2], rgb.shape[-1]
        # uint8 in, uint8 out: torchvision's antialiased bilinear kernel rounds to uint8, like the reference.
        resized = tvF.resize(rgb, [height, width], interpolation=InterpolationMode.BILINEAR, antialias=True)
        pixel_values[i].copy_(resized)
    # Mean and std in pixel units, computed like the reference (fused with the 1/255 rescale) so that the
    # float32 results are bit-identical: (x - 127.5) / 127.5 for the defaults.
    mean = torch.tensor([m / settings.rescale_factor for m in settings.image_mean], dtype=torch.float32)
    std = torch.tensor([s / settings.rescale_factor for s in settings.image_std], dtype=torch.float32)
    pixel_values.sub_(mean.view(1, 3, 1, 1)).div_(std.view(1, 3, 1, 1))
    return pixel_values, sizes
