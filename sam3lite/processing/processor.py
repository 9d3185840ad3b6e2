"""``Processor``: images, text and boxes -> model inputs; model outputs -> results. A drop-in for
transformers' ``Sam3Processor`` (same call, keys and post-processing), working offline.

Batch pairing: the call holds I images (or ``original_sizes``), T prompts and N box lists. Each of I, T
and N is either 1 or the batch size B, and a count of 1 is shared by the whole batch, so one image is
prompted with many texts without being copied: ``pixel_values`` stays [1, 3, H, W] next to
``input_ids`` [T, L], and the model encodes the image once. Box list j is normalized by the size of
image j (or of the single image).
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..portable.boxes import BOX_PAD, check_box
from ..portable.prompts import DEFAULT_TEXT
from .images import ImageInput, ImageSettings, preprocess_images
from .postprocess import (
    TargetSizes,
    post_process_instance_segmentation,
    post_process_object_detection,
    post_process_semantic_segmentation,
)
from .tokenizer import Tokenizer

logger = logging.getLogger(__name__)

PROCESSOR_CONFIG = "processor_config.json"
PREPROCESSOR_CONFIG = "preprocessor_config.json"
MODEL_CONFIG = "config.json"  # read for the text mode and the position-table length
CONTEXT_LENGTH = 32  # transformers' processor pads every prompt to 32 tokens
ORIGINAL_CONTEXT_LENGTH = 16  # the released LiteText files' position table (the ``ctx16`` files)
_REPO_ID = re.compile(r"(?:[\w-][\w.-]*/)?[\w-][\w.-]*")  # "org/name" or a legacy "name"

BoxesInput = Sequence[Sequence[Sequence[float]] | None] | torch.Tensor | np.ndarray
LabelsInput = Sequence[Sequence[int] | None] | torch.Tensor | np.ndarray


class BatchInputs(dict):
    """Model inputs: a dict of tensors with attribute access and ``.to()``, like ``BatchEncoding``.

    ``model(**inputs)`` passes every key; ``inputs.get("original_sizes")`` works as with the reference.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None, non_blocking: bool = False
    ) -> BatchInputs:
        """Copy with every tensor on ``device``; ``dtype`` applies to floating-point tensors only."""
        moved = {}
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                value = value.to(
                    device=device, dtype=dtype if value.is_floating_point() else None, non_blocking=non_blocking
                )
            moved[key] = value
        return BatchInputs(moved)


