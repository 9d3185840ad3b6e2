"""``Predictor``: encode an image once, answer many prompts against it.

    predictor = Predictor(sam3lite.load("s0"))
    predictor.set_image("photo.jpg")
    ears, dogs = predictor.predict(text=["ear", "dog"])   # batched through the heads

Text features are cached per prompt string (bounded LRU): short noun phrases repeat across images.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from .modeling.detector import NO_TRACKER_MESSAGE, Sam3Detector, TextFeatures
from .modeling.tracker.model import TrackerImageFeatures
from .modeling.vision import VisionFeatures
from .objects import ObjectPrompt, ObjectResult, object_prompts, upscale_masks
from .portable import results as portable_results
from .portable.prompts import check_unit, prompt_list
from .processing.images import ImageInput, ImageSettings, load_image, preprocess_images
from .processing.postprocess import binarize_masks
from .processing.processor import Processor, prepare_boxes

Box = Sequence[float]


class PromptResult(portable_results.PromptResult):
    """Every instance found for one prompt, as torch tensors (see ``sam3lite.portable.results``).

    masks: bool [N, H, W] at the original image size.
    boxes: float32 [N, 4] xyxy in pixels.
    scores: float32 [N] = sigmoid(logit) * sigmoid(presence), in decreasing query order of the model.
    prompt: the text prompt ("visual" for boxes only).

    ``to_dict(kind="torch")`` keeps the tensors; ``"numpy"`` (the default) converts them.
    """

    KINDS: ClassVar[tuple[str, ...]] = ("numpy", "torch")

    def _convert(self, array: Any, kind: str) -> Any:
        return array if kind == "torch" else super()._convert(array, kind)


class _LRU(OrderedDict):
    """Bounded mapping: the least recently used entries go first."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def get_fresh(self, key: str) -> Any:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: str, value: Any) -> None:
        if self.capacity <= 0:
            return
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


