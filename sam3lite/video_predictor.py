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

from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .modeling.detector import NO_TRACKER_MESSAGE, Sam3Detector
from .modeling.tracker.memory_selection import gather_memory, select_memory
from .modeling.tracker.model import TrackerImageFeatures, TrackStepOutput
from .objects import POINT_LABELS
from .predictor import Predictor
from .processing.images import ImageSettings, preprocess_images
from .processing.mask_cleanup import clean_masks, mask_nms
from .processing.rle import masks_to_rle
from .processing.video import StreamFrames, VideoFrames, open_video
from .video_text import FrameDetections, TextTracks, TextTrackSettings, resolve_overlaps

BOX_LABELS = (2, 3)  # a box travels as its two corners labelled 2 (top-left) and 3 (bottom-right)
_FEATURES_KEPT = 2  # frames whose tracker features stay cached (interactive prompts on one frame)


@dataclass
class FrameResult:
    """Every object on one frame.

    frame: index in the video. object_ids: the objects (in the order they were added; with text
    prompts, ascending ids, objects with no pixels on this frame left out). masks: bool [N, H, W] at
    the video's size. scores: float32 [N]: for a click/box/mask object, the probability it is visible
    (sigmoid of its object score); for an object found by text, its detection score when it was found.
    logits: float32 [N, 1, h, w] low-res mask logits. phrases: [N] the phrase that found each object
    (None for objects given by clicks, boxes or masks).
    """

    frame: int
    object_ids: list[int]
    masks: torch.Tensor
    scores: torch.Tensor
    logits: torch.Tensor
    phrases: list[str | None] = field(default_factory=list)

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
class _TrackedFrame:
    """One frame's tracker answers, before memories are encoded.

    ids: every object (session order); low_res: [N, 1, h, w] mask logits; score_logits: [N] object scores.
    computed: object -> row of ``out`` for the objects run through the tracker now (the others answered
    from a conditioning frame); stored: their new records; prompted: objects prompted on this frame.
    """

    frame: int
    features: TrackerImageFeatures
    ids: list[int]
    low_res: torch.Tensor
    score_logits: torch.Tensor
    computed: dict[int, int]
    out: TrackStepOutput | None
    stored: dict[int, _Stored]
    prompted: list[int]


@dataclass
class _TextFrame:
    """A frame's outputs before the hot-start window decides what shows: ids ascending, low-res logits
    [N, h, w], scores [N] (detection score at birth, or the visibility of click objects), probs [N]
    (tracker score on this frame, which decides overlaps), hidden (objects not shown on this frame)."""

    frame: int
    ids: list[int]
    low_res: torch.Tensor
    scores: torch.Tensor
    probs: torch.Tensor
    hidden: set[int]


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
    reverse: bool = False  # the direction of the last pass
    text_head: int | None = None  # the last frame a detect-and-track pass reached (text prompts)
    offload: str | None = None
    text: TextTracks | None = None  # phrases and detect-and-track state (text prompts)

    @property
    def num_frames(self) -> int:
        """Frames of the video (of a stream: frames received so far)."""
        return len(self.frames)

    @property
    def streaming(self) -> bool:
        """True for a session fed frame by frame with ``VideoPredictor.step``."""
        return isinstance(self.frames, StreamFrames)

    @property
    def phrases(self) -> list[str]:
        return [] if self.text is None else list(self.text.phrases)

    @property
    def video_size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        return self.frames.size

    @property
    def object_ids(self) -> list[int]:
        return list(self.objects)


