"""``sam3lite_onnx.json``: what an ONNX export directory holds and how to feed its graphs.

Written by ``sam3lite.export.to_onnx``, read by ``sam3lite.onnx.OnnxPredictor`` (and by anyone
running the graphs in another language). Plain JSON:

- ``graphs``: per graph (``image_encoder``, ``text_encoder``, ``heads``) its file and the name,
  shape (ints, or names of dynamic axes) and element type of each input and output;
- ``image``: input size, mean / std and how to resize (RGB, straight to S x S, bilinear with
  antialias on uint8, then ``(x - mean / rescale) / (std / rescale)``);
- ``text``: the tokenizer file, context length, BOS / EOS / pad ids and the text mode;
- ``boxes``, ``outputs``: prompt and score conventions; ``dtype``, ``quantize``, ``opset``, the
  model's ``config``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "sam3lite_onnx.json"
FORMAT = "sam3lite-onnx"
FORMAT_VERSION = 1
GRAPHS = ("image_encoder", "text_encoder", "heads")
TEXT_MODES = ("transformers", "original")  # text modes this runtime implements (sam3lite.runtime.TEXT_MODES)

SCORE_SEMANTICS = (
    "score = sigmoid(pred_logits) * sigmoid(presence_logits); an instance is kept when score > threshold "
    "(query order, no NMS); pred_boxes are normalized xyxy (multiply by W, H, W, H); masks are "
    "sigmoid(pred_masks) resized bilinearly (align_corners=False) to the image, then > mask_threshold"
)
BOX_SEMANTICS = (
    "input_boxes [P, N, 4] normalized (cx, cy, w, h); input_boxes_labels [P, N]: 1 positive, 0 negative, "
    "-10 padding; a prompt whose boxes are all padding is a text-only prompt (pass one padding row)"
)


class ManifestError(ValueError):
    """An export directory that is missing files or was written by an incompatible version."""


@dataclass
class Tensor:
    """One graph input or output: ``shape`` holds ints and dynamic axis names; ``dtype`` a numpy name."""

    name: str
    shape: list[int | str]
    dtype: str


@dataclass
class Graph:
    file: str
    inputs: list[Tensor]
    outputs: list[Tensor]


@dataclass
class Manifest:
    graphs: dict[str, Graph]
    image: dict[str, Any]
    text: dict[str, Any]
    dtype: str = "float32"
    quantize: str | None = None
    opset: int = 18
    config: dict[str, Any] = field(default_factory=dict)
    boxes: str = BOX_SEMANTICS
    outputs: str = SCORE_SEMANTICS
    accuracy: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    version: int = FORMAT_VERSION
    exporter: dict[str, str] = field(default_factory=dict)

    def write(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        """Read and check ``directory/sam3lite_onnx.json``; every graph file must exist.

        Raises:
            ManifestError: no manifest, not ours, a newer format version, or a graph file missing.
        """
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        if not path.is_file():
            hint = "export one with: sam3lite export onnx --model M --out DIR"
            raise ManifestError(f"{directory}: no {MANIFEST_NAME}; not a sam3lite ONNX export ({hint})")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ManifestError(f"{path}: not valid JSON ({err})") from err
        if data.get("format") != FORMAT:
            raise ManifestError(f"{path}: format is {data.get('format')!r}, expected {FORMAT!r}")
        if int(data.get("version", 0)) > FORMAT_VERSION:
            raise ManifestError(f"{path}: format version {data['version']} is newer than this sam3lite reads")
        try:
            graphs = {
                name: Graph(
                    file=g["file"],
                    inputs=[Tensor(**t) for t in g["inputs"]],
                    outputs=[Tensor(**t) for t in g["outputs"]],
                )
                for name, g in data["graphs"].items()
            }
            manifest = cls(**{**data, "graphs": graphs})
        except (KeyError, TypeError) as err:
            raise ManifestError(f"{path}: malformed manifest ({err})") from err
        missing = [name for name in GRAPHS if name not in graphs or not (directory / graphs[name].file).is_file()]
        if missing:
            raise ManifestError(f"{directory}: graph file(s) missing for {', '.join(missing)}")
        return manifest
