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
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvF

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | str | os.PathLike

# PIL's refusal limit for decompression bombs (twice its warning limit): the most pixels sam3lite reads.
MAX_IMAGE_PIXELS = 2 * 89_478_485
_EXIF_ORIENTATION = 0x0112
_PIL_RESAMPLE_BILINEAR = 2  # PIL.Image.Resampling.BILINEAR, the value HF configs store as "resample"
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


# File extensions taken as images when a folder is read (image datasets, folders of video frames).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
)


@dataclass(frozen=True)
class ImageSettings:
    """Target size and normalization. Defaults are those of every SAM3 / SAM3-LiteText checkpoint.

    Attributes:
        size: (height, width) of ``pixel_values``.
        image_mean, image_std: per-channel, in units of ``rescale_factor`` (0..1 pixels).
        rescale_factor: pixel scale of ``image_mean`` / ``image_std`` (1/255).
    """

    size: tuple[int, int] = (1008, 1008)
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255

    def __post_init__(self) -> None:
        if len(self.size) != 2 or any(not isinstance(s, int) or s <= 0 for s in self.size):
            raise ValueError(f"size must be (height, width) positive ints, got {self.size!r}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("image_mean and image_std need 3 values (R, G, B)")
        if any(s <= 0 for s in self.image_std) or self.rescale_factor <= 0:
            raise ValueError("image_std and rescale_factor must be positive")

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any]) -> ImageSettings:
        """From an HF image-processor dict (``preprocessor_config.json``); absent keys take the defaults."""
        for flag in ("do_resize", "do_rescale", "do_normalize"):
            if data.get(flag) is False:
                raise ValueError(f"image processor config sets {flag}=false, which sam3lite does not support")
        resample = data.get("resample", _PIL_RESAMPLE_BILINEAR)
        if resample != _PIL_RESAMPLE_BILINEAR:
            raise ValueError(f"image processor config asks for resample={resample!r}; only bilinear (2) is supported")
        size = data.get("size", {"height": 1008, "width": 1008})
        if isinstance(size, int):
            size = {"height": size, "width": size}
        if "height" not in size or "width" not in size:
            raise ValueError(f"image processor config size must have height and width, got {size!r}")

        def triple(value: Any) -> tuple[float, float, float]:
            values = [value] * 3 if isinstance(value, (int, float)) else list(value)
            return (float(values[0]), float(values[1]), float(values[2]))

        return cls(
            size=(int(size["height"]), int(size["width"])),
            image_mean=triple(data.get("image_mean", cls.image_mean)),
            image_std=triple(data.get("image_std", cls.image_std)),
            rescale_factor=float(data.get("rescale_factor", cls.rescale_factor)),
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``Sam3ImageProcessor`` config dict for these settings."""
        return {
            "image_processor_type": "Sam3ImageProcessor",
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "mask_size": {"height": 288, "width": 288},
            "resample": _PIL_RESAMPLE_BILINEAR,
            "rescale_factor": self.rescale_factor,
            "size": {"height": self.size[0], "width": self.size[1]},
        }


# ---------------------------------------------------------------------------------------------
# Any input -> RGB tensor [3, H, W]
# ---------------------------------------------------------------------------------------------


class ImageTooLargeError(ValueError):
    """An image with more pixels than the reader accepts (refused before its pixels are decoded)."""

    def __init__(self, what: str, pixels: int | None, limit: int, size: tuple[int, int] | None = None) -> None:
        self.pixels, self.limit, self.size = pixels, limit, size
        if size is not None:
            found = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels"
        else:
            found = f"{pixels:,} pixels" if pixels is not None else "more pixels than that"
        super().__init__(f"{what}: the image has {found}; at most {limit:,} are accepted (resize it first)")


def open_image(source: str | os.PathLike | IO[bytes], max_pixels: int = MAX_IMAGE_PIXELS, what: str = "image"):
    """``PIL.Image.open`` (lazy: only the header is read) that refuses images above ``max_pixels``.

    PIL warns about images above 89 M pixels and refuses those above twice that (its guard against
    decompression bombs); here the limit is ``max_pixels`` (at most PIL's own refusal limit), with
    an ``ImageTooLargeError`` instead of PIL's warning or error.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            img = PIL.Image.open(source)
    except PIL.Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))  # PIL names the count, not the size
        raise ImageTooLargeError(what, int(found.group(1)) if found else None, max_pixels) from None
    if img.width * img.height > max_pixels:
        img.close()
        raise ImageTooLargeError(what, None, max_pixels, size=img.size)
    return img


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file as ``load_image`` returns it (EXIF rotation applied), read from
    its header without decoding the pixels.

    Raises:
        OSError: missing or unreadable file; ValueError: more than ``MAX_IMAGE_PIXELS`` pixels.
    """
    with open_image(path, what=f"image file {os.fspath(path)!r}") as img:
        width, height = img.size
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)  # 5-8: turned by 90 degrees


def load_image(path: str | os.PathLike) -> PIL.Image.Image:
    """Decode an image file to an upright RGB PIL image (EXIF orientation applied, alpha dropped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable image (unknown format, truncated, corrupt), or it has
            more than ``MAX_IMAGE_PIXELS`` pixels (``ImageTooLargeError``).
    """
    path = os.fspath(path)
    if path.startswith(("http://", "https://")):
        raise ValueError(f"{path!r}: URLs are not fetched; download the image and pass the file or a PIL image")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path!r}")
    try:
        with open_image(path, what=f"image file {path!r}") as img:
            return upright_rgb(img)
    except ImageTooLargeError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image file {path!r}: {err}") from err


def upright_rgb(img: PIL.Image.Image) -> PIL.Image.Image:
    """A decoded image file as sam3lite reads files: EXIF orientation applied, RGB, alpha dropped.

    exif_transpose copies the image, which forces the full decode: corrupt or truncated data
    raises here (OSError / SyntaxError / ValueError from PIL).
    """
    return _pil_to_rgb(PIL.ImageOps.exif_transpose(img), composite_alpha=False)


def _pil_to_rgb(img: PIL.Image.Image, composite_alpha: bool) -> PIL.Image.Image:
    if img.mode in _SIXTEEN_BIT_MODES:
        # PIL's own conversion clips 16-bit values at 255; scale them instead.
        wide = np.asarray(img).astype(np.uint32)
        img = PIL.Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))  # round(v / 257), mode L
    has_alpha = "A" in img.getbands() or img.info.get("transparency") is not None
    if composite_alpha and has_alpha:
        rgba = img.convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _array_to_chw(t: torch.Tensor, name: str) -> torch.Tensor:
    """[C, H, W] tensor of any supported dtype -> RGB [3, H, W]: uint8, or float32 in 0..255."""
    if t.shape[0] not in (1, 3, 4):
        raise ValueError(f"{name}: expected 1, 3 or 4 channels, got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        pass
    elif t.dtype == torch.uint16:
        t = ((t.to(torch.int64) * 255 + 32767) // 65535).to(torch.uint8)  # round(v / 257)
    elif t.is_floating_point():
        t = t.to(torch.float32)
        if not bool(torch.isfinite(t).all()) or t.min() < 0 or t.max() > 1:
            raise ValueError(
                f"{name}: floating-point images must hold values in [0, 1] "
                "(pass uint8 for 0..255 data, or divide by 255)"
            )
        t = t * 255
    else:
        raise TypeError(f"{name}: unsupported dtype {t.dtype}; use uint8, uint16 or float in [0, 1]")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    elif t.shape[0] == 4:
        # Composite on white, as the reference does for 4-channel arrays.
        alpha = t[3:].to(torch.float32) / 255
        rgb = t[:3].to(torch.float32) * alpha + 255 * (1 - alpha)
        t = rgb.round_().to(torch.uint8) if t.dtype == torch.uint8 else rgb
    return t


def to_rgb_tensor(image: ImageInput, name: str = "image") -> torch.Tensor:
    """One image of any accepted kind -> [3, H, W] (uint8, or float32 in 0..255 for float inputs).

    ``name`` is used in error messages (e.g. ``"images[3]"``).
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, PIL.Image.Image):
        try:
            rgb = _pil_to_rgb(image, composite_alpha=True)
        except (OSError, ValueError) as err:
            raise ValueError(f"{name}: cannot convert PIL image (mode {image.mode}) to RGB: {err}") from err
        t = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)
    elif isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(f"{name}: numpy images must be HW or HWC, got shape {image.shape}")
        if image.dtype not in (np.uint8, np.uint16) and not np.issubdtype(image.dtype, np.floating):
            raise TypeError(f"{name}: unsupported dtype {image.dtype}; use uint8, uint16 or float in [0, 1]")
        # torch.from_numpy needs a writable array; views of PIL images (np.asarray) are read-only.
        arr = torch.from_numpy(np.array(image) if not image.flags.writeable else np.ascontiguousarray(image))
        t = arr[None] if arr.ndim == 2 else arr.permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        if image.ndim not in (2, 3):
            raise ValueError(f"{name}: torch images must be HW or CHW, got shape {tuple(image.shape)}")
        t = image.detach().cpu()
        t = t[None] if t.ndim == 2 else t
    else:
        raise TypeError(
            f"{name}: unsupported image type {type(image).__name__}; "
            "expected a PIL image, numpy array, torch tensor or file path"
        )
    if t.shape[-1] == 0 or t.shape[-2] == 0:
        raise ValueError(f"{name}: image has zero size {tuple(t.shape[-2:])}")
    return _array_to_chw(t, name).contiguous()


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