class Processor:
    """Prepares inputs for SAM3 / SAM3-LiteText and post-processes their outputs.

    Args:
        image_size: side (or (height, width)) of ``pixel_values``; 1008 for the released checkpoints.
        context_length: L, the padded token length: 32 by default; in ``original`` text mode it must be
            the checkpoint's position-table length (default 16, that of the released LiteText files).
        image_settings: full image settings (size, mean, std); overrides ``image_size`` when given.
        text_mode: ``"transformers"`` or ``"original"`` (see ``sam3lite.processing.tokenizer``); must
            match the model's ``text_mode``.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 1008,
        context_length: int | None = None,
        image_settings: ImageSettings | None = None,
        text_mode: str = "transformers",
    ) -> None:
        if image_settings is None:
            size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
            image_settings = ImageSettings(size=size)  # type: ignore[arg-type]
        self.image_settings = image_settings
        if context_length is None:
            context_length = ORIGINAL_CONTEXT_LENGTH if text_mode == "original" else CONTEXT_LENGTH
        self.tokenizer = Tokenizer(context_length, text_mode)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_size={self.image_settings.size}, context_length={self.context_length}, "
            f"text_mode={self.text_mode!r})"
        )

    @property
    def context_length(self) -> int:
        return self.tokenizer.context_length

    @property
    def text_mode(self) -> str:
        return self.tokenizer.text_mode

    # -----------------------------------------------------------------------------------------
    # Loading and saving
    # -----------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path_or_name: str | os.PathLike,
        *,
        context_length: int | None = None,
        text_mode: str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
    ) -> Processor:
        """Processor of a checkpoint directory or hub repo.

        Image settings come from ``processor_config.json`` (its ``image_processor`` entry) or
        ``preprocessor_config.json``; missing files mean the defaults. Tokenizer files are not needed: the
        CLIP vocabulary ships with sam3lite. For a hub name the two files are downloaded when the hub is
        reachable; offline, a cached copy or the defaults are used, without error.

        ``text_mode`` None takes the checkpoint's own (``config.json``, default ``"transformers"``); in
        ``original`` mode the context length is the checkpoint's position-table length.
        """
        local = Path(path_or_name)
        if local.is_dir():
            files = {name: local / name for name in (PROCESSOR_CONFIG, PREPROCESSOR_CONFIG, MODEL_CONFIG)}
            found = {name: path for name, path in files.items() if path.is_file()}
        elif local.exists() or not _REPO_ID.fullmatch(str(path_or_name)):
            raise FileNotFoundError(f"{path_or_name!s} is neither a checkpoint directory nor a hub repo id (org/name)")
        else:
            found = _hub_files(str(path_or_name), revision, cache_dir, local_files_only, token)
        settings: dict[str, Any] = {}
        if PREPROCESSOR_CONFIG in found:
            settings = _read_json(found[PREPROCESSOR_CONFIG])
        if PROCESSOR_CONFIG in found:
            # transformers >= 5 nests the image processor's settings in processor_config.json.
            settings = _read_json(found[PROCESSOR_CONFIG]).get("image_processor", settings)
        model = _detector_config(_read_json(found[MODEL_CONFIG])) if MODEL_CONFIG in found else {}
        text_mode = text_mode or model.get("text_mode", "transformers")
        if context_length is None and text_mode == "original":
            context_length = (model.get("text_config") or {}).get("max_position_embeddings", ORIGINAL_CONTEXT_LENGTH)
        return cls(
            context_length=context_length, image_settings=ImageSettings.from_hf_dict(settings), text_mode=text_mode
        )

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``processor_config.json`` and ``preprocessor_config.json`` in the transformers layout."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        image_config = self.image_settings.to_hf_dict()
        processor_config = {
            "image_processor": image_config,
            "point_pad_value": BOX_PAD,
            "processor_class": "Sam3Processor",
            "target_size": self.image_settings.size[0],
        }
        for name, content in ((PROCESSOR_CONFIG, processor_config), (PREPROCESSOR_CONFIG, image_config)):
            (directory / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")

    # -----------------------------------------------------------------------------------------
    # Inputs
    # -----------------------------------------------------------------------------------------

    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput] | None = None,
        text: str | Sequence[str | None] | None = None,
        input_boxes: BoxesInput | None = None,
        input_boxes_labels: LabelsInput | None = None,
        original_sizes: Sequence[Sequence[int]] | torch.Tensor | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchInputs:
        """Build model inputs.

        Args:
            images: one image or a batch (see ``sam3lite.processing.images``).
            text: a prompt or a list of prompts. ``None`` (or a ``None`` entry) next to boxes means "visual".
            input_boxes: per image a list of pixel xyxy boxes; [N, K, 4] nested lists, tensor or array.
            input_boxes_labels: per image a list of labels, 1 positive / 0 negative; default all 1.
            original_sizes: (height, width) per image, to place boxes when no images are given.
            return_tensors: "pt" (or None); tensors are always returned.

        Returns:
            ``BatchInputs`` with, when the inputs are present: ``pixel_values`` [I, 3, H, W] float32,
            ``original_sizes`` [I, 2] int64, ``input_ids`` and ``attention_mask`` [T, L] int64,
            ``input_boxes`` [N, K, 4] float32 normalized cxcywh and ``input_boxes_labels`` [N, K] int64
            (padding -10).
        """
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; sam3lite returns torch tensors")
        out = BatchInputs()
        if images is not None:
            out["pixel_values"], out["original_sizes"] = preprocess_images(images, self.image_settings)
        elif original_sizes is not None:
            out["original_sizes"] = _as_sizes(original_sizes)
        elif input_boxes is not None:
            raise ValueError("input_boxes need images or original_sizes to be normalized")
        if input_boxes is None and input_boxes_labels is not None:
            raise ValueError("input_boxes_labels were given without input_boxes")

        prompts = _resolve_text(text, input_boxes)
        if prompts is not None:
            out["input_ids"], out["attention_mask"] = self.tokenizer(prompts)
        if input_boxes is not None:
            out["input_boxes"], out["input_boxes_labels"] = prepare_boxes(
                input_boxes, input_boxes_labels, out["original_sizes"]
            )
        _check_batch(out)
        return out

    # -----------------------------------------------------------------------------------------
    # Outputs (thin wrappers, same signatures as Sam3Processor)
    # -----------------------------------------------------------------------------------------

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.3,
        mask_threshold: float = 0.5,
        target_sizes: TargetSizes | None = None,
        *,
        mask_dtype: torch.dtype = torch.long,
    ) -> list[dict[str, torch.Tensor]]:
        """See ``sam3lite.processing.postprocess.post_process_instance_segmentation``."""
        return post_process_instance_segmentation(
            outputs, threshold, mask_threshold, target_sizes, mask_dtype=mask_dtype
        )

    def post_process_object_detection(
        self, outputs: Any, threshold: float = 0.3, target_sizes: TargetSizes | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """See ``sam3lite.processing.postprocess.post_process_object_detection``."""
        return post_process_object_detection(outputs, threshold, target_sizes)

    def post_process_semantic_segmentation(
        self,
        outputs: Any,
        target_sizes: TargetSizes | None = None,
        threshold: float = 0.5,
        return_segmentation_scores: bool = False,
    ) -> list[Any]:
        """See ``sam3lite.processing.postprocess.post_process_semantic_segmentation``."""
        return post_process_semantic_segmentation(outputs, target_sizes, threshold, return_segmentation_scores)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read processor config {path}: {err}") from err


def _hub_files(
    repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None, local_files_only: bool, token: Any
) -> dict[str, Path]:
    """Download the processor configs of a hub repo; {} (defaults) when offline or absent.

    ``hf_hub_download`` retries unreachable hosts for ~25 s per file, so one HEAD request without retries
    decides first whether the hub can be reached; otherwise only the local cache is read.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.utils import HfHubHTTPError

    found: dict[str, Path] = {}
    online = not (local_files_only or constants.HF_HUB_OFFLINE)
    for name in (PROCESSOR_CONFIG, PREPROCESSOR_CONFIG, MODEL_CONFIG):
        cache_only = not online
        if online:
            try:
                get_hf_file_metadata(hf_hub_url(repo_id, name, revision=revision), token=token)
            except HfHubHTTPError as err:  # the hub answered: file absent, repo gated or private
                logger.info("%s of %s not on the hub (%s)", name, repo_id, err)
                cache_only = True
            except Exception as err:  # unreachable (DNS, proxy, timeout): read only the cache from now on
                logger.info("hub unreachable for %s (%s); reading the local cache", repo_id, err)
                online, cache_only = False, True
        try:
            path = hf_hub_download(
                repo_id, name, revision=revision, cache_dir=cache_dir, token=token, local_files_only=cache_only
            )
            found[name] = Path(path)
        except Exception as err:  # not cached or not downloadable: the defaults apply
            logger.info("%s of %s unavailable (%s); using defaults", name, repo_id, err)
    return found