class VideoPredictor:
    """Tracks objects through a video with SAM3's tracker: objects given by clicks, boxes or masks, and
    every instance of noun phrases (text prompts: SAM3's detector finds them on every frame).

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
        self._texts = Predictor(self.model, text_cache_size=64)  # tokenizer + text features cache

    # ------------------------------------------------------------------------------------------
    # Session
    # ------------------------------------------------------------------------------------------

    def start(
        self,
        video: Any = None,
        text: str | Sequence[str] | None = None,
        offload: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> VideoSession:
        """A session on ``video``: a file (mp4/mov/webm/avi... through PyAV), a folder of frames, or a
        sequence of frames (arrays [H, W, 3] uint8, PIL images, paths). Nothing is decoded yet but the
        first frame (its size). ``video=None`` starts a stream: feed frames with ``step``.

        Args:
            text: noun phrase(s) whose every instance is tracked (more with ``add_text``).
            settings: detect-and-track thresholds overriding the checkpoint's video config, by
                ``TextTrackSettings`` field name (e.g. ``{"new_det_thresh": 0.6, "hotstart_delay": 0}``).
        """
        frames = StreamFrames() if video is None else open_video(video)
        session = VideoSession(frames=frames, offload=offload or self.offload)
        if text is not None or settings is not None:
            session.text = TextTracks(TextTrackSettings.from_config(self.model.video_config, settings))
        for phrase in [text] if isinstance(text, str) else list(text or []):
            self.add_text(session, phrase)
        if text is not None and not session.phrases:
            raise ValueError("text is an empty list: give a noun phrase such as 'person'")
        return session

    def add_text(self, session: VideoSession, text: str) -> None:
        """Track every instance of the noun phrase ``text`` (from the next frame processed). A session may
        hold several phrases: they are detected together, one image encoding per frame; each object
        keeps the phrase that found it."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text must be a non-empty noun phrase (e.g. 'person'), got {text!r}")
        if session.text is None:
            session.text = TextTracks(TextTrackSettings.from_config(self.model.video_config))
        session.text.add_phrase(text.strip())

    def reset(self, session: VideoSession) -> None:
        """Forget every object and prompt (the video and the session's settings stay)."""
        session.objects.clear()
        session.new_inputs.clear()
        session.features.clear()
        session.head = session.text_head = None
        if session.text is not None:
            session.text = TextTracks(session.text.settings)

    def remove_object(self, session: VideoSession, obj_id: int) -> None:
        if obj_id not in session.objects:
            raise KeyError(f"no object {obj_id} in this session (objects: {session.object_ids})")
        del session.objects[obj_id]
        session.new_inputs = [o for o in session.new_inputs if o != obj_id]
        if session.text is not None:
            session.text.forget(obj_id)

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
        """Every frame from ``start`` to the end, or to the first frame with ``reverse``, ``start``
        included. A generator: stop it any time, add a correction, and continue with another call.

        ``start`` defaults to the earliest prompted frame, or with text prompts to the first frame (the
        last one with ``reverse``). With text prompts, results come ``hotstart_delay`` frames late (all
        at the end of the video at the latest): an object found on a frame may still be removed as a
        false start within that window, and is then never shown.
        """
        if session.streaming:
            raise ValueError("this session is a stream: give it frames one by one with step(session, frame)")
        if session.phrases:
            yield from self._propagate_text(session, start, reverse)
            return
        if not session.objects:
            raise ValueError(
                "nothing to track: add an object with add_object(session, frame, obj_id, ...) or a phrase with "
                "add_text(session, 'person') first"
            )
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

    def _propagate_text(self, session: VideoSession, start: int | None, reverse: bool) -> Iterator[FrameResult]:
        """Detect and track on every frame; outputs held back ``hotstart_delay`` frames (see ``propagate``)."""
        if start is None:
            start = session.num_frames - 1 if reverse else 0
        self._check_frame(session, start, "start")
        self._check_text_pass(session, start, reverse)
        order = range(start, -1, -1) if reverse else range(start, session.num_frames)
        delay = session.text.settings.hotstart_delay  # type: ignore[union-attr]
        session.reverse = reverse
        held: deque[_TextFrame] = deque()
        for frame in order:
            with torch.inference_mode():
                held.append(self._text_frame(session, frame, reverse, streaming=False))
                while len(held) >= max(delay, 1):
                    yield self._show(session, held.popleft())
        with torch.inference_mode():
            while held:
                yield self._show(session, held.popleft())

    @staticmethod
    def _check_text_pass(session: VideoSession, start: int, reverse: bool) -> None:
        """A detect-and-track pass keeps only the memories its own direction reads on (``_forget``), so
        after one has run, only its continuation is exact: the same direction, from beyond its last frame."""
        head = session.text_head
        if head is None:
            return
        if reverse != session.reverse or (start - head) * (-1 if reverse else 1) <= 0:
            direction = "reverse" if session.reverse else "forward"
            raise ValueError(
                f"this text session already ran a {direction} pass to frame {head}, whose memories of earlier "
                f"frames are gone: continue it with propagate(session, start={head + (-1 if session.reverse else 1)}"
                f"{', reverse=True' if session.reverse else ''}), or call reset(session) to start over"
            )

    @torch.inference_mode()
    def step(self, session: VideoSession, frame: Any) -> FrameResult:
        """Streaming: take the next frame (array [H, W, 3] uint8, PIL image, path...) of a session started
        with ``start(None, text=...)``, and return its objects at once.

        Objects are found and tracked as in ``propagate`` but nothing is held back, so no object is
        removed as a false start (the hot-start rules need future frames). Click/box/mask objects may be
        added with ``add_object`` on the frame just given.
        """
        if not session.streaming:
            raise ValueError("step() feeds a stream (start(None, text=...)); this session reads a video: use propagate")
        index = session.frames.append(frame)  # type: ignore[attr-defined]
        if session.phrases:
            return self._show(session, self._text_frame(session, index, reverse=False, streaming=True))
        if not session.objects:
            height, width = session.video_size
            empty = torch.zeros(0)
            return FrameResult(
                index, [], torch.zeros(0, height, width, dtype=torch.bool), empty, empty.view(0, 1, 0, 0)
            )
        return self._run(session, index, reverse=False)

    # ------------------------------------------------------------------------------------------
    # One frame
    # ------------------------------------------------------------------------------------------

    def _run(self, session: VideoSession, frame: int, reverse: bool) -> FrameResult:
        """Every object on ``frame``: cached answers of conditioning frames, one batch for the rest."""
        step = self._track(session, frame, reverse, self._features(session, frame))
        if step.out is not None:
            # As the reference: every object's memory mask is binarized when any object was prompted on this frame.
            computed = list(step.computed)
            binarize = torch.full((len(computed),), bool(step.prompted), device=step.low_res.device)
            self._remember(session, step, computed, step.out.high_res_masks, step.out.object_score_logits, binarize)
        session.head = frame
        self._forget(session)
        scores = step.score_logits.float().sigmoid()
        masks = self._video_masks(step.low_res, session.video_size)
        return FrameResult(
            frame=frame,
            object_ids=step.ids,
            masks=masks.cpu(),
            scores=scores.cpu(),
            logits=step.low_res.float().cpu(),
            phrases=[None] * len(step.ids),
        )

    def _text_frame(self, session: VideoSession, frame: int, reverse: bool, streaming: bool) -> _TextFrame:
        """Detect and track on one frame (the rules are ``video_text``'s, in transformers' order): one ViT
        pass for the detector and the tracker, association, births, hot start, occlusion, reconditioning,
        memories; returns the frame's outputs before the hot-start window decides what shows."""
        text: TextTracks = session.text  # type: ignore[assignment]
        settings = text.settings
        vision = self.model.get_vision_features(self._pixels(session, frame))
        features = self._cache_features(session, frame, self.model.get_tracker_features(vision))
        detections = self._detect(session, vision)
        step = self._track(session, frame, reverse, features)
        row = {obj: i for i, obj in enumerate(step.ids)}
        tracks = [obj for obj in step.ids if obj in text.phrase_of]
        rows = torch.tensor([row[obj] for obj in tracks], dtype=torch.long, device=step.low_res.device)
        masks = clean_masks(step.low_res[rows, 0], settings.fill_hole_area)  # [M, h, w], a copy
        logits = step.score_logits[rows]

        assoc = text.associate(detections, masks, tracks)
        picked = text.admit(assoc.new, detections.scores, len(session.objects))
        born = text.new_ids(len(picked), list(session.objects))
        for obj, d in zip(born, picked, strict=True):
            text.phrase_of[obj], text.score_of[obj] = int(detections.phrases[d]), float(detections.scores[d])
        removed = text.hotstart(frame, reverse, streaming, assoc, born)
        hidden = text.hidden(removed)
        recondition = text.recondition_targets(frame, assoc, tracks, logits)
        text.suppress_occluded(frame, reverse, masks, tracks, removed)
        self._update_memories(session, step, detections, tracks, masks, recondition, picked, born)
        for obj in removed:
            self.remove_object(session, obj)
        text.count(born=born, recondition=recondition, assoc=assoc)

        # Outputs: tracks as cleaned and suppressed; newborns and reconditioned tracks as detected.
        out_masks = {obj: m for obj, m in zip(tracks, masks, strict=True) if obj not in removed}
        out_masks.update((obj, clean_masks(detections.mask_logits[[d]], settings.fill_hole_area)[0])
                         for obj, d in zip(born, picked, strict=True))  # fmt: skip
        out_masks.update((obj, detections.mask_logits[d]) for obj, d in recondition.items())
        probs = dict(zip(step.ids, step.score_logits.sigmoid().tolist(), strict=True))
        scores = {obj: text.score_of[obj] if obj in text.phrase_of else probs[obj] for obj in step.ids}
        for obj in born:
            probs[obj] = scores[obj] = text.score_of[obj]
        for obj in step.ids:
            if obj not in text.phrase_of and obj not in removed:
                out_masks[obj] = step.low_res[row[obj], 0]
        ids = sorted(out_masks)
        session.head = session.text_head = frame
        self._forget(session)
        return _TextFrame(
            frame=frame,
            ids=ids,
            low_res=torch.stack([out_masks[o].float() for o in ids]) if ids else step.low_res.new_zeros(0, 1, 1),
            scores=torch.tensor([scores[o] for o in ids], dtype=torch.float32),
            probs=torch.tensor([probs[o] for o in ids], dtype=torch.float32),
            hidden=hidden,
        )

    def _update_memories(
        self,
        session: VideoSession,
        step: _TrackedFrame,
        detections: FrameDetections,
        tracks: list[int],
        masks: torch.Tensor,
        recondition: dict[int, int],
        picked: list[int],
        born: list[int],
    ) -> None:
        """Memories of the frame, in one batch, with what the reference's encoder reads for each object:

        - tracks of phrases: their cleaned, suppressed masks with overlaps resolved (the detection's mask
          instead for ``recondition_on_trk_masks=False``), object score +-10 by area, sigmoid. A
          reconditioned track's frame becomes a conditioning frame of its object.
        - on a frame where objects are born, every object tracked on it that is not (now) conditioned on
          it reads its raw tracked mask, binarized, instead (the reference re-runs those objects together
          with the newborns, whose masks are prompts);
        - newborns: the detection's mask (>= 0.5) as a mask prompt on a new conditioning frame;
        - click/box/mask objects: their raw mask, binarized if any object was prompted on the frame.
        """
        text: TextTracks = session.text  # type: ignore[assignment]
        frame, size = step.frame, 4 * self.tracker.config.mask_input_size
        memory_in = masks[:, None].clone()
        for obj, d in recondition.items():
            state, i = session.objects[obj], tracks.index(obj)
            if not text.settings.recondition_on_trk_masks:
                memory_in[i, 0] = (detections.mask_logits[d] >= 0.5).to(memory_in.dtype)
            if frame in state.non_cond:
                stored = state.non_cond.pop(frame)
                stored.low_res, stored.score = (
                    step.low_res[step.ids.index(obj)],
                    float(step.score_logits[step.ids.index(obj)]),
                )
                state.cond[frame] = stored
        if tracks:
            memory_in = text.memory_masks(memory_in, tracks)
        entries: list[tuple[_Stored, torch.Tensor, torch.Tensor, bool]] = []
        prompted = bool(step.prompted) or bool(born)
        for obj in step.ids:
            state = session.objects[obj]
            if obj in step.stored and (obj not in text.phrase_of or (born and frame not in state.cond)):
                i = step.computed[obj]
                out = step.out  # type: ignore[union-attr]
                entries.append((step.stored[obj], out.high_res_masks[i], out.object_score_logits[i], prompted))
            elif obj in text.phrase_of:
                m = memory_in[tracks.index(obj)]
                score = torch.where((m > 0).any(), 10.0, -10.0).view(1)
                entries.append((step.stored[obj] if obj in step.stored else state.cond[frame], m, score, False))
        if born:
            prompts = detections.mask_logits[picked] >= 0.5  # [n, h, w] bool, a mask prompt each
            for obj in born:
                session.objects[obj] = _Object()
            todo = [(obj, True, None, prompts[k], False) for k, obj in enumerate(born)]
            out, records = self._compute(session, frame, todo, step.features)
            for k, obj in enumerate(born):
                entries.append((records[obj], out.high_res_masks[k], out.object_score_logits[k], True))
        if not entries:
            return
        resized = [
            m[None] if m.shape[-1] == size else F.interpolate(
                m[None].float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
            ).to(m.dtype)
            for _, m, _, _ in entries
        ]  # fmt: skip
        dtype = step.features.pixel_features.dtype
        encoded = self.tracker.encode_memory(
            step.features,
            torch.cat([r.to(dtype) for r in resized]),
            torch.stack([sc.to(dtype) for _, _, sc, _ in entries]),
            torch.tensor([b for *_, b in entries], device=resized[0].device),
        )
        keep = "cpu" if session.offload == "cpu" else self.model.device
        for i, (stored, *_) in enumerate(entries):
            stored.memory = encoded[i].to(keep)

    def _detect(self, session: VideoSession, vision: Any) -> FrameDetections:
        """Every phrase's detections on a frame, in one batch (phrases x one image encoding)."""
        text: TextTracks = session.text  # type: ignore[assignment]
        settings = text.settings
        found = self.model.detect(
            vision, self._texts.text_features(text.phrases), threshold=settings.score_threshold_detection
        )
        parts = []
        for phrase, det in enumerate(found):
            if settings.det_nms_thresh > 0 and len(det.scores) > 1:
                keep = mask_nms(det.scores, det.mask_logits, settings.det_nms_thresh)
                det = type(det)(det.scores[keep], det.boxes[keep], det.mask_logits[keep])
            parts.append((det, torch.full_like(det.scores, phrase, dtype=torch.long)))
        return FrameDetections(
            mask_logits=torch.cat([d.mask_logits for d, _ in parts]),
            scores=torch.cat([d.scores.float() for d, _ in parts]),
            boxes=torch.cat([d.boxes.float() for d, _ in parts]),
            phrases=torch.cat([p for _, p in parts]),
        )

    def _show(self, session: VideoSession, held: _TextFrame) -> FrameResult:
        """What a frame shows (transformers' post-processing): objects removed by now, or hidden on the
        frame, left out; objects of a phrase with no pixel left out; where objects of one phrase overlap,
        the pixel goes to the highest tracker score."""
        text: TextTracks = session.text  # type: ignore[assignment]
        keep = [i for i, obj in enumerate(held.ids) if obj not in text.removed and obj not in held.hidden]
        ids = [held.ids[i] for i in keep]
        masks = self._video_masks(held.low_res[keep][:, None], session.video_size)
        if masks.shape[0]:
            masks = masks.cpu()
            shown = [i for i, obj in enumerate(ids) if obj not in text.phrase_of or bool(masks[i].any())]
            ids, keep, masks = [ids[i] for i in shown], [keep[i] for i in shown], masks[shown]
        phrase_rows = [i for i, obj in enumerate(ids) if obj in text.phrase_of]
        if len(phrase_rows) > 1:
            groups = [text.phrase_of[ids[i]] for i in phrase_rows]
            masks[phrase_rows] = resolve_overlaps(
                masks[phrase_rows], held.probs[[keep[i] for i in phrase_rows]], groups
            )
        return FrameResult(
            frame=held.frame,
            object_ids=ids,
            masks=masks.cpu(),
            scores=held.scores[keep],
            logits=held.low_res[keep][:, None].cpu(),
            phrases=[text.phrases[text.phrase_of[o]] if o in text.phrase_of else None for o in ids],
        )

    @staticmethod
    def _video_masks(low_res: torch.Tensor, video_size: tuple[int, int]) -> torch.Tensor:
        """Low-res logits [N, 1, h, w] -> bool masks [N, H, W] at the video's size."""
        if low_res.shape[0] == 0:
            return torch.zeros(0, *video_size, dtype=torch.bool)
        return F.interpolate(low_res.float(), size=video_size, mode="bilinear", align_corners=False)[:, 0] > 0

    def _track(self, session: VideoSession, frame: int, reverse: bool, features: TrackerImageFeatures) -> _TrackedFrame:
        """Every object on ``frame``, without encoding memories: conditioning frames answer from their
        stored output, the other objects go through the tracker in one batch (their object pointers are
        stored now, their memories by ``_remember``)."""
        cached: dict[int, tuple[torch.Tensor, float]] = {}
        todo: list[tuple[int, bool, tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None, bool]] = []
        prompted: list[int] = []
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
                    prompted.append(obj_id)
            todo.append((obj_id, initial, points, mask, backwards))
        out, stored = self._compute(session, frame, todo, features) if todo else (None, {})
        ids = list(session.objects)
        device = self.model.device
        rows = {obj_id: i for i, (obj_id, *_) in enumerate(todo)}
        low_res, logits = [], []
        for obj_id in ids:
            if obj_id in cached:
                low_res.append(cached[obj_id][0].to(device))
                logits.append(torch.tensor(cached[obj_id][1], device=device))
            else:
                low_res.append(out.low_res_masks[rows[obj_id]])  # type: ignore[union-attr]
                logits.append(out.object_score_logits[rows[obj_id], 0])  # type: ignore[union-attr]
        size = self.tracker.config.mask_input_size
        return _TrackedFrame(
            frame=frame,
            features=features,
            ids=ids,
            low_res=torch.stack(low_res) if ids else torch.zeros(0, 1, size, size, device=device),
            score_logits=torch.stack(logits).float() if ids else torch.zeros(0, device=device),
            computed=rows,
            out=out,
            stored=stored,
            prompted=prompted,
        )

    def _compute(
        self, session: VideoSession, frame: int, todo: list, features: TrackerImageFeatures
    ) -> tuple[TrackStepOutput, dict[int, _Stored]]:
        """Track ``todo``'s objects on ``frame`` in one batch; store their object pointers (and, on initial
        conditioning frames, the answer itself); return the output and each object's new record."""
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
        out = self.tracker.track_step(
            features,
            memories,
            points=[None if p is None else p[0].to(device) for _, _, p, _, _ in todo],
            labels=[None if p is None else p[1].to(device) for _, _, p, _, _ in todo],
            mask_inputs=[None if m is None else m.to(device) for _, _, _, m, _ in todo],
            multimask=[self.tracker.use_multimask(0 if p is None else len(p[1]), init) for _, init, p, _, _ in todo],
        )
        keep = "cpu" if session.offload == "cpu" else device
        records = {}
        for i, (obj_id, initial, _, _, _) in enumerate(todo):
            state = session.objects[obj_id]
            stored = records[obj_id] = _Stored(pointer=out.object_pointer[i].to(keep), memory=None)
            if initial:
                stored.low_res, stored.score = out.low_res_masks[i].to(keep), float(out.object_score_logits[i, 0])
                state.cond[frame] = stored
            else:
                state.non_cond[frame] = stored
                state.tracked.add(frame)
        return out, records

    def _remember(
        self,
        session: VideoSession,
        step: _TrackedFrame,
        ids: list[int],
        masks: torch.Tensor,
        score_logits: torch.Tensor,
        binarize: torch.Tensor,
    ) -> None:
        """Encode the memories of ``ids`` on ``step``'s frame from their masks [B, 1, H, W] (logits), object
        score logits [B, 1] and binarize flags [B]; store each in the object's output of that frame."""
        encoded = self.tracker.encode_memory(step.features, masks, score_logits, binarize)
        keep = "cpu" if session.offload == "cpu" else self.model.device
        for i, obj_id in enumerate(ids):
            # This step's record of the object, else (an object answered from a conditioning frame) that one.
            stored = step.stored[obj_id] if obj_id in step.stored else session.objects[obj_id].cond[step.frame]
            stored.memory = encoded[i].to(keep)

    def _features(self, session: VideoSession, frame: int) -> TrackerImageFeatures:
        """Tracker features of ``frame``: decoded, resized and encoded now unless still cached."""
        if frame in session.features:
            session.features.move_to_end(frame)
            return session.features[frame]
        return self._cache_features(
            session, frame, self.model.get_tracker_features_from_pixels(self._pixels(session, frame))
        )

    def _pixels(self, session: VideoSession, frame: int) -> torch.Tensor:
        """Frame ``frame`` as the model's input [1, 3, S, S]."""
        pixels, _ = preprocess_images(session.frames[frame], self.image_settings)
        return pixels.to(self.model.device, self.model.dtype)

    @staticmethod
    def _cache_features(session: VideoSession, frame: int, features: TrackerImageFeatures) -> TrackerImageFeatures:
        session.features[frame] = features
        session.features.move_to_end(frame)
        while len(session.features) > _FEATURES_KEPT:
            session.features.popitem(last=False)
        return features

    def _forget(self, session: VideoSession) -> None:
        """Drop the memories and pointers no later step can read (see the module docstring): a tracked
        frame's memory beyond ``num_maskmem - 1`` frames of every anchor (the last processed frame and
        the object's conditioning frames), its pointer beyond ``max_object_pointers_in_encoder``.

        Text sessions run one direction per pass and gain a conditioning frame per object every
        ``recondition_every_nth_frame`` frames, so there the anchors are the head and the conditioning
        frames still ahead of it, and a conditioning frame behind the head with ``max_cond_frame_num``
        others between it and the head (which any later frame reads first) keeps only its pointer.
        """
        cfg = self.tracker.config
        window, pointer_window = cfg.num_maskmem - 1, cfg.max_object_pointers_in_encoder
        head, sign = session.head, -1 if session.reverse else 1
        for state in session.objects.values():
            anchors = [head, *state.cond]
            if session.text is not None and head is not None and cfg.max_cond_frame_num >= 0:
                anchors = [head, *(c for c in state.cond if (c - head) * sign >= 0)]
                behind = sorted((c for c in state.cond if (c - head) * sign <= 0), key=lambda c: abs(c - head))
                for c in behind[cfg.max_cond_frame_num :]:
                    if abs(c - head) > window:
                        state.cond[c].memory = None
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
