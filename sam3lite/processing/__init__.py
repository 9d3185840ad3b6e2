"""User inputs to tensors and model outputs back to results.

- ``images``: decoding (EXIF, any PIL mode, numpy/torch) and resizing/normalising to ``pixel_values``;
- ``tokenizer``: CLIP BPE on ``tokenizers``; ``processor``: the transformers-style ``Processor``;
- ``postprocess``: scores, boxes and masks at the image size; ``rle``: COCO RLE.

Depends on nothing in sam3lite but ``runtime``; ``predictor`` and the feature packages build on it.
"""

from .images import ImageInput, ImageSettings, load_image, preprocess_images, upright_rgb
from .processor import DEFAULT_TEXT, BatchInputs, Processor, prepare_boxes
from .rle import masks_to_rle, rle_to_masks
from .tokenizer import Tokenizer

__all__ = [
    "DEFAULT_TEXT",
    "BatchInputs",
    "ImageInput",
    "ImageSettings",
    "Processor",
    "Tokenizer",
    "load_image",
    "masks_to_rle",
    "preprocess_images",
    "prepare_boxes",
    "rle_to_masks",
    "upright_rgb",
]
