"""Decoding and preprocessing in DataLoader workers, ahead of the model.

A file that cannot be read does not stop the loader: its sample carries the error message instead
of pixels, and the run logs it and goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..processing.images import ImageSettings, load_image, preprocess_images
from .inputs import ImageItem


@dataclass
class Sample:
    """One decoded image (or why it could not be decoded).

    position: index into the dataset's item list.
    size: original (height, width).
    rgb: uint8 [H, W, 3] original pixels, kept only for overlays.
    """

    position: int
    size: tuple[int, int] = (0, 0)
    pixels: torch.Tensor | None = None
    rgb: torch.Tensor | None = None
    error: str | None = None


@dataclass
class Batch:
    """Decoded samples; ``pixel_values`` [B_ok, 3, S, S] stacks those without an error, in order."""

    samples: list[Sample]
    pixel_values: torch.Tensor | None

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None]

    def pin_memory(self) -> Batch:
        # DataLoader(pin_memory=True) calls this on custom batch types.
        if self.pixel_values is not None:
            self.pixel_values = self.pixel_values.pin_memory()
        return self


class ImageDataset(Dataset):
    """Items -> ``Sample``: decode (EXIF-upright RGB), resize and normalize to the model's input."""

    def __init__(self, items: Sequence[ImageItem], settings: ImageSettings, keep_rgb: bool) -> None:
        self.items = list(items)
        self.settings = settings
        self.keep_rgb = keep_rgb

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> Sample:
        try:
            image = load_image(self.items[position].path)
            pixels, sizes = preprocess_images(image, self.settings)
        except Exception as err:  # any decode failure is this image's problem only
            return Sample(position, error=_describe(err))
        rgb = torch.from_numpy(np.asarray(image).copy()) if self.keep_rgb else None
        return Sample(position, (int(sizes[0, 0]), int(sizes[0, 1])), pixels[0], rgb)


def _describe(err: BaseException) -> str:
    if isinstance(err, (FileNotFoundError, ValueError)):
        return str(err)  # load_image's messages are user-ready and name the file
    return f"{type(err).__name__}: {err}"


def collate(samples: list[Sample]) -> Batch:
    """Stack the readable samples' pixels (in the worker, so one shared-memory tensor crosses over)."""
    good = [s.pixels for s in samples if s.error is None]
    pixel_values = torch.stack(good) if good else None
    for sample in samples:
        sample.pixels = None  # only the stacked copy travels
    return Batch(samples, pixel_values)


def make_loader(dataset: ImageDataset, batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """Batches in dataset order; ``workers`` = 0 decodes in this process."""
    # A single batch gains nothing from a worker process (it would only add its start-up time).
    workers = min(workers, max(0, (len(dataset) - 1) // max(1, batch_size)))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers else None,
    )