class Predictor:
    """Caches one image's features and answers text and/or box prompts against them.

    Args:
        model: a loaded ``Sam3LiteTextModel`` (its device, dtype and text mode are used).
        processor: image/text/box preprocessing; default ``Processor`` sized to the model, in its text mode.
        text_cache_size: number of prompts whose text features are kept (0 disables the cache).
        prompt_batch_size: prompts run through the heads together. Default: 16 on a GPU, where
            batching fills the device; 1 on the CPU, where the heads are compute-bound and a batch
            of 8 was only 2.5% faster than 8 single passes at full size while it raised peak memory
            by about 400 MB.
    """

    def __init__(
        self,
        model: Sam3Detector,
        processor: Processor | None = None,
        text_cache_size: int = 1024,
        prompt_batch_size: int | None = None,
    ) -> None:
        if prompt_batch_size is None:
            prompt_batch_size = 1 if model.device.type == "cpu" else 16
        if prompt_batch_size < 1:
            raise ValueError(f"prompt_batch_size must be >= 1, got {prompt_batch_size}")
        self.model = model.eval()
        config = model.config
        self.processor = processor or Processor(
            image_size=config.image_size, context_length=config.text_context_length, text_mode=config.text_mode
        )
        if self.processor.text_mode != config.text_mode:
            raise ValueError(
                f"processor text_mode={self.processor.text_mode!r} does not match the model's {config.text_mode!r}; "
                "build the Processor with the model's text_mode (or leave processor=None)"
            )
        self.prompt_batch_size = prompt_batch_size
        self._text_cache = _LRU(text_cache_size)
        self._vision: VisionFeatures | None = None
        self._image_size: tuple[int, int] | None = None
        self._tracker_features: TrackerImageFeatures | None = None

    # ------------------------------------------------------------------------------------------
    # Image
    # ------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def set_image(self, image: ImageInput) -> None:
        """Encode one image (path, PIL, numpy HWC, torch CHW) and keep its features."""
        if isinstance(image, (list, tuple)):
            raise ValueError("set_image takes one image; call it once per image")
        if isinstance(image, str) or hasattr(image, "__fspath__"):
            image = load_image(image)
        pixel_values, sizes = preprocess_images(image, self.processor.image_settings)
        self.set_pixel_values(pixel_values, (int(sizes[0, 0]), int(sizes[0, 1])))

    @torch.inference_mode()
    def set_pixel_values(self, pixel_values: torch.Tensor, original_size: tuple[int, int]) -> None:
        """Encode an already preprocessed image [1, 3, S, S] of original (height, width)."""
        if pixel_values.ndim != 4 or pixel_values.shape[0] != 1:
            raise ValueError(f"pixel_values must be [1, 3, S, S], got {tuple(pixel_values.shape)}")
        pixels = pixel_values.to(device=self.model.device, dtype=self.model.dtype)
        self.set_features(self.model.get_vision_features(pixels), original_size)

    def set_features(self, vision: VisionFeatures, original_size: tuple[int, int]) -> None:
        """Use image features computed elsewhere (e.g. a batched image encoder pass)."""
        self._vision = vision
        self._image_size = original_size
        self._tracker_features = None  # the tracker neck runs on the first object prompt

    def reset_image(self) -> None:
        self._vision = None
        self._image_size = None
        self._tracker_features = None

    @property
    def image_settings(self) -> ImageSettings:
        """Input size and normalisation of the images this predictor takes (the processor's)."""
        return self.processor.image_settings

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the current image."""
        if self._image_size is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._image_size

    # ------------------------------------------------------------------------------------------
    # Prompts
    # ------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def predict(
        self,
        text: str | Sequence[str] | None = None,
        boxes: Sequence[Box] | None = None,
        box_labels: Sequence[int] | None = None,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
    ) -> PromptResult | list[PromptResult]:
        """Find every instance of each prompt in the current image.

        Args:
            text: one noun phrase, or a list of them (one result each, run batched).
            boxes: exemplar boxes, pixel xyxy, shared by every text prompt; alone, they form one
                prompt ("visual").
            box_labels: 1 (positive, default) or 0 (negative) per box.
            threshold: keep instances with score > threshold.
            mask_threshold: binarize mask probabilities at this value.

        Returns:
            A ``PromptResult`` for a single prompt (``text`` a string or None), else a list in
            the order of ``text``.
        """
        if self._vision is None:
            raise RuntimeError("no image set: call set_image(image) first")
        check_unit("threshold", threshold)
        check_unit("mask_threshold", mask_threshold)
        single = text is None or isinstance(text, str)
        prompts = prompt_list(text, boxes)
        box_inputs = self._box_inputs(boxes, box_labels)
        results: list[PromptResult] = []
        for start in range(0, len(prompts), self.prompt_batch_size):
            chunk = prompts[start : start + self.prompt_batch_size]
            results.extend(self._predict_chunk(chunk, box_inputs, threshold, mask_threshold))
        return results[0] if single else results

    def _predict_chunk(
        self,
        prompts: list[str],
        box_inputs: tuple[torch.Tensor, torch.Tensor] | None,
        threshold: float,
        mask_threshold: float,
    ) -> list[PromptResult]:
        text = self.text_features(prompts)
        kwargs: dict[str, Any] = {}
        if box_inputs is not None:
            kwargs = {"input_boxes": box_inputs[0], "input_boxes_labels": box_inputs[1]}
        # Masks are decoded and resized only for the kept queries.
        found = self.model.detect(self._vision, text, threshold=threshold, **kwargs)
        height, width = self.image_size
        scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=self.model.device)
        return [
            PromptResult(
                prompt=prompt,
                masks=binarize_masks(item.mask_logits.float().sigmoid(), self.image_size, mask_threshold, torch.bool),
                boxes=item.boxes.float() * scale,
                scores=item.scores.float(),
            )
            for prompt, item in zip(prompts, found, strict=True)
        ]

    @torch.inference_mode()
    def predict_object(
        self,
        points: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        multimask_output: bool = True,
    ) -> ObjectResult | list[ObjectResult]:
        """Segment *this* object: clicks, an object box and/or a rough mask, through SAM3's tracker head.

        The image encoding of ``set_image`` is reused (the tracker reads the same ViT output through its
        own neck), so text prompts and any number of clicks on one image cost one image encoding.

        Args:
            points: [N, 2] pixel (x, y) clicks on the original image; [B, N, 2] (or a list of B [N_i, 2])
                for B objects at once.
            point_labels: [N] (or [B, N]): 1 on the object, 0 background.
            box: [4] pixel (x0, y0, x1, y1) around the object ([B, 4] for B objects). Not to be confused
                with ``predict(boxes=...)``, whose exemplar boxes mean "find everything like this".
            mask_input: [h, w] low-res mask logits from an earlier result (``low_res_logits[k]``) to
                refine ([B, h, w] for B objects).
            multimask_output: 3 candidate masks (best for a single ambiguous click), else 1.

        Returns:
            An ``ObjectResult``, or a list of B for batched input.
        """
        if self._vision is None:
            raise RuntimeError("no image set: call set_image(image) first")
        if not self.model.has_tracker:
            raise ValueError(NO_TRACKER_MESSAGE)
        tracker = self.model.tracker_model
        prompts, batched = object_prompts(
            points, point_labels, box, mask_input, self.image_size, tracker.config.image_size,
            tracker.config.mask_input_size,
        )  # fmt: skip
        self.tracker_features()
        results: list[ObjectResult | None] = [None] * len(prompts)
        groups: dict[tuple[int, bool, bool], list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(prompt.signature, []).append(i)
        for indices in groups.values():  # one tracker pass per group of alike prompts
            answers = self._predict_objects([prompts[i] for i in indices], multimask_output)
            for i, result in zip(indices, answers, strict=True):
                results[i] = result
        return results if batched else results[0]  # type: ignore[return-value]

    @torch.inference_mode()
    def tracker_features(self) -> TrackerImageFeatures:
        """The current image's tracker features (the tracker neck on the ViT output of ``set_image``),
        computed on the first object prompt and kept with the image."""
        if self._vision is None:
            raise RuntimeError("no image set: call set_image(image) first")
        if self._tracker_features is None:
            self._tracker_features = self.model.get_tracker_features(self._vision)
        return self._tracker_features

    def _predict_objects(self, prompts: list[ObjectPrompt], multimask_output: bool) -> list[ObjectResult]:
        device, dtype = self.model.device, self.model.dtype
        first = prompts[0]

        def stack(name: str, kind: torch.dtype | None = None) -> torch.Tensor | None:
            if getattr(first, name) is None:
                return None
            return torch.stack([getattr(p, name) for p in prompts]).to(device=device, dtype=kind or dtype)

        out = self.model.tracker_model.predict_masks(
            self._tracker_features,
            points=stack("points"),
            labels=stack("labels", torch.long),
            boxes=stack("box"),
            mask_input=stack("mask_input"),
            multimask_output=multimask_output,
        )
        masks = upscale_masks(out.low_res_masks, self.image_size)
        return [
            ObjectResult(
                masks=masks[b],
                iou_scores=out.iou_scores[b].float(),
                object_score_logit=float(out.object_score_logits[b, 0]),
                low_res_logits=out.low_res_masks[b].float(),
            )
            for b in range(len(prompts))
        ]

    def text_features(self, prompts: Sequence[str]) -> TextFeatures:
        """Projected text features for ``prompts`` [P, T, C], from the cache where possible."""
        fresh: dict[str, tuple[torch.Tensor, ...]] = {}
        missing = [p for p in dict.fromkeys(prompts) if self._text_cache.get_fresh(p) is None]
        if missing:
            ids, mask = self.processor.tokenizer(missing)
            device = self.model.device
            feats = self.model.get_text_features(ids.to(device), mask.to(device))
            for i, prompt in enumerate(missing):
                fresh[prompt] = (feats.pooler_output[i], feats.last_hidden_state[i], feats.attention_mask[i])
                self._text_cache.put(prompt, fresh[prompt])
        entries = [fresh[p] if p in fresh else self._text_cache.get_fresh(p) for p in prompts]
        pooled, hidden, mask = (torch.stack(parts) for parts in zip(*entries, strict=True))
        return TextFeatures(pooler_output=pooled, last_hidden_state=hidden, attention_mask=mask)

    def _box_inputs(
        self, boxes: Sequence[Box] | None, labels: Sequence[int] | None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Pixel xyxy boxes -> normalized cxcywh [1, K, 4] and labels [1, K] on the model device."""
        if boxes is None:
            if labels is not None:
                raise ValueError("box_labels were given without boxes")
            return None
        sizes = torch.tensor([self.image_size])
        labels_in = None if labels is None else [list(labels)]
        norm_boxes, box_labels = prepare_boxes([list(boxes)], labels_in, sizes)
        device = self.model.device
        return norm_boxes.to(device), box_labels.to(device)
