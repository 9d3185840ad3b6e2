"""sam3lite: fast, practical SAM3-LiteText (text- and box-promptable instance segmentation)."""

from .checkpoint import CheckpointError, load
from .config import (
    ClipTextConfig,
    Sam3LiteTextConfig,
    Sam3LiteTextDETRDecoderConfig,
    Sam3LiteTextDETREncoderConfig,
    Sam3LiteTextGeometryEncoderConfig,
    Sam3LiteTextMaskDecoderConfig,
    Sam3LiteTextTextConfig,
    Sam3VisionConfig,
    Sam3ViTConfig,
)
from .model import Sam3LiteTextModel, Sam3LiteTextOutput, TextFeatures
from .text import Sam3LiteTextTextModel
from .variants import VARIANTS

__version__ = "0.1.0"

__all__ = [
    "VARIANTS",
    "CheckpointError",
    "ClipTextConfig",
    "Sam3LiteTextConfig",
    "Sam3LiteTextDETRDecoderConfig",
    "Sam3LiteTextDETREncoderConfig",
    "Sam3LiteTextGeometryEncoderConfig",
    "Sam3LiteTextMaskDecoderConfig",
    "Sam3LiteTextModel",
    "Sam3LiteTextOutput",
    "Sam3LiteTextTextConfig",
    "Sam3LiteTextTextModel",
    "Sam3VisionConfig",
    "Sam3ViTConfig",
    "TextFeatures",
    "load",
]
