"""Images without torch: decoding files, any input to RGB, resizing and normalizing with numpy and PIL.

``sam3lite.processing.images`` (torch tensors) builds on these; the ONNX runtime uses them alone.
Inputs as in ``sam3lite.processing.images``: a file path, a ``PIL.Image.Image`` of any mode, or a
``numpy.ndarray`` HW / HWC with 1, 3 or 4 channels (uint8, uint16, or float in [0, 1]).

The resize reproduces torchvision's antialiased bilinear resize of uint8 images (the reference
processor's): the same separable filter weights, rounded to int16 with the same precision, the same
integer accumulation and rounding, horizontal pass first. Its output is bit-identical to
torchvision's on x86 (tests/onnx/test_portable.py). Pillow's resize, a similar filter with other
integer precision, differs by 1-2 grey levels on up to 3.5% of the pixels.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import PIL.Image
import PIL.ImageOps

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
# Files and PIL images
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
    return pil_to_rgb(PIL.ImageOps.exif_transpose(img), composite_alpha=False)


def pil_to_rgb(img: PIL.Image.Image, composite_alpha: bool) -> PIL.Image.Image:
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


# ---------------------------------------------------------------------------------------------
# Any input -> RGB array [H, W, 3]
# ---------------------------------------------------------------------------------------------


def channels_to_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    """[H, W, C] array of any supported dtype -> RGB [H, W, 3]: uint8, or float32 in 0..255."""
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name}: expected 1, 3 or 4 channels, got shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = ((arr.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ValueError(
                f"{name}: floating-point images must hold values in [0, 1] "
                "(pass uint8 for 0..255 data, or divide by 255)"
            )
        arr = arr * np.float32(255)
    else:
        raise TypeError(f"{name}: unsupported dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        # Composite on white, as the reference does for 4-channel arrays.
        alpha = arr[..., 3:].astype(np.float32) / np.float32(255)
        rgb = arr[..., :3].astype(np.float32) * alpha + np.float32(255) * (1 - alpha)
        arr = np.round(rgb).astype(np.uint8) if arr.dtype == np.uint8 else rgb
    return arr


def to_rgb_array(image: Any, name: str = "image") -> np.ndarray:
    """A file path, PIL image or numpy HW / HWC array -> RGB [H, W, 3] (uint8, or float32 in 0..255).

    ``name`` is used in error messages (e.g. ``"images[3]"``).
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, PIL.Image.Image):
        try:
            arr = np.array(pil_to_rgb(image, composite_alpha=True))
        except (OSError, ValueError) as err:
            raise ValueError(f"{name}: cannot convert PIL image (mode {image.mode}) to RGB: {err}") from err
    elif isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(f"{name}: numpy images must be HW or HWC, got shape {image.shape}")
        arr = image[..., None] if image.ndim == 2 else image
    else:
        raise TypeError(
            f"{name}: unsupported image type {type(image).__name__}; expected a PIL image, numpy array or file path"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: image has zero size {tuple(arr.shape[:2])}")
    return np.ascontiguousarray(channels_to_rgb(arr, name))


# ---------------------------------------------------------------------------------------------
# RGB array -> pixel_values
# ---------------------------------------------------------------------------------------------


def _filter_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased bilinear weights along one axis, as torchvision computes them (float64).

    Returns the input index [out, K] and weight [out, K] of each of K taps per output pixel (indices
    clipped into range where the weight is 0).
    """
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0  # the triangle filter widens when shrinking (antialias)
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    taps = int(math.ceil(support)) * 2 + 1
    center = scale * (np.arange(out_size, dtype=np.float64) + 0.5)
    first = np.maximum((center - support + 0.5).astype(np.int64), 0)
    count = np.clip(np.minimum((center + support + 0.5).astype(np.int64), in_size) - first, 0, taps)
    k = np.arange(taps)
    x = np.abs(((k[None, :] + first[:, None]) - center[:, None] + 0.5) * invscale)
    weights = np.where((x < 1.0) & (k[None, :] < count[:, None]), 1.0 - x, 0.0)
    total = np.cumsum(weights, axis=1)[:, -1:]  # summed in order, as the C loop does
    weights = np.divide(weights, total, out=weights, where=total != 0)
    return np.minimum(first[:, None] + k[None, :], in_size - 1), weights


def _resample_axis(arr: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """Resize [H, W, C] along ``axis`` (0 or 1): uint8 in integer arithmetic, float32 in float."""
    index, weights = _filter_weights(arr.shape[axis], out_size)
    shape = [1] * arr.ndim
    shape[axis] = out_size
    if arr.dtype != np.uint8:
        out = np.zeros(arr.shape[:axis] + (out_size,) + arr.shape[axis + 1 :], dtype=np.float32)
        for k in range(index.shape[1]):
            out += np.take(arr, index[:, k], axis=axis) * weights[:, k].astype(np.float32).reshape(shape)
        return out
    # int16 weights with the most precision that keeps the largest below 2^15, then
    # (sum + half) >> precision, saturated to 0..255: torchvision's uint8 kernels.
    precision = 0
    while precision < 22 and int(0.5 + weights.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    fixed = np.floor(weights * (1 << precision) + 0.5).astype(np.int32)
    acc = np.full(arr.shape[:axis] + (out_size,) + arr.shape[axis + 1 :], 1 << (precision - 1), dtype=np.int32)
    for k in range(index.shape[1]):
        if fixed[:, k].any():
            acc += np.take(arr, index[:, k], axis=axis).astype(np.int32) * fixed[:, k].reshape(shape)
    return np.clip(acc >> precision, 0, 255).astype(np.uint8)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8 (or float32 0..255) -> [height, width, 3] float32, antialiased bilinear.

    uint8 stays uint8 through both passes (rounded, as torchvision's uint8 kernels do); float inputs
    are resized in float32.
    """
    height, width = size
    out = rgb
    if out.shape[1] != width:
        out = _resample_axis(out, 1, width)
    if out.shape[0] != height:
        out = _resample_axis(out, 0, height)
    return out.astype(np.float32)


def normalize(resized: np.ndarray, settings: ImageSettings) -> np.ndarray:
    """[H, W, 3] float32 pixels (0..255) -> [3, H, W] float32 ``(x - mean) / std`` in pixel units."""
    # Mean and std in pixel units, as the reference fuses them with the 1/255 rescale.
    mean = np.array([m / settings.rescale_factor for m in settings.image_mean], dtype=np.float32)
    std = np.array([s / settings.rescale_factor for s in settings.image_std], dtype=np.float32)
    return np.ascontiguousarray(((resized - mean) / std).transpose(2, 0, 1))


def preprocess_image(image: Any, settings: ImageSettings | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """One image -> ``pixel_values`` [1, 3, H, W] float32 and its original (height, width)."""
    settings = settings or ImageSettings()
    rgb = to_rgb_array(image)
    return normalize(resize_rgb(rgb, settings.size), settings)[None], (int(rgb.shape[0]), int(rgb.shape[1]))