def _detector_config(config: dict[str, Any]) -> dict[str, Any]:
    """The detector part of a ``config.json`` (a ``sam3_video`` config nests it in ``detector_config``)."""
    inner = config.get("detector_config")
    return inner if isinstance(inner, dict) else config


def _as_sizes(sizes: Sequence[Sequence[int]] | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(sizes if isinstance(sizes, torch.Tensor) else list(sizes)).to(torch.int64).cpu()
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[1] != 2 or bool((t <= 0).any()):
        raise ValueError(f"original_sizes must be (height, width) pairs of positive ints, got {sizes!r}")
    return t


def _resolve_text(text: Any, input_boxes: Any) -> list[str] | None:
    """Prompts as a list; ``None`` becomes "visual" where boxes are given (as in the reference)."""
    if text is None:
        return [DEFAULT_TEXT] if input_boxes is not None else None
    if isinstance(text, str):
        return [text]
    if not isinstance(text, (list, tuple)):
        raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}")
    if not text:
        raise ValueError("text is an empty list")
    prompts = []
    for i, item in enumerate(text):
        if item is None:
            if input_boxes is None:
                raise ValueError(f"text[{i}] is None and no input_boxes are given")
            item = DEFAULT_TEXT
        prompts.append(item)
    return prompts


def _nested(data: Any, depth: int, what: str) -> list[Any]:
    """Tensor / array / nested sequence -> nested lists (``None`` entries kept at the top level)."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        if data.ndim != depth:
            raise ValueError(f"{what} must have {depth} dimensions, got shape {tuple(data.shape)}")
        return data.tolist()
    if not isinstance(data, (list, tuple)):
        raise TypeError(f"{what} must be a nested list, tensor or array, got {type(data).__name__}")
    return [None if item is None else _to_list(item, f"{what}[{i}]") for i, item in enumerate(data)]


def _to_list(item: Any, what: str) -> list[Any]:
    if isinstance(item, (torch.Tensor, np.ndarray)):
        return item.tolist()
    if not isinstance(item, (list, tuple)):
        raise TypeError(f"{what} must be a list (one entry per box), got {type(item).__name__}")
    return [x.tolist() if isinstance(x, (torch.Tensor, np.ndarray)) else x for x in item]


def prepare_boxes(
    input_boxes: BoxesInput, input_boxes_labels: LabelsInput | None, original_sizes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel xyxy boxes per image -> padded normalized cxcywh boxes [N, K, 4] and labels [N, K].

    Boxes must be finite with x2 > x1 and y2 > y1; parts outside the image are clipped with a warning.
    A row of four -10 is padding. Labels are 1 (positive) or 0 (negative). Padded rows hold
    cxcywh(-10, -10, -10, -10) = (-10, -10, 0, 0) and label -10, as in the reference.
    """
    boxes = _nested(input_boxes, 3, "input_boxes")
    if not boxes:
        raise ValueError("input_boxes is empty; give one (possibly empty) list of boxes per image")
    labels = None if input_boxes_labels is None else _nested(input_boxes_labels, 2, "input_boxes_labels")
    if labels is not None and len(labels) != len(boxes):
        raise ValueError(f"input_boxes has {len(boxes)} entries but input_boxes_labels has {len(labels)}")
    if len(original_sizes) not in (1, len(boxes)):
        raise ValueError(f"{len(boxes)} box lists for {len(original_sizes)} images; need one per image or one image")

    num_boxes = max([len(b) for b in boxes if b is not None], default=0)
    xyxy = torch.full((len(boxes), num_boxes, 4), float(BOX_PAD), dtype=torch.float32)
    out_labels = torch.full((len(boxes), num_boxes), BOX_PAD, dtype=torch.int64)
    clipped = []
    for j, image_boxes in enumerate(boxes):
        image_labels = None if labels is None else labels[j]
        if image_boxes is None:
            if image_labels:
                raise ValueError(f"input_boxes_labels[{j}] has labels but input_boxes[{j}] is None")
            continue
        if image_labels is not None and len(image_labels) != len(image_boxes):
            raise ValueError(
                f"input_boxes[{j}] has {len(image_boxes)} boxes but input_boxes_labels[{j}] has {len(image_labels)}"
            )
        height, width = original_sizes[j if len(original_sizes) > 1 else 0].tolist()
        for k, box in enumerate(image_boxes):
            where = f"input_boxes[{j}][{k}]"
            label = 1 if image_labels is None else image_labels[k]
            if isinstance(box, (list, tuple)) and list(box) == [BOX_PAD] * 4:  # padding row (e.g. from this processor)
                if image_labels is not None and label != BOX_PAD:
                    raise ValueError(f"{where} is padding (-10) but its label is {label!r}, not -10")
                continue
            inside, was_clipped = check_box(box, label, width, height, where, f"input_boxes_labels[{j}][{k}]")
            if was_clipped:
                clipped.append(where)
            xyxy[j, k] = torch.tensor(inside, dtype=torch.float32)
            out_labels[j, k] = int(label)
    if clipped:
        shown = ", ".join(clipped[:3]) + (", ..." if len(clipped) > 3 else "")
        warnings.warn(f"{len(clipped)} box(es) extend outside their image and were clipped: {shown}", stacklevel=3)

    # Normalize real rows by (W, H), then xyxy -> cxcywh for every row, padding included (as the reference).
    real = (out_labels != BOX_PAD)[..., None]
    sizes = original_sizes if len(original_sizes) > 1 else original_sizes.expand(len(boxes), 2)
    scale = sizes.flip(-1).repeat(1, 2).to(torch.float32)[:, None, :]  # [N, 1, 4] = (W, H, W, H)
    xyxy = torch.where(real, xyxy / scale, xyxy)
    x1, y1, x2, y2 = xyxy.unbind(-1)
    cxcywh = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)
    return cxcywh, out_labels


def _check_batch(inputs: BatchInputs) -> None:
    """Each of images, prompts and box lists must number 1 or B."""
    counts = {
        "images": len(inputs["original_sizes"]) if "original_sizes" in inputs else None,
        "text prompts": len(inputs["input_ids"]) if "input_ids" in inputs else None,
        "box lists": len(inputs["input_boxes"]) if "input_boxes" in inputs else None,
    }
    present = {k: v for k, v in counts.items() if v is not None}
    batch = max(present.values(), default=1)
    bad = {k: v for k, v in present.items() if v not in (1, batch)}
    if bad:
        raise ValueError(f"batch sizes do not pair up: {present}; each must be 1 (shared) or {batch}")
