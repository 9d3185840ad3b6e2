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
from .images import ImageSettings, load_image, preprocess_images
from .model import Sam3LiteTextModel, Sam3LiteTextOutput, TextFeatures
from .predictor import Predictor, PromptResult
from .processor import BatchInputs, Processor
from .rle import masks_to_rle, rle_to_masks
from .text import Sam3LiteTextTextModel
from .tokenizer import Tokenizer
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
    "Predictor",
    "PromptResult",
    "Processor",
    "BatchInputs",
    "ImageSettings",
    "Tokenizer",
    "load_image",
    "masks_to_rle",
    "preprocess_images",
    "rle_to_masks",
]
