"""SAM3's tracker: segment given objects from clicks, boxes or masks, and carry them through a video.

Data flow (full-size shapes: C = 256, grid h = w = 72, S = 1008; B objects on one image):

    tracker neck levels [1, C, 288²], [1, C, 144²], [1, C, 72²]  (a ``VisionNeck`` on the shared ViT output)
      --prepare_image--> TrackerImageFeatures (computed once per image/frame)
    points/boxes/mask per object --predict_masks--> masks [B, K, 288, 288], IoU [B, K], object score [B, 1]
    video: memories of earlier frames --condition_on_memory--> image embedding per object [B, C, 72, 72]
      --track_step--> best mask per object, object pointer; --encode_memory--> memory [B, 64, 72, 72]

Everything is batched over objects that share one image: per-image tensors keep a batch of 1 and
broadcast (views, not copies) until a per-object tensor joins them. The reference runs objects one
by one; results are the same.

Module names equal the checkpoint keys under ``tracker_model.`` of a ``sam3_video`` checkpoint (the
hub layout of facebook/sam3): ``Sam3Tracker().state_dict()`` has exactly those keys. The tracker's
FPN neck (``tracker_neck.*``) is a ``sam3lite.modeling.vision.VisionNeck`` owned by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..position import encode_grid
from .config import TrackerConfig
from .layers import FeedForward
from .mask_decoder import TrackerMaskDecoder
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .memory_selection import ObjectMemory
from .prompt_encoder import PromptEncoder, RandomFourierEmbedding

# Mask logit written where the object score says "absent", so the memory sees an empty mask.
NO_OBJECT_SCORE = -1024.0
# A mask given as a prompt on a video frame is used as the output: logits +10 inside, -10 outside.
MASK_OUTPUT_SCALE, MASK_OUTPUT_BIAS = 20.0, -10.0


@dataclass
class TrackerImageFeatures:
    """One image's (or frame's) tracker features, computed once and shared by every prompt on it.

    pixel_features: [N, C, h, w] the tracker neck's lowest-resolution level (N = 1 image, or one per object).
    image_embedding: [N, C, h, w] ``pixel_features + no_memory_embedding``: what the mask decoder reads
        on an image, or on a video frame read without memory.
    high_res_features: (conv_s0(4x level) [N, C/8, 4h, 4w], conv_s1(2x level) [N, C/4, 2h, 2w]).
    image_pe: [1, C, h, w] random-Fourier encoding of the grid's pixel centres.
    """

    pixel_features: torch.Tensor
    image_embedding: torch.Tensor
    high_res_features: tuple[torch.Tensor, torch.Tensor]
    image_pe: torch.Tensor


@dataclass
class TrackerOutput:
    """Mask-decoder answer for B prompts (objects), K masks each (K = 3 with multimask output, else 1).

    low_res_masks: [B, K, 4h, 4w] mask logits (288² at full size; feed one back as ``mask_input``).
    iou_scores: [B, K] predicted IoU of each mask.
    object_score_logits: [B, 1] (> 0: the object is visible).
    object_pointer: [B, C] the object's pointer for video memory (from the mask with the best IoU;
        ``no_object_pointer`` when the object score says absent).
    """

    low_res_masks: torch.Tensor
    iou_scores: torch.Tensor
    object_score_logits: torch.Tensor
    object_pointer: torch.Tensor


@dataclass
class TrackStepOutput:
    """One video frame's result for B objects.

    low_res_masks: [B, 1, 4h, 4w] the chosen mask's logits (-1024 everywhere for an absent object).
    high_res_masks: [B, 1, S, S] the same upsampled to the model input size (memory encoder input).
    iou_scores: [B] predicted IoU of the chosen mask (1 for a mask given as prompt).
    object_score_logits: [B, 1]; object_pointer: [B, C].
    """

    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    iou_scores: torch.Tensor
    object_score_logits: torch.Tensor
    object_pointer: torch.Tensor


def temporal_encoding(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1-D sine encoding of [P] positions -> [P, dim]: sines of all frequencies, then cosines."""
    half = dim // 2
    index = torch.arange(half, dtype=torch.float32, device=positions.device)
    freqs = temperature ** (2 * (index // 2) / half)
    angles = positions[:, None] / freqs
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class Sam3Tracker(nn.Module):
    """Prompt encoder, mask decoder and video memory of SAM3's tracker (no image encoder of its own)."""

    def __init__(self, config: TrackerConfig) -> None:
        super().__init__()
        self.config = config
        dim, mem_dim = config.hidden_size, config.memory_dim
        # Image part.
        self.shared_image_embedding = RandomFourierEmbedding(config.prompt_encoder_config)
        self.prompt_encoder = PromptEncoder(config.prompt_encoder_config)
        self.mask_decoder = TrackerMaskDecoder(config.mask_decoder_config)
        self.no_memory_embedding = nn.Parameter(torch.zeros(1, 1, dim))
        # Video part.
        self.memory_attention = MemoryAttention(config)
        self.memory_encoder = MemoryEncoder(config)
        # In the checkpoint but read by no computation (in the reference too).
        self.no_memory_positional_encoding = nn.Parameter(torch.zeros(1, 1, dim))
        self.memory_temporal_positional_encoding = nn.Parameter(torch.zeros(config.num_maskmem, 1, 1, mem_dim))
        self.no_object_pointer = nn.Parameter(torch.zeros(1, dim))
        # Brings a mask prompt at input size down to the decoder's mask-input stride (4).
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.object_pointer_proj = FeedForward(dim, dim, dim, num_layers=3)
        if config.enable_temporal_pos_encoding_for_object_pointers:
            self.temporal_positional_encoding_projection_layer: nn.Module = nn.Linear(dim, mem_dim)
        else:
            self.temporal_positional_encoding_projection_layer = nn.Identity()
        if config.enable_occlusion_spatial_embedding:
            self.occlusion_spatial_embedding_parameter = nn.Parameter(torch.zeros(1, mem_dim))
        else:
            self.occlusion_spatial_embedding_parameter = None

    # -----------------------------------------------------------------------------------------
    # Image part
    # -----------------------------------------------------------------------------------------

    def prepare_image(self, neck_levels: Sequence[torch.Tensor]) -> TrackerImageFeatures:
        """Tracker-neck levels, finest first ([N, C, 4h, 4w], [N, C, 2h, 2w], [N, C, h, w]) -> features."""
        grid, dim = self.config.grid_size, self.config.hidden_size
        expected = [(dim, 4 * grid, 4 * grid), (dim, 2 * grid, 2 * grid), (dim, grid, grid)]
        shapes = [tuple(level.shape[1:]) for level in neck_levels]
        if len(neck_levels) != 3 or shapes != expected or any(lv.ndim != 4 for lv in neck_levels):
            raise ValueError(f"neck_levels must be 3 maps [N, C, H, W] with (C, H, W) = {expected}, got {shapes}")
        # The neck's maps come out channels-last (the ViT tokens are [N, h, w, C]); the reference reads
        # this level through a flattened copy. Same layout, same conv kernels: bit-equal memories.
        pixel = neck_levels[-1].contiguous()
        return TrackerImageFeatures(
            pixel_features=pixel,
            image_embedding=pixel + self.no_memory_embedding.view(1, -1, 1, 1),
            high_res_features=(
                self.mask_decoder.conv_s0(neck_levels[0]),
                self.mask_decoder.conv_s1(neck_levels[1]),
            ),
            image_pe=self.shared_image_embedding.grid(grid)[None],
        )

    def predict_masks(
        self,
        features: TrackerImageFeatures,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        image_embedding: torch.Tensor | None = None,
    ) -> TrackerOutput:
        """Masks for B prompts on one image (or one image per prompt).

        Args:
            features: from ``prepare_image``.
            points: [B, N, 2] pixel (x, y) in the model input (``image_size`` square); labels: [B, N] ints
                (1 positive, 0 negative, 2/3 box corners, -1 not-a-point, -10 padding).
            boxes: [B, 4] pixel (x0, y0, x1, y1) in the model input.
            mask_input: [B, 1, H, W] mask logits, e.g. an earlier ``low_res_masks`` entry; resized to
                [4h, 4w] when it is another size.
            multimask_output: 3 masks per prompt, else 1 (the single-mask output, or the best multimask
                output when the single one is unstable).
            image_embedding: [1 or B, C, h, w] replaces ``features.image_embedding`` (e.g. the output of
                ``condition_on_memory``).
        """
        embedding = features.image_embedding if image_embedding is None else image_embedding
        batch = self._prompt_batch(embedding, points, labels, boxes, mask_input)
        if mask_input is not None:
            size = self.config.mask_input_size
            if mask_input.shape[-2:] != (size, size):
                mask_input = F.interpolate(
                    mask_input.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
                ).to(mask_input.dtype)
            mask_input = mask_input.to(embedding.dtype)
        sparse, dense = self.prompt_encoder(batch, points, labels, boxes, mask_input)
        out = self.mask_decoder(
            embedding, features.image_pe, sparse, dense, features.high_res_features, multimask_output
        )
        return TrackerOutput(
            low_res_masks=out.masks,
            iou_scores=out.iou_scores,
            object_score_logits=out.object_score_logits,
            object_pointer=self._object_pointer(out.mask_tokens, out.iou_scores, out.object_score_logits),
        )

    def _object_pointer(self, tokens: torch.Tensor, iou: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """tokens [B, K, C] -> [B, C]: project the best-IoU mask's token; absent objects get ``no_object_pointer``."""
        best = iou.argmax(dim=-1) if tokens.shape[1] > 1 else torch.zeros_like(iou[:, 0], dtype=torch.long)
        token = tokens[torch.arange(tokens.shape[0], device=tokens.device), best]
        pointer = self.object_pointer_proj(token)
        return torch.where(scores > 0, pointer, self.no_object_pointer.to(pointer.dtype))

    def _prompt_batch(
        self,
        embedding: torch.Tensor,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
    ) -> int:
        """Check the prompt shapes; return the number of prompts B."""
        sizes: dict[str, int] = {}
        if points is not None:
            if labels is None:
                raise ValueError("points need labels: labels must be a [B, N] tensor")
            if points.ndim != 3 or points.shape[-1] != 2:
                raise ValueError(f"points must be [B, N, 2] (x, y), got {list(points.shape)}")
            if labels.shape != points.shape[:2]:
                raise ValueError(f"labels must be {list(points.shape[:2])} to match points, got {list(labels.shape)}")
            sizes["points"] = points.shape[0]
        elif labels is not None:
            raise ValueError("labels were given without points")
        if boxes is not None:
            if boxes.ndim != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"boxes must be [B, 4] (x0, y0, x1, y1), got {list(boxes.shape)}")
            sizes["boxes"] = boxes.shape[0]
        if mask_input is not None:
            if mask_input.ndim != 4 or mask_input.shape[1] != 1:
                raise ValueError(f"mask_input must be [B, 1, H, W], got {list(mask_input.shape)}")
            sizes["mask_input"] = mask_input.shape[0]
        if embedding.shape[0] != 1:
            sizes["image_embedding"] = embedding.shape[0]
        if len(set(sizes.values())) > 1:
            raise ValueError(f"prompts disagree on the number of objects: {sizes}")
        return next(iter(sizes.values()), 1)

    # -----------------------------------------------------------------------------------------
    # Video part
    # -----------------------------------------------------------------------------------------

    def use_multimask(self, num_points: int, initial: bool) -> bool:
        """The reference's rule for multimask output on a video frame: ``num_points`` clicks (a box counts
        as 2) on an ``initial`` conditioning frame (a frame read without memory), or while tracking."""
        cfg = self.config
        return (
            cfg.multimask_output_in_sam
            and (initial or cfg.multimask_output_for_tracking)
            and cfg.multimask_min_pt_num <= num_points <= cfg.multimask_max_pt_num
        )

    def memory_position(self, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        """Spatial position encoding of a memory grid -> [h * w, 64] (normalised sine map, row-major)."""
        device = self.memory_temporal_positional_encoding.device
        grid = encode_grid(height, width, self.config.memory_dim // 2, device, torch.float32)
        return grid.flatten(1).transpose(0, 1).to(dtype)

    def pointer_position(self, offsets: torch.Tensor, max_offset: int) -> torch.Tensor:
        """Temporal encoding of object pointers [P] offsets -> [P, 64] (zeros when disabled in the config)."""
        dim = self.config.hidden_size
        dtype = self.no_object_pointer.dtype
        if not self.config.enable_temporal_pos_encoding_for_object_pointers:
            return torch.zeros(offsets.shape[0], self.config.memory_dim, device=offsets.device, dtype=dtype)
        encoding = temporal_encoding(offsets.float() / max_offset, dim).to(dtype)
        return self.temporal_positional_encoding_projection_layer(encoding)

    def condition_on_memory(self, features: TrackerImageFeatures, memories: Sequence[ObjectMemory]) -> torch.Tensor:
        """Memory attention for B objects on one frame -> image embeddings [B, C, h, w].

        ``memories[i]`` is what object i reads (``memory_selection.gather_memory``). Objects may read
        different numbers of memory frames and pointers: shorter ones are padded and the padding
        masked out of the attention.
        """
        if not memories:
            raise ValueError("memories is empty: give one ObjectMemory per object")
        pixel = features.pixel_features
        n, dim, h, w = pixel.shape
        if n not in (1, len(memories)):
            raise ValueError(f"features hold {n} images for {len(memories)} objects; expected 1 or one per object")
        memory, memory_pe, valid, num_pointer_tokens = self._memory_tokens(memories, h, w, pixel.dtype)
        position = encode_grid(h, w, dim // 2, pixel.device, torch.float32).to(pixel.dtype)
        out = self.memory_attention(
            pixel.flatten(2).transpose(1, 2),
            position.flatten(1).transpose(0, 1)[None],
            memory,
            memory_pe,
            num_pointer_tokens,
            valid,
        )
        return out.transpose(1, 2).reshape(len(memories), dim, h, w)

    def _memory_tokens(
        self, memories: Sequence[ObjectMemory], h: int, w: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
        """Lay out B objects' memories as tokens [B, F*hw + P*splits, 64]: spatial memories frame by
        frame, then each pointer split into C/64 tokens; with position encodings and a validity mask."""
        mem_dim = self.config.memory_dim
        splits = self.config.hidden_size // mem_dim
        hw = h * w
        for i, m in enumerate(memories):
            if m.features.ndim != 4 or tuple(m.features.shape[1:]) != (mem_dim, h, w):
                raise ValueError(
                    f"memories[{i}].features must be [F, {mem_dim}, {h}, {w}], got {list(m.features.shape)}"
                )
            if m.temporal_rows.shape != m.features.shape[:1]:
                raise ValueError(f"memories[{i}].temporal_rows must have one row per memory frame")
            if m.pointers.shape[0] != m.pointer_offsets.shape[0]:
                raise ValueError(f"memories[{i}]: one pointer offset per object pointer expected")
        num_spatial = max(m.features.shape[0] for m in memories) * hw
        num_pointer_tokens = max(m.pointers.shape[0] for m in memories) * splits
        device = memories[0].features.device
        shape = (len(memories), num_spatial + num_pointer_tokens, mem_dim)
        memory = torch.zeros(shape, dtype=dtype, device=device)
        memory_pe = torch.zeros(shape, dtype=dtype, device=device)
        valid = torch.zeros(shape[:2], dtype=torch.bool, device=device)
        spatial_pe = self.memory_position(h, w, dtype)  # (hw, 64)
        temporal = self.memory_temporal_positional_encoding.view(-1, mem_dim)
        for i, m in enumerate(memories):
            n = m.features.shape[0] * hw
            # (F, 64, h, w) -> (F*hw, 64), frame by frame, row-major within a frame.
            memory[i, :n] = m.features.to(dtype).flatten(2).transpose(1, 2).reshape(n, mem_dim)
            memory_pe[i, :n] = (spatial_pe[None] + temporal[m.temporal_rows][:, None].to(dtype)).reshape(n, mem_dim)
            valid[i, :n] = True
            p = m.pointers.shape[0] * splits
            if p:
                start = num_spatial
                memory[i, start : start + p] = m.pointers.to(dtype).reshape(p, mem_dim)
                position = self.pointer_position(m.pointer_offsets, m.max_pointer_offset).to(dtype)
                memory_pe[i, start : start + p] = position.repeat_interleave(splits, dim=0)
                valid[i, start : start + p] = True
        return memory, memory_pe, (None if bool(valid.all()) else valid), num_pointer_tokens

    def encode_memory(
        self,
        features: TrackerImageFeatures,
        high_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        binarize: torch.Tensor | bool = False,
    ) -> torch.Tensor:
        """Memories of B objects on one frame -> [B, 64, h, w] in bfloat16 (how the reference stores
        them, also in a float32 model; the memory attention reads them back in the model's dtype).

        Args:
            high_res_masks: [B, 1, S, S] mask logits (``TrackStepOutput.high_res_masks``).
            object_score_logits: [B, 1]; absent objects get the occlusion embedding added.
            binarize: [B] bool (or one bool for all): use the hard mask (logits > 0) instead of its
                sigmoid; the reference does so for masks that came from a prompt on this frame.
        """
        if high_res_masks.ndim != 4 or high_res_masks.shape[1] != 1:
            raise ValueError(f"high_res_masks must be [B, 1, H, W], got {list(high_res_masks.shape)}")
        cfg = self.config
        size = 4 * cfg.mask_input_size  # 16 x the feature grid
        masks = high_res_masks
        if masks.shape[-2:] != (size, size):
            masks = F.interpolate(
                masks.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
            ).to(masks.dtype)
        binarize = torch.as_tensor(binarize, device=masks.device).view(-1, 1, 1, 1)
        masks = torch.where(binarize, (masks > 0).to(masks.dtype), torch.sigmoid(masks))
        masks = masks * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
        memory = self.memory_encoder(features.pixel_features, masks.to(features.pixel_features.dtype))
        if self.occlusion_spatial_embedding_parameter is not None:
            absent = 1 - (object_score_logits > 0).float()  # (B, 1)
            memory = memory + absent[:, :, None, None] * self.occlusion_spatial_embedding_parameter[..., None, None]
        return memory.to(torch.bfloat16)

    def track_step(
        self,
        features: TrackerImageFeatures,
        memories: Sequence[ObjectMemory | None],
        points: Sequence[torch.Tensor | None] | None = None,
        labels: Sequence[torch.Tensor | None] | None = None,
        mask_inputs: Sequence[torch.Tensor | None] | None = None,
        multimask: Sequence[bool] | None = None,
    ) -> TrackStepOutput:
        """One video frame for B objects (the memories already chosen; see ``memory_selection``).

        Args:
            memories: per object, what it reads (``ObjectMemory``), or None for a frame read without
                memory (an initial conditioning frame: ``image_embedding`` with ``no_memory_embedding``).
            points / labels: per object [N, 2] pixels of the model input / [N] labels, or None. A box
                travels as two points labelled 2 and 3, first.
            mask_inputs: per object a [H, W] mask (0/1) given as prompt, or None. Such a mask is taken as
                the output (logits ±10); the decoder only derives its object pointer.
            multimask: per object; default ``use_multimask(number of points, memory is None)``.

        Objects run in groups sharing a prompt length and multimask choice; memory attention runs once
        for all objects that read memory.
        """
        count = len(memories)
        points = list(points) if points is not None else [None] * count
        labels = list(labels) if labels is not None else [None] * count
        mask_inputs = list(mask_inputs) if mask_inputs is not None else [None] * count
        if not len(points) == len(labels) == len(mask_inputs) == count:
            raise ValueError("memories, points, labels and mask_inputs need one entry per object")
        for i in range(count):
            if (points[i] is None) != (labels[i] is None):
                raise ValueError(f"object {i}: points and labels go together (both or neither)")
            if mask_inputs[i] is not None and mask_inputs[i].ndim != 2:
                raise ValueError(f"mask_inputs[{i}] must be an [H, W] mask, got {list(mask_inputs[i].shape)}")
        if multimask is None:
            multimask = [
                self.use_multimask(0 if p is None else p.shape[0], m is None)
                for p, m in zip(points, memories, strict=True)
            ]
        results: list[tuple[list[int], TrackStepOutput]] = []
        masked = [i for i in range(count) if mask_inputs[i] is not None]
        if masked:
            if any(points[i] is not None for i in masked):
                raise ValueError("an object has both points and a mask input on the same frame")
            masks = torch.stack([mask_inputs[i] for i in masked])[:, None]
            results.append((masked, self._mask_as_output(features, masks)))
        decoded = [i for i in range(count) if mask_inputs[i] is None]
        embeddings = self._frame_embeddings(features, [memories[i] for i in decoded])
        groups: dict[tuple[int, bool], list[int]] = {}
        for j, i in enumerate(decoded):
            key = (-1 if points[i] is None else points[i].shape[0], bool(multimask[i]))
            groups.setdefault(key, []).append(j)
        for (num_points, multi), rows in groups.items():
            objects = [decoded[j] for j in rows]
            embedding = embeddings if embeddings.shape[0] == 1 else embeddings[rows]
            pts = torch.stack([points[i] for i in objects]) if num_points >= 0 else None
            lbl = torch.stack([labels[i] for i in objects]) if num_points >= 0 else None
            out = self.predict_masks(features, pts, lbl, multimask_output=multi, image_embedding=embedding)
            if out.low_res_masks.shape[0] != len(objects):
                # No per-object input at all (one image, no points, no memory): one answer serves all.
                out = _expand(out, len(objects))
            results.append((objects, self._select_mask(out)))
        return _gather(results, count)

    def _frame_embeddings(
        self, features: TrackerImageFeatures, memories: Sequence[ObjectMemory | None]
    ) -> torch.Tensor:
        """Image embedding per object [B, C, h, w], or [1, C, h, w] when no object reads memory."""
        reading = [i for i, m in enumerate(memories) if m is not None]
        if not reading:
            return features.image_embedding
        conditioned = self.condition_on_memory(features, [memories[i] for i in reading])
        if len(reading) == len(memories):
            return conditioned
        out = features.image_embedding.expand(len(memories), -1, -1, -1).clone()
        out[reading] = conditioned
        return out

    def _select_mask(self, out: TrackerOutput) -> TrackStepOutput:
        """The best-IoU mask of each object, blanked (-1024) where the object score says absent."""
        present = out.object_score_logits > 0  # (B, 1)
        masks = torch.where(present[:, :, None, None], out.low_res_masks, NO_OBJECT_SCORE)
        best = out.iou_scores.argmax(dim=-1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        low_res = masks[rows, best][:, None]
        size = self.config.image_size
        high_res = F.interpolate(low_res.float(), size=(size, size), mode="bilinear", align_corners=False)
        return TrackStepOutput(
            low_res_masks=low_res,
            high_res_masks=high_res.to(low_res.dtype),
            iou_scores=out.iou_scores[rows, best],
            object_score_logits=out.object_score_logits,
            object_pointer=out.object_pointer,
        )

    def _mask_as_output(self, features: TrackerImageFeatures, masks: torch.Tensor) -> TrackStepOutput:
        """Masks given as prompts [B, 1, H, W] (0/1) become the output; the decoder, fed the mask as a dense
        prompt on the frame's features (without memory or no-memory embedding), gives the object pointer."""
        dtype = features.pixel_features.dtype
        size = self.config.image_size
        masks_f = masks.to(dtype)
        if masks_f.shape[-2:] != (size, size):
            masks_f = F.interpolate(
                masks_f.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
            ).to(dtype)
        high_res = masks_f * MASK_OUTPUT_SCALE + MASK_OUTPUT_BIAS
        low = self.config.mask_input_size
        low_res = F.interpolate(
            high_res.float(), size=(low, low), mode="bilinear", align_corners=False, antialias=True
        ).to(dtype)
        out = self.predict_masks(
            features,
            mask_input=self.mask_downsample(masks_f.to(dtype)),
            multimask_output=True,
            image_embedding=features.pixel_features,
        )
        present = (masks.flatten(1).float() > 0).any(dim=1, keepdim=True)  # (B, 1)
        pointer = torch.where(present, out.object_pointer, self.no_object_pointer.to(out.object_pointer.dtype))
        scores = MASK_OUTPUT_SCALE * present.to(dtype) + MASK_OUTPUT_BIAS
        return TrackStepOutput(
            low_res_masks=low_res,
            high_res_masks=high_res,
            iou_scores=torch.ones(masks.shape[0], dtype=dtype, device=masks.device),
            object_score_logits=scores,
            object_pointer=pointer,
        )


def _expand(out: TrackerOutput, count: int) -> TrackerOutput:
    return TrackerOutput(
        *(
            t.expand(count, *t.shape[1:])
            for t in (out.low_res_masks, out.iou_scores, out.object_score_logits, out.object_pointer)
        )
    )


def _gather(results: list[tuple[list[int], TrackStepOutput]], count: int) -> TrackStepOutput:
    """Put per-group outputs back in object order."""
    order = torch.tensor([i for objects, _ in results for i in objects], dtype=torch.long)
    inverse = torch.empty(count, dtype=torch.long)
    inverse[order] = torch.arange(count)
    names = ("low_res_masks", "high_res_masks", "iou_scores", "object_score_logits", "object_pointer")
    stacked = {}
    for name in names:
        parts = [getattr(r, name) for _, r in results]
        stacked[name] = torch.cat(parts)[inverse.to(parts[0].device)]
    return TrackStepOutput(**stacked)
