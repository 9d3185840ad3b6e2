"""sam3lite: fast, practical SAM3-LiteText (text- and box-promptable instance segmentation).

The public names below are imported on first use (PEP 562), so that ``import sam3lite.onnx`` (the
ONNX runtime) does not import torch; ``from sam3lite import Predictor`` and ``sam3lite.load`` work as
usual.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "VARIANTS": "sam3lite.checkpoints",
    "CheckpointError": "sam3lite.checkpoints",
    "Sam3LiteTextModel": "sam3lite.checkpoints",
    "load": "sam3lite.checkpoints",
    "ClipTextConfig": "sam3lite.modeling.config",
    "Sam3LiteTextConfig": "sam3lite.modeling.config",
    "Sam3LiteTextDETRDecoderConfig": "sam3lite.modeling.config",
    "Sam3LiteTextDETREncoderConfig": "sam3lite.modeling.config",
    "Sam3LiteTextGeometryEncoderConfig": "sam3lite.modeling.config",
    "Sam3LiteTextMaskDecoderConfig": "sam3lite.modeling.config",
    "Sam3LiteTextTextConfig": "sam3lite.modeling.config",
    "Sam3VisionConfig": "sam3lite.modeling.config",
    "Sam3ViTConfig": "sam3lite.modeling.config",
    "Sam3Detector": "sam3lite.modeling.detector",
    "Sam3LiteTextOutput": "sam3lite.modeling.detector",
    "TextFeatures": "sam3lite.modeling.detector",
    "Sam3LiteTextTextModel": "sam3lite.modeling.text",
    "ObjectResult": "sam3lite.objects",
    "Predictor": "sam3lite.predictor",
    "PromptResult": "sam3lite.predictor",
    "ImageSettings": "sam3lite.processing.images",
    "load_image": "sam3lite.processing.images",
    "preprocess_images": "sam3lite.processing.images",
    "BatchInputs": "sam3lite.processing.processor",
    "Processor": "sam3lite.processing.processor",
    "masks_to_rle": "sam3lite.processing.rle",
    "rle_to_masks": "sam3lite.processing.rle",
    "Tokenizer": "sam3lite.processing.tokenizer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sam3lite' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
