"""``OnnxPredictor``: ``sam3lite.Predictor``'s API on an ONNX export, without PyTorch.

    from sam3lite.onnx import OnnxPredictor
    predictor = OnnxPredictor("s0-onnx/")            # from: sam3lite export onnx --model s0 --out s0-onnx
    predictor.set_image("photo.jpg")
    ears, dogs = predictor.predict(text=["ear", "dog"])

Imports numpy, Pillow, tokenizers, pycocotools and onnxruntime only: tokenizing, image
preprocessing, box conversion and post-processing are the numpy code of ``sam3lite.portable``,
which the PyTorch path shares. Results are ``PromptResult``s holding numpy arrays.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..portable.boxes import BOX_PAD, normalize_boxes
from ..portable.images import ImageSettings, load_image, normalize, resize_rgb, to_rgb_array
from ..portable.manifest import TEXT_MODES, Manifest, ManifestError
from ..portable.postprocess import instances
from ..portable.prompts import check_unit, prompt_list
from ..portable.results import PromptResult
from ..portable.tokenizer import encode_batch, pad_id_for, truncation_warning

Box = Sequence[float]


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("OnnxPredictor needs onnxruntime: pip install sam3lite[onnx]") from err
    return onnxruntime


class OnnxPredictor:
    """Caches one image's features and answers text and/or box prompts against them, in ONNX Runtime.

    Args:
        directory: an export from ``sam3lite export onnx`` (``sam3lite_onnx.json`` and the graphs).
        providers: ONNX Runtime execution providers, e.g. ``["CUDAExecutionProvider",
            "CPUExecutionProvider"]``; default: ONNX Runtime's own order of what is installed.
        text_cache_size: number of prompts whose text features are kept (0 disables the cache).
        session_options: an ``onnxruntime.SessionOptions`` for all three sessions (threads, ...).
            Default: ONNX Runtime's, but without its CPU memory arena. At full size the arena kept
            growing past 15 GB (the ViT's global attention makes 1.7 GB tensors, and the arena grows in
            powers of two and never shrinks) and was OOM-killed on a 24 GB machine; without it the
            peak was 8.2 GB (BENCHMARKS.md).
    """

    def __init__(
        self,
        directory: str | Path,
        providers: Sequence[Any] | None = None,
        text_cache_size: int = 1024,
        session_options: Any = None,
    ) -> None:
        ort = _onnxruntime()
        self.directory = Path(directory)
        self.manifest = Manifest.read(self.directory)
        text = self.manifest.text
        self.text_mode = text.get("text_mode", "transformers")
        if self.text_mode not in TEXT_MODES:
            raise ManifestError(f"{self.directory}: text_mode {self.text_mode!r} is not supported by this runtime")
        if text.get("pad_id") != pad_id_for(self.text_mode):
            raise ManifestError(
                f"{self.directory}: pad_id {text.get('pad_id')!r} does not match text mode {self.text_mode!r} "
                f"(expected {pad_id_for(self.text_mode)})"
            )
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(self.directory / text["tokenizer"]))
        image = self.manifest.image
        self.image_settings = ImageSettings(
            size=(int(image["size"][0]), int(image["size"][1])),
            image_mean=tuple(image["image_mean"]),
            image_std=tuple(image["image_std"]),
            rescale_factor=float(image["rescale_factor"]),
        )
        self.providers = list(providers) if providers is not None else ort.get_available_providers()
        if session_options is None:
            session_options = ort.SessionOptions()
            session_options.enable_cpu_mem_arena = False
        self._sessions = {
            name: ort.InferenceSession(
                str(self.directory / graph.file), sess_options=session_options, providers=self.providers
            )
            for name, graph in self.manifest.graphs.items()
        }
        self._input_types = {
            name: {t.name: np.dtype(t.dtype) for t in graph.inputs} for name, graph in self.manifest.graphs.items()
        }
        self._text_cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.text_cache_size = text_cache_size
        self._features: list[np.ndarray] | None = None
        self._image_size: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.directory)!r}, providers={self.providers})"

    # ------------------------------------------------------------------------------------------
    # Image
    # ------------------------------------------------------------------------------------------

    def set_image(self, image: Any) -> None:
        """Encode one image (file path, PIL image, numpy HWC / HW) and keep its features."""
        if isinstance(image, (list, tuple)):
            raise ValueError("set_image takes one image; call it once per image")
        if isinstance(image, str) or hasattr(image, "__fspath__"):
            image = load_image(image)
        rgb = to_rgb_array(image)
        pixels = normalize(resize_rgb(rgb, self.image_settings.size), self.image_settings)[None]
        self.set_pixel_values(pixels, (int(rgb.shape[0]), int(rgb.shape[1])))

    def set_pixel_values(self, pixel_values: np.ndarray, original_size: tuple[int, int]) -> None:
        """Encode an already preprocessed image [1, 3, S, S] float32 of original (height, width)."""
        pixel_values = np.asarray(pixel_values)
        expected = (1, 3, *self.image_settings.size)
        if pixel_values.shape != expected:
            raise ValueError(f"pixel_values must be {list(expected)}, got {list(pixel_values.shape)}")
        self._features = self._run("image_encoder", pixel_values=pixel_values)
        self._image_size = (int(original_size[0]), int(original_size[1]))

    def set_features(self, features: Sequence[np.ndarray], original_size: tuple[int, int]) -> None:
        """Use image features computed elsewhere: the image encoder's outputs for one image."""
        self._features = [np.asarray(f) for f in features]
        self._image_size = (int(original_size[0]), int(original_size[1]))

    def encode_images(self, pixel_values: np.ndarray) -> list[list[np.ndarray]]:
        """A batch of preprocessed images [B, 3, S, S] -> per image its features (for ``set_features``)."""
        levels = self._run("image_encoder", pixel_values=np.asarray(pixel_values))
        return [[level[i : i + 1] for level in levels] for i in range(levels[0].shape[0])]

    def reset_image(self) -> None:
        self._features = None
        self._image_size = None

    @property
    def image_features(self) -> dict[str, np.ndarray]:
        """The current image's image-encoder outputs by name: ``fpn_0``..``fpn_2`` (what the heads read)
        and, for an export of a model with SAM3's tracker, ``vit_output`` [1, h*w, C]."""
        if self._features is None:
            raise RuntimeError("no image set: call set_image(image) first")
        names = [t.name for t in self.manifest.graphs["image_encoder"].outputs]
        return dict(zip(names, self._features, strict=True))

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the current image."""
        if self._image_size is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._image_size

    # ------------------------------------------------------------------------------------------
    # Prompts
    # ------------------------------------------------------------------------------------------

    def predict(
        self,
        text: str | Sequence[str] | None = None,
        boxes: Sequence[Box] | None = None,
        box_labels: Sequence[int] | None = None,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
    ) -> PromptResult | list[PromptResult]:
        """Find every instance of each prompt in the current image (as ``sam3lite.Predictor.predict``).

        Args:
            text: one noun phrase, or a list of them (one result each).
            boxes: exemplar boxes, pixel xyxy, shared by every text prompt; alone, they form one
                prompt ("visual").
            box_labels: 1 (positive, default) or 0 (negative) per box.
            threshold: keep instances with score > threshold.
            mask_threshold: binarize mask probabilities at this value.

        Returns:
            A ``PromptResult`` (numpy arrays) for a single prompt (``text`` a string or None), else a
            list in the order of ``text``.
        """
        if self._features is None:
            raise RuntimeError("no image set: call set_image(image) first")
        check_unit("threshold", threshold)
        check_unit("mask_threshold", mask_threshold)
        single = text is None or isinstance(text, str)
        prompts = prompt_list(text, boxes)
        box_inputs = self._box_inputs(boxes, box_labels)
        # One prompt per heads pass: the heads are compute-bound on a CPU, and one at a time keeps the
        # [P, Q, 4h, 4w] mask output small.
        results = [self._predict_one(prompt, box_inputs, threshold, mask_threshold) for prompt in prompts]
        return results[0] if single else results

    def predict_raw(
        self,
        text: str | Sequence[str] | None = None,
        boxes: Sequence[Box] | None = None,
        box_labels: Sequence[int] | None = None,
    ) -> dict[str, np.ndarray]:
        """The heads' outputs for P prompts on the current image, before post-processing (one pass).

        Returns ``pred_logits`` [P, Q], ``pred_boxes`` [P, Q, 4] (normalized xyxy),
        ``presence_logits`` [P, 1], ``pred_masks`` [P, Q, 4h, 4w] and ``semantic_seg`` [P, 1, 4h, 4w],
        as the PyTorch model's forward gives them.
        """
        if self._features is None:
            raise RuntimeError("no image set: call set_image(image) first")
        prompts = prompt_list(text, boxes)
        box_inputs = self._box_inputs(boxes, box_labels)
        return self._heads(prompts, box_inputs)

    def _heads(self, prompts: list[str], box_inputs: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        tokens, mask = self.text_features(prompts)
        levels = self._features
        count = len(prompts)
        outputs = self._run(
            "heads",
            fpn_0=levels[0],
            fpn_1=levels[1],
            fpn_2=levels[2],
            text_tokens=tokens,
            text_mask=mask,
            input_boxes=np.repeat(box_inputs[0], count, axis=0),
            input_boxes_labels=np.repeat(box_inputs[1], count, axis=0),
        )
        return dict(zip((t.name for t in self.manifest.graphs["heads"].outputs), outputs, strict=True))

    def _predict_one(
        self, prompt: str, box_inputs: tuple[np.ndarray, np.ndarray], threshold: float, mask_threshold: float
    ) -> PromptResult:
        out = self._heads([prompt], box_inputs)
        logits, pred_boxes = out["pred_logits"], out["pred_boxes"]
        presence, mask_logits = out["presence_logits"], out["pred_masks"]
        masks, boxes, scores = instances(
            logits[0].astype(np.float32),
            pred_boxes[0].astype(np.float32),
            presence[0].astype(np.float32),
            mask_logits[0].astype(np.float32),
            self.image_size,
            threshold,
            mask_threshold,
        )
        return PromptResult(prompt=prompt, masks=masks, boxes=boxes, scores=scores)

    def text_features(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Projected text tokens [P, T, C] and their mask [P, T] for ``prompts``, cached per prompt."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            text = self.manifest.text
            ids, mask, truncated = encode_batch(missing, text["context_length"], self.text_mode, self._tokenizer)
            if truncated:
                warnings.warn(truncation_warning(missing, truncated, text["context_length"]), stacklevel=3)
            tokens, token_mask = self._run("text_encoder", input_ids=ids, attention_mask=mask)
            for i, prompt in enumerate(missing):
                self._text_cache[prompt] = (tokens[i], token_mask[i])
        entries = []
        for prompt in prompts:
            self._text_cache.move_to_end(prompt)
            entries.append(self._text_cache[prompt])
        while len(self._text_cache) > max(self.text_cache_size, 0):
            self._text_cache.popitem(last=False)
        return np.stack([e[0] for e in entries]), np.stack([e[1] for e in entries])

    def _box_inputs(self, boxes: Sequence[Box] | None, labels: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
        """[1, N, 4] normalized cxcywh and [1, N] labels; one padding row when there are no boxes."""
        if boxes is None:
            if labels is not None:
                raise ValueError("box_labels were given without boxes")
            return np.zeros((1, 1, 4), np.float32), np.full((1, 1), BOX_PAD, np.int64)
        if len(boxes) == 0:
            raise ValueError("boxes is an empty list; pass None for text-only prompts")
        cxcywh, out_labels = normalize_boxes(boxes, labels, self.image_size)
        return cxcywh[None], out_labels[None]

    def _run(self, graph: str, **feed: np.ndarray) -> list[np.ndarray]:
        types = self._input_types[graph]
        inputs = {name: np.ascontiguousarray(value, dtype=types[name]) for name, value in feed.items()}
        return self._sessions[graph].run(None, inputs)
