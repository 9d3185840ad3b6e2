"""sam3lite: fast, practical SAM3-LiteText (text- and box-promptable instance segmentation)."""

from .checkpoints import VARIANTS, CheckpointError, Sam3LiteTextModel, load
from .modeling.config import (
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
from .modeling.detector import Sam3Detector, Sam3LiteTextOutput, TextFeatures
from .modeling.text import Sam3LiteTextTextModel
from .objects import ObjectResult
from .predictor import Predictor, PromptResult
from .processing.images import ImageSettings, load_image, preprocess_images
from .processing.processor import BatchInputs, Processor
from .processing.rle import masks_to_rle, rle_to_masks
from .processing.tokenizer import Tokenizer

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
    "Sam3Detector",
    "Sam3LiteTextModel",
    "Sam3LiteTextOutput",
    "Sam3LiteTextTextConfig",
    "Sam3LiteTextTextModel",
    "Sam3VisionConfig",
    "Sam3ViTConfig",
    "TextFeatures",
    "load",
    "ObjectResult",
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
