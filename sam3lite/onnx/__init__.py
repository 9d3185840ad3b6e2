"""Running an ONNX export without PyTorch: ``OnnxPredictor`` (``set_image`` / ``predict``).

Imports only numpy, Pillow, tokenizers, pycocotools and onnxruntime (through ``sam3lite.portable``);
``import sam3lite.onnx`` never imports torch. Exports come from ``sam3lite export onnx`` (docs/export.md).
"""

from ..portable.manifest import Manifest, ManifestError
from ..portable.results import PromptResult
from .predictor import OnnxPredictor

__all__ = ["Manifest", "ManifestError", "OnnxPredictor", "PromptResult"]
