"""``VideoPredictor``: objects given on any frame (clicks, boxes, masks) segmented through a whole video.

    vp = VideoPredictor(sam3lite.load("sam3"))          # any model with SAM3's tracker
    session = vp.start("clip.mp4")                      # nothing decoded yet
    vp.add_object(session, frame=0, obj_id=1, box=[40, 60, 210, 300])
    for f in vp.propagate(session):                     # every frame from the first prompted one
        f.frame, f.object_ids, f.masks, f.scores

Per frame, every object goes through memory attention and the mask decoder in one batch (the
reference runs objects one by one). The bookkeeping follows transformers' ``Sam3TrackerVideoModel``
session exactly (which frames condition an object, which memories and pointers it reads), so the
answers match it; what differs is what is *kept*:

- frames are decoded when needed and their features dropped after their step (a frame prompted
  interactively keeps its features while the next calls may reuse them);
- an object's memory of a frame is dropped once no step can read it any more: memories within
  ``num_maskmem - 1`` frames of the last processed frame or of one of the object's conditioning
  frames stay (a pass, forward or backward, starts from one of those), object pointers within
  ``max_object_pointers_in_encoder`` frames likewise; the conditioning frames' own outputs stay.
  Memory use is flat in the video's length (the reference keeps every frame's outputs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .modeling.detector import NO_TRACKER_MESSAGE, Sam3Detector
from .modeling.tracker.memory_selection import gather_memory, select_memory
from .modeling.tracker.model import TrackerImageFeatures
from .objects import POINT_LABELS
from .processing.images import ImageSettings, preprocess_images
from .processing.rle import masks_to_rle
from .processing.video import VideoFrames, open_video

BOX_LABELS = (2, 3)  # a box travels as its two corners labelled 2 (top-left) and 3 (bottom-right)
_FEATURES_KEPT = 2  # frames whose tracker features stay cached (interactive prompts on one frame)


@dataclass
class FrameResult:
    """Every object on one frame.

    frame: index in the video. object_ids: the objects, in the order they were added.
    masks: bool [N, H, W] at the video's size. scores: float32 [N], the probability the object is
    visible (sigmoid of its object score). logits: float32 [N, 1, h, w] low-res mask logits.
    """

    frame: int
    object_ids: list[int]
    masks: torch.Tensor
    scores: torch.Tensor
    logits: torch.Tensor

    def __repr__(self) -> str:
        h, w = self.masks.shape[-2:]
        return f"FrameResult(frame={self.frame}, object_ids={self.object_ids}, masks {h}x{w})"

    def to_rle(self) -> list[dict[str, Any]]:
        return masks_to_rle(self.masks)


@dataclass
class _Stored:
    """One object's output on one frame: the object pointer [C], the encoded memory [64, h', w']
    (bfloat16; None once no step can read it), and for conditioning frames the answer itself
    (low-res logits [1, h, w] and object score logit)."""

    pointer: torch.Tensor
    memory: torch.Tensor | None
    low_res: torch.Tensor | None = None
    score: float = 0.0


@dataclass
class _Object:
    points: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # model-input pixels
    masks: dict[int, torch.Tensor] = field(default_factory=dict)  # [S, S] float 0/1 at the model input
    cond: dict[int, _Stored] = field(default_factory=dict)  # prompted frames, in prompting order
    non_cond: dict[int, _Stored] = field(default_factory=dict)  # tracked frames still readable
    tracked: set[int] = field(default_factory=set)  # every frame tracked (kept: a set of ints)


@dataclass
class VideoSession:
    """One video's tracking state (create with ``VideoPredictor.start``)."""

    frames: VideoFrames
    objects: dict[int, _Object] = field(default_factory=dict)
    new_inputs: list[int] = field(default_factory=list)
    features: OrderedDict[int, TrackerImageFeatures] = field(default_factory=OrderedDict)
    head: int | None = None  # the last frame processed
    offload: str | None = None

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def video_size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        return self.frames.size

    @property
    def object_ids(self) -> list[int]:
        return list(self.objects)


