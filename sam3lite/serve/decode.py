"""Image file bytes -> model input, refusing oversized and corrupt images with a clear 4xx."""

from __future__ import annotations

import base64
import binascii
import io

import PIL.Image
import PIL.ImageOps
import torch

from ..processing.images import (
    MAX_IMAGE_PIXELS,
    ImageSettings,
    ImageTooLargeError,
    open_image,
    preprocess_images,
    upright_rgb,
)
from .errors import ApiError, invalid

_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)


def decode_base64(text: str) -> bytes:
    """The JSON ``image`` field -> file bytes. A data URL prefix is accepted; URLs are refused."""
    text = text.strip()
    if text.startswith(("http://", "https://", "ftp://", "file:")):
        raise invalid("image", "URLs are not fetched; send the image file's bytes base64-encoded")
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise invalid("image", "data URLs must be base64 ('data:image/png;base64,...')")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise invalid("image", f"not valid base64 ({err})") from err
    if not data:
        raise invalid("image", "the image is empty")
    return data


def decode_image(data: bytes, max_pixels: int) -> PIL.Image.Image:
    """Decode like ``sam3lite.load_image`` does a file: EXIF orientation applied, RGB, alpha dropped.

    The pixel count is checked from the header, before the pixels are decoded (decompression bombs).
    """
    if not data:
        raise invalid("image", "the image is empty")
    try:
        img = open_image(io.BytesIO(data), min(max_pixels, MAX_IMAGE_PIXELS))
    except ImageTooLargeError as err:
        raise _too_large(err, max_pixels) from None
    except _PIL_ERRORS as err:
        # PIL's message names the BytesIO object; say what the client can act on instead.
        raise invalid("image", "not a readable image file (PNG, JPEG, WebP, BMP, TIFF or GIF expected)") from err
    try:
        return upright_rgb(img)  # decodes fully: truncated files fail here
    except _PIL_ERRORS as err:
        raise invalid("image", f"the image file is corrupt or truncated ({_short(err)})") from err


def prepare_pixels(image: PIL.Image.Image, settings: ImageSettings) -> tuple[torch.Tensor, tuple[int, int]]:
    """RGB image -> ``pixel_values`` [1, 3, S, S] and the original (height, width)."""
    pixel_values, sizes = preprocess_images(image, settings)
    return pixel_values, (int(sizes[0, 0]), int(sizes[0, 1]))


def _too_large(err: ImageTooLargeError, max_pixels: int) -> ApiError:
    if err.size is not None:
        found = f"is {err.size[0]}x{err.size[1]} = {err.size[0] * err.size[1]:,} pixels"
    else:  # a header beyond PIL's own limit: only the pixel count is known
        found = f"has {err.pixels:,} pixels" if err.pixels is not None else "has too many pixels"
    return ApiError(
        413, "image_too_large", f"image: the image {found}; this server accepts at most {max_pixels:,}", field="image"
    )


def _short(err: Exception) -> str:
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__
