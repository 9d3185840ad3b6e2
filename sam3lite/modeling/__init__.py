"""The networks: every ``nn.Module`` of SAM3 / SAM3-LiteText and their typed configs.

One module per part, attribute names equal to checkpoint keys:

- ``vision``: ViT image encoder + FPN neck;
- ``text``: MobileCLIP student text encoder (RepMixer folding); ``clip_text``: SAM3's CLIP text tower;
- ``geometry``: box-prompt encoder; ``detr_encoder``, ``detr_decoder``, ``scoring``, ``mask_decoder``;
- ``detector``: the assembled detector (``Sam3Detector``);
- ``common``, ``position``: shared layers and position encodings; ``config``: typed configs;
- ``quantize``: the opt-in int8 linear layers of the image encoder.

Nothing here imports loading, preprocessing, CLI or service code (``sam3lite.runtime`` at most).
"""

from .config import (
    ClipTextConfig,
    DETRDecoderConfig,
    DETREncoderConfig,
    GeometryEncoderConfig,
    MaskDecoderConfig,
    Sam3LiteTextConfig,
    TextConfig,
    VisionConfig,
    ViTConfig,
)
from .detector import Detections, Sam3Detector, Sam3LiteTextOutput, TextFeatures
from .text import MobileClipTextEncoder, reparameterize_model
from .vision import VisionEncoder, VisionFeatures

__all__ = [
    "ClipTextConfig",
    "DETRDecoderConfig",
    "DETREncoderConfig",
    "Detections",
    "GeometryEncoderConfig",
    "MaskDecoderConfig",
    "MobileClipTextEncoder",
    "Sam3Detector",
    "Sam3LiteTextConfig",
    "Sam3LiteTextOutput",
    "TextConfig",
    "TextFeatures",
    "ViTConfig",
    "VisionConfig",
    "VisionEncoder",
    "VisionFeatures",
    "reparameterize_model",
]