class VideoPredictor:
    """Tracks objects given by clicks, boxes or masks through a video with SAM3's tracker.

    Args:
        model: a model with a tracker (``sam3lite.load("sam3")``, or ``load("s0", tracker="sam3")``).
        offload: ``"cpu"`` keeps memories (and cached frame features) in CPU memory when the model runs
            on a GPU; each frame's memories move to the GPU when read.
    """

    def __init__(self, model: Sam3Detector, offload: str | None = None) -> None:
        if not model.has_tracker:
            raise ValueError(NO_TRACKER_MESSAGE)
        if offload not in (None, "cpu"):
            raise ValueError(f"offload must be None or 'cpu', got {offload!r}")
        self.model = model.eval()
        self.tracker = model.tracker_model
        self.offload = offload
        size = self.tracker.config.image_size
        self.image_settings = ImageSettings(size=(size, size))

    # ------------------------------------------------------------------------------------------
    # Session
    # ------------------------------------------------------------------------------------------

    def start(self, video: Any, offload: str | None = None) -> VideoSession:
        """A session on ``video``: a file (mp4/mov/webm/avi... through PyAV), a folder of frames, or a
        sequence of frames (arrays [H, W, 3] uint8, PIL images, paths). Nothing is decoded yet but the
        first frame (its size)."""
        return VideoSession(frames=open_video(video), offload=offload or self.offload)

    def reset(self, session: VideoSession) -> None:
        """Forget every object and prompt (the video stays open)."""
        session.objects.clear()
        session.new_inputs.clear()
        session.features.clear()
        session.head = None

    def remove_object(self, session: VideoSession, obj_id: int) -> None:
        if obj_id not in session.objects:
            raise KeyError(f"no object {obj_id} in this session (objects: {session.object_ids})")
        del session.objects[obj_id]
        session.new_inputs = [o for o in session.new_inputs if o != obj_id]

    # ------------------------------------------------------------------------------------------
    # Prompts
    # ------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def add_object(
        self,
        session: VideoSession,
        frame: int,
        obj_id: int,
        points: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask: Any = None,
    ) -> FrameResult:
        """Prompt object ``obj_id`` on ``frame`` (new, or a correction of an existing one); returns that
        frame's masks of every object at once.

        Args:
            points: [N, 2] pixel (x, y) clicks on the frame; point_labels: [N] 1 object / 0 background.
            box: [4] pixel (x0, y0, x1, y1) around the object (with or without clicks).
            mask: [H, W] bool/0-1 mask of the object at the video's size (instead of clicks and box).
        """
        self._check_frame(session, frame, "frame")
        if not isinstance(obj_id, (int, np.integer)) or isinstance(obj_id, bool):
            raise ValueError(f"obj_id must be an int, got {obj_id!r}")
        obj_id = int(obj_id)
        state = session.objects.setdefault(obj_id, _Object())
        try:
            if mask is not None:
                if points is not None or point_labels is not None or box is not None:
                    raise ValueError("give an object either a mask or clicks/box on one frame, not both")
                state.masks[frame] = self._prepare_mask(mask, session.video_size)
                state.points.pop(frame, None)
            else:
                state.points[frame] = self._prepare_points(points, point_labels, box, session.video_size)
                state.masks.pop(frame, None)
        except ValueError:
            if not state.points and not state.masks and not state.cond:
                del session.objects[obj_id]  # a bad first prompt leaves no empty object behind
            raise
        session.new_inputs = [obj_id]
        return self._run(session, frame, reverse=False)

    def _prepare_points(
        self, points: Any, labels: Any, box: Any, video_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clicks and box in video pixels -> (points [N, 2] in model-input pixels, labels [N])."""
        height, width = video_size
        coords: list[torch.Tensor] = []
        kinds: list[torch.Tensor] = []
        if box is not None:
            b = _floats("box", box)
            if b.shape != (4,):
                raise ValueError(f"box must be (x0, y0, x1, y1) in pixels, got shape {list(b.shape)}")
            if b[2] <= b[0] or b[3] <= b[1]:
                raise ValueError(f"box must have x1 > x0 and y1 > y0, got {b.tolist()}")
            coords.append(b.view(2, 2))
            kinds.append(torch.tensor(BOX_LABELS))
        if (points is None) != (labels is None):
            raise ValueError("points and point_labels go together: one label (1 object, 0 background) per point")
        if points is not None:
            p = _floats("points", points)
            lbl = torch.as_tensor(np.asarray(labels), dtype=torch.long).reshape(-1)
            if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] == 0:
                raise ValueError(f"points must be [N, 2] (x, y pixels), got shape {list(p.shape)}")
            if lbl.shape[0] != p.shape[0]:
                raise ValueError(f"point_labels must hold one label per point ({p.shape[0]}), got {lbl.shape[0]}")
            if not set(lbl.tolist()) <= set(POINT_LABELS):
                raise ValueError(f"point_labels must be 1 (object) or 0 (background), got {sorted(set(lbl.tolist()))}")
            coords.append(p)
            kinds.append(lbl)
        if not coords:
            raise ValueError("add_object needs points (with point_labels), a box, or a mask")
        xy = torch.cat(coords)
        outside = (xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)
        if bool(outside.any()):
            raise ValueError(
                f"points and box must lie inside the {width}x{height} frame, got {xy[outside][0].tolist()}"
            )
        size = self.tracker.config.image_size
        return xy * torch.tensor([size / width, size / height]), torch.cat(kinds)

    def _prepare_mask(self, mask: Any, video_size: tuple[int, int]) -> torch.Tensor:
        """A mask at the video's size -> [S, S] 0/1 at the model input (antialiased resize, then >= 0.5, as
        transformers' video processor does)."""
        m = torch.as_tensor(np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask))
        if tuple(m.shape) != tuple(video_size):
            raise ValueError(f"mask must be [H, W] = {list(video_size)} (the video's size), got {list(m.shape)}")
        m = (m > 0.5 if m.is_floating_point() else m > 0).float()
        size = self.tracker.config.image_size
        if tuple(m.shape) != (size, size):
            m = F.interpolate(m[None, None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            m = (m[0, 0] >= 0.5).float()
        return m

    # ------------------------------------------------------------------------------------------
    # Propagation
    # ------------------------------------------------------------------------------------------

    def propagate(
        self, session: VideoSession, start: int | None = None, reverse: bool = False
    ) -> Iterator[FrameResult]:
        """Every frame from ``start`` (default: the earliest prompted frame) to the end, or to the first
        frame with ``reverse``, ``start`` included. A generator: stop it any time, add a correction,
        and continue with another call."""
        if not session.objects:
            raise ValueError("no objects to track: add one with add_object(session, frame, obj_id, ...) first")
        prompted = [t for state in session.objects.values() for t in state.cond]
        if start is None:
            if not prompted:
                raise ValueError("no object has been prompted on any frame yet")
            start = min(prompted)
        self._check_frame(session, start, "start")
        order = range(start, -1, -1) if reverse else range(start, session.num_frames)
        for frame in order:
            with torch.inference_mode():
                yield self._run(session, frame, reverse)

    # ------------------------------------------------------------------------------------------
    # One frame
    # ------------------------------------------------------------------------------------------

    def _run(self, session: VideoSession, frame: int, reverse: bool) -> FrameResult:
        """Every object on ``frame``: cached answers of conditioning frames, one batch for the rest."""
        cached: dict[int, tuple[torch.Tensor, float]] = {}
        todo: list[tuple[int, bool, tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None, bool]] = []
        for obj_id, state in session.objects.items():
            if obj_id not in session.new_inputs and frame in state.cond:
                stored = state.cond[frame]
                cached[obj_id] = (stored.low_res, stored.score)  # type: ignore[assignment]
                continue
            initial, points, mask, backwards = False, None, None, reverse
            if obj_id in session.new_inputs:
                initial = frame not in state.tracked
                backwards = reverse and not initial
                points, mask = state.points.get(frame), state.masks.get(frame)
                if points is not None or mask is not None:
                    session.new_inputs.remove(obj_id)
            todo.append((obj_id, initial, points, mask, backwards))
        computed = self._compute(session, frame, todo) if todo else {}
        session.head = frame
        self._forget(session)
        ids = list(session.objects)
        answers = {**cached, **computed}
        logits = torch.stack([answers[o][0].to(self.model.device) for o in ids]).float()
        scores = torch.tensor([answers[o][1] for o in ids]).sigmoid()
        masks = F.interpolate(logits, size=session.video_size, mode="bilinear", align_corners=False)[:, 0] > 0
        return FrameResult(frame=frame, object_ids=ids, masks=masks.cpu(), scores=scores.cpu(), logits=logits.cpu())

    def _compute(self, session: VideoSession, frame: int, todo: list) -> dict[int, tuple[torch.Tensor, float]]:
        """Track ``todo``'s objects on ``frame`` in one batch; store their memories; return
        {object: (low-res logits [1, h, w], object score logit)}."""
        cfg = self.tracker.config
        device = self.model.device
        memories = []
        for obj_id, initial, _points, mask, backwards in todo:
            state = session.objects[obj_id]
            if initial or mask is not None:
                memories.append(None)
                continue
            selection = select_memory(
                frame,
                list(state.cond),
                state.non_cond.keys(),
                num_maskmem=cfg.num_maskmem,
                max_cond_frame_num=cfg.max_cond_frame_num,
                max_object_pointers=cfg.max_object_pointers_in_encoder,
                num_frames=session.num_frames,
                reverse=backwards,
            )
            stored = {**state.cond, **state.non_cond}
            memory = gather_memory(
                selection,
                {t: s.memory for t, s in stored.items() if s.memory is not None},
                {t: s.pointer for t, s in stored.items()},
            )
            memory.features, memory.pointers = memory.features.to(device), memory.pointers.to(device)
            memory.temporal_rows, memory.pointer_offsets = (
                memory.temporal_rows.to(device),
                memory.pointer_offsets.to(device),
            )
            memories.append(memory)
        features = self._features(session, frame)
        out = self.tracker.track_step(
            features,
            memories,
            points=[None if p is None else p[0].to(device) for _, _, p, _, _ in todo],
            labels=[None if p is None else p[1].to(device) for _, _, p, _, _ in todo],
            mask_inputs=[None if m is None else m.to(device) for _, _, _, m, _ in todo],
            multimask=[self.tracker.use_multimask(0 if p is None else len(p[1]), init) for _, init, p, _, _ in todo],
        )
        # As the reference: every object's memory mask is binarized when any object was prompted on this frame.
        prompted = any(p is not None or m is not None for _, _, p, m, _ in todo)
        encoded = self.tracker.encode_memory(features, out.high_res_masks, out.object_score_logits, prompted)
        keep = "cpu" if session.offload == "cpu" else device
        results = {}
        for i, (obj_id, initial, _, _, _) in enumerate(todo):
            state = session.objects[obj_id]
            score = float(out.object_score_logits[i, 0])
            stored = _Stored(pointer=out.object_pointer[i].to(keep), memory=encoded[i].to(keep))
            if initial:
                stored.low_res, stored.score = out.low_res_masks[i].to(keep), score
                state.cond[frame] = stored
            else:
                state.non_cond[frame] = stored
                state.tracked.add(frame)
            results[obj_id] = (out.low_res_masks[i], score)
        return results

    def _features(self, session: VideoSession, frame: int) -> TrackerImageFeatures:
        """Tracker features of ``frame``: decoded, resized and encoded now unless still cached."""
        if frame in session.features:
            session.features.move_to_end(frame)
            return session.features[frame]
        pixels, _ = preprocess_images(session.frames[frame], self.image_settings)
        features = self.model.get_tracker_features_from_pixels(pixels.to(self.model.device, self.model.dtype))
        session.features[frame] = features
        while len(session.features) > _FEATURES_KEPT:
            session.features.popitem(last=False)
        return features

    def _forget(self, session: VideoSession) -> None:
        """Drop the memories and pointers no later step can read (see the module docstring): a tracked
        frame's memory beyond ``num_maskmem - 1`` frames of every anchor (the last processed frame and
        the object's conditioning frames), its pointer beyond ``max_object_pointers_in_encoder``."""
        cfg = self.tracker.config
        window, pointer_window = cfg.num_maskmem - 1, cfg.max_object_pointers_in_encoder
        for state in session.objects.values():
            anchors = [session.head, *state.cond]
            for frame, stored in list(state.non_cond.items()):
                distance = min(abs(frame - a) for a in anchors if a is not None)
                if distance > pointer_window:
                    del state.non_cond[frame]
                elif distance > window:
                    stored.memory = None

    @staticmethod
    def _check_frame(session: VideoSession, frame: Any, name: str) -> None:
        if not isinstance(frame, (int, np.integer)) or isinstance(frame, bool):
            raise ValueError(f"{name} must be a frame index (int), got {frame!r}")
        if not 0 <= frame < session.num_frames:
            raise ValueError(f"{name}={frame} is past the end: the video has {session.num_frames} frames")


def _floats(name: str, value: Any) -> torch.Tensor:
    try:
        t = torch.as_tensor(np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value), dtype=torch.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numbers, got {type(value).__name__}") from err
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t
