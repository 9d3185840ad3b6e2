"""Detect-and-track rules of text-prompted video (SAM3's ``sam3_video`` loop), as plain functions on tensors.

Per frame (``VideoPredictor`` runs the networks; this module decides):

1. the detector finds every instance of each phrase (one ViT pass per frame serves it and the tracker);
2. the tracker carries every known object to the frame (``TrackedFrame``);
3. ``associate``: detections and tracks of the same phrase are matched by mask IoU; a confident
   detection that matches no track starts a new object (``admit``);
4. ``hotstart``: objects born within the last ``hotstart_delay`` frames that went unmatched, or
   duplicated an older object, on too many frames are removed (offline only: the outputs are held back
   by ``hotstart_delay`` frames so that removed objects never show); keep-alive counters;
5. ``suppress_occluded``: of two overlapping tracks of one phrase, the one occluded more recently is
   blanked; ``recondition_targets``: every ``recondition_every_nth_frame`` frames, tracks matched by a
   confident detection become conditioning frames of their object;
6. ``memory_masks``: the masks the memory encoder reads (pixel-wise overlaps resolved, tracks that
   would shrink below 30% blanked);
7. ``postprocess``: what a frame shows (removed and empty objects hidden, overlaps resolved by score).

The thresholds are ``TextTrackSettings``, read from the checkpoint's ``Sam3VideoConfig`` (transformers'
defaults) and overridable per session. Rules and their order follow transformers' ``Sam3VideoModel``,
so results match it (with NMS and mask clean-up off there: it skips them without its kernel package).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from .modeling.video_config import Sam3VideoConfig
from .processing.mask_cleanup import mask_iou

NEVER_OCCLUDED, ALWAYS_OCCLUDED = -1, 100000  # last-occluded frame of a track never / always occluded
SUPPRESSED_LOGIT = -10.0  # mask logit of a blanked track
SHRINK_KEEP = 0.3  # a track keeping less than this share of its pixels after overlaps are resolved is blanked
REMOVED_SCORE = -1e4
# What ``TextTracks.stats`` counts: objects born, frames with births, track-frames matched / unmatched by a
# detection, reconditionings, objects removed as unmatched / as duplicates.
STAT_NAMES = (
    "births",
    "birth_frames",
    "matched",
    "unmatched",
    "reconditioned",
    "removed_unmatched",
    "removed_duplicate",
)


@dataclass(frozen=True)
class TextTrackSettings:
    """Detect-and-track thresholds (the fields of ``Sam3VideoConfig``; defaults = transformers').

    score_threshold_detection: detections below this score are ignored.
    det_nms_thresh: mask-IoU NMS of each phrase's detections (0 = off).
    assoc_iou_thresh: a detection matches a track at this mask IoU (and then starts no new object).
    trk_assoc_iou_thresh: a track counts as matched (alive) at this mask IoU with a detection.
    new_det_thresh: an unmatched detection starts a new object from this score.
    hotstart_delay: frames the outputs are held back, during which a new object may still be removed.
    hotstart_unmatch_thresh / hotstart_dup_thresh: unmatched / duplicate frames that remove a new object.
    suppress_unmatched_only_within_hotstart: False also hides old objects whose keep-alive runs out.
    init_trk_keep_alive, max_trk_keep_alive, min_trk_keep_alive: keep-alive counter start and bounds.
    decrease_trk_keep_alive_for_empty_masklets: empty tracks count down too.
    suppress_overlapping_based_on_recent_occlusion_threshold: mask IoU at which the more recently
        occluded of two tracks is blanked (0 = off).
    fill_hole_area: holes and specks up to this many pixels (low-res mask) are cleaned (0 = off).
    max_num_objects: objects at most; the best new detections are kept.
    recondition_every_nth_frame: period of reconditioning (0 = never); recondition_on_trk_masks: the
        track's own mask (True) or the detection's (False) becomes the conditioning memory.
    high_conf_thresh / high_iou_thresh: detection score / IoU needed to recondition a track.
    """

    score_threshold_detection: float
    det_nms_thresh: float
    assoc_iou_thresh: float
    trk_assoc_iou_thresh: float
    new_det_thresh: float
    recondition_on_trk_masks: bool
    hotstart_delay: int
    hotstart_unmatch_thresh: int
    hotstart_dup_thresh: int
    suppress_unmatched_only_within_hotstart: bool
    init_trk_keep_alive: int
    max_trk_keep_alive: int
    min_trk_keep_alive: int
    suppress_overlapping_based_on_recent_occlusion_threshold: float
    decrease_trk_keep_alive_for_empty_masklets: bool
    fill_hole_area: int
    max_num_objects: int
    recondition_every_nth_frame: int
    high_conf_thresh: float
    high_iou_thresh: float

    @classmethod
    def from_config(cls, config: Any = None, overrides: Mapping[str, Any] | None = None) -> TextTrackSettings:
        """Settings of a ``Sam3VideoConfig`` (or defaults for None), with ``overrides`` by field name."""
        names = [f.name for f in fields(cls)]
        defaults = Sam3VideoConfig()  # the one home of the defaults: the checkpoint's video config
        values = {n: getattr(config if hasattr(config, n) else defaults, n) for n in names}
        settings = cls(**values)
        if overrides:
            unknown = sorted(set(overrides) - set(names))
            if unknown:
                raise ValueError(f"unknown tracking settings {unknown}; known: {', '.join(names)}")
            settings = replace(settings, **dict(overrides))
        settings.validate()
        return settings

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"{f.name} must be True or False, got {value!r}")
            elif f.type == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{f.name} must be an int, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{f.name} must be a number in [0, 1], got {value!r}")
        for name in ("hotstart_delay", "hotstart_unmatch_thresh", "hotstart_dup_thresh", "fill_hole_area"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_num_objects < 1:
            raise ValueError(f"max_num_objects must be >= 1, got {self.max_num_objects}")


@dataclass
class FrameDetections:
    """Every phrase's detections on one frame, phrase after phrase.

    mask_logits: [D, h, w] low-res logits; scores: [D] probabilities; boxes: [D, 4] normalised xyxy;
    phrases: [D] long, index of the phrase that found each.
    """

    mask_logits: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor
    phrases: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass
class Association:
    """How one frame's detections and tracks match.

    new: detections that start objects; unmatched: non-empty tracks no detection matched; empty: tracks
    with an empty mask; matches: per detection, the tracks it matches (many tracks may share one);
    recondition: track -> the confident detection that may recondition it.
    """

    new: list[int]
    unmatched: list[int]
    empty: list[int]
    matches: dict[int, list[int]]
    recondition: dict[int, int]


@dataclass
class TextTracks:
    """One session's detect-and-track state: phrases, which object came from which, hot-start counters.

    Only counters are kept per object (never per-frame lists), so the state is flat in the video's length.
    """

    settings: TextTrackSettings
    phrases: list[str] = field(default_factory=list)
    phrase_of: dict[int, int] = field(default_factory=dict)  # object -> phrase index
    score_of: dict[int, float] = field(default_factory=dict)  # detection score at birth
    first_frame: dict[int, int] = field(default_factory=dict)
    unmatched: dict[int, int] = field(default_factory=dict)  # frames a track went unmatched
    overlaps: dict[tuple[int, int], int] = field(default_factory=dict)  # (older, newer) -> frames shared
    keep_alive: dict[int, int] = field(default_factory=dict)
    last_occluded: dict[int, int] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)
    next_id: int = 0
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAT_NAMES, 0))

    def add_phrase(self, phrase: str) -> int:
        """Index of ``phrase`` (added when new)."""
        if phrase not in self.phrases:
            self.phrases.append(phrase)
        return self.phrases.index(phrase)

    # ------------------------------------------------------------------------------------------
    # Association and birth
    # ------------------------------------------------------------------------------------------

    def associate(
        self, detections: FrameDetections, track_masks: torch.Tensor, track_ids: Sequence[int]
    ) -> Association:
        """Match detections with tracks (mask logits [M, h, w] of ``track_ids``) by mask IoU, phrase by phrase."""
        s = self.settings
        det_masks = detections.mask_logits > 0
        trk_masks = track_masks > 0
        ids = list(track_ids)
        if not ids:
            # With no track at all, every detection above the detection threshold starts an object.
            return Association(list(range(len(detections))), [], [], {}, {})
        nonempty = trk_masks.flatten(1).any(1).tolist()
        if len(detections) == 0:
            unmatched = [o for o, n in zip(ids, nonempty, strict=True) if n]
            return Association([], unmatched, [o for o, n in zip(ids, nonempty, strict=True) if not n], {}, {})
        trk_phrases = torch.tensor([self.phrase_of[o] for o in ids], device=det_masks.device)
        ious = mask_iou(det_masks, trk_masks)
        ious = torch.where(detections.phrases.to(det_masks.device)[:, None] == trk_phrases[None], ious, 0.0)
        matched = (ious >= s.trk_assoc_iou_thresh).any(0).tolist()
        unmatched = [o for o, n, m in zip(ids, nonempty, matched, strict=True) if n and not m]
        empty = [o for o, n in zip(ids, nonempty, strict=True) if not n]
        scores = detections.scores.float().to(ious.device)
        hits = ious >= s.assoc_iou_thresh  # (D, M)
        is_new = (scores >= s.new_det_thresh) & ~hits.any(1)
        best_iou, best = ious.max(1)
        confident = (scores >= s.high_conf_thresh) & ~is_new & (best_iou >= s.high_iou_thresh)
        matches = {d: [ids[j] for j in row.nonzero().flatten().tolist()] for d, row in enumerate(hits)}
        recondition: dict[int, int] = {}
        for d in confident.nonzero().flatten().tolist():
            recondition[ids[int(best[d])]] = d  # a later detection overrides an earlier one
        return Association(is_new.nonzero().flatten().tolist(), unmatched, empty, matches, recondition)

    def admit(self, candidates: list[int], scores: torch.Tensor, num_objects: int) -> list[int]:
        """The detections that become objects: ``candidates``, or the best-scoring ones when they would exceed
        ``max_num_objects`` next to the ``num_objects`` already tracked (best first, as the reference)."""
        room = max(self.settings.max_num_objects - num_objects, 0)
        if len(candidates) <= room:
            return list(candidates)
        picked = torch.topk(scores.float()[candidates], k=room).indices.tolist()
        return [candidates[i] for i in picked]

    def new_ids(self, count: int, taken: Sequence[int]) -> list[int]:
        """``count`` fresh object ids, after every id used so far (click objects' included)."""
        start = max(self.next_id, max(taken, default=-1) + 1)
        self.next_id = start + count
        return list(range(start, start + count))

    # ------------------------------------------------------------------------------------------
    # Hot start, keep-alive
    # ------------------------------------------------------------------------------------------

    def hotstart(self, frame: int, reverse: bool, streaming: bool, assoc: Association, born: list[int]) -> set[int]:
        """Update the counters with this frame's association; return the objects removed now.

        Offline, an object born after ``frame - hotstart_delay`` (before ``frame + hotstart_delay`` when
        reversed) is removed once unmatched on ``hotstart_unmatch_thresh`` frames, or once it has shared a
        detection with an older object on ``hotstart_dup_thresh`` frames. Streaming removes nothing (no
        future frames to hold outputs for) but keeps the counters.
        """
        s = self.settings
        for obj in born:
            self.first_frame.setdefault(obj, frame)
            self.keep_alive[obj] = s.init_trk_keep_alive
        for obj in {o for tracks in assoc.matches.values() for o in tracks}:
            self.keep_alive[obj] = min(s.max_trk_keep_alive, self.keep_alive[obj] + 1)
        for obj in assoc.unmatched:
            self.unmatched[obj] = self.unmatched.get(obj, 0) + 1
            self.keep_alive[obj] = max(s.min_trk_keep_alive, self.keep_alive[obj] - 1)
        if s.decrease_trk_keep_alive_for_empty_masklets:
            for obj in assoc.empty:
                self.keep_alive[obj] = max(s.min_trk_keep_alive, self.keep_alive[obj] - 1)
        for tracks in assoc.matches.values():
            if len(tracks) < 2:
                continue
            pick = max if reverse else min
            oldest = pick(tracks, key=lambda o: self.first_frame[o])
            for obj in tracks:
                if obj != oldest:
                    self.overlaps[(oldest, obj)] = self.overlaps.get((oldest, obj), 0) + 1
        removed: set[int] = set()
        if streaming:
            return removed
        boundary = frame + s.hotstart_delay if reverse else frame - s.hotstart_delay

        def recent(obj: int) -> bool:
            return self.first_frame[obj] < boundary if reverse else self.first_frame[obj] > boundary

        for obj, count in self.unmatched.items():
            if obj not in self.removed and count >= s.hotstart_unmatch_thresh and recent(obj):
                removed.add(obj)
        self.stats["removed_unmatched"] += len(removed)
        for (_, obj), count in self.overlaps.items():
            if obj not in self.removed and obj not in removed and recent(obj) and count >= s.hotstart_dup_thresh:
                removed.add(obj)
                self.stats["removed_duplicate"] += 1
        self.removed |= removed
        return removed

    def count(self, born: list[int], recondition: dict[int, int], assoc: Association) -> None:
        """Add one frame's events to ``stats``."""
        matched = {o for tracks in assoc.matches.values() for o in tracks}
        self.stats["births"] += len(born)
        self.stats["birth_frames"] += bool(born)
        self.stats["matched"] += len(matched)
        self.stats["unmatched"] += len(assoc.unmatched)
        self.stats["reconditioned"] += len(recondition)

    def hidden(self, removed_now: set[int]) -> set[int]:
        """Objects whose keep-alive ran out, hidden on this frame (only when
        ``suppress_unmatched_only_within_hotstart`` is False)."""
        if self.settings.suppress_unmatched_only_within_hotstart:
            return set()
        return {o for o in self.unmatched if self.keep_alive[o] <= 0 and o not in self.removed and o not in removed_now}

    # ------------------------------------------------------------------------------------------
    # Occlusion, reconditioning, memory masks
    # ------------------------------------------------------------------------------------------

    def recondition_targets(
        self, frame: int, assoc: Association, track_ids: Sequence[int], track_logits: torch.Tensor
    ) -> dict[int, int]:
        """track -> detection for the tracks reconditioned on this frame (every
        ``recondition_every_nth_frame`` frames: tracks matched by a confident detection whose own object
        score logit exceeds ``high_conf_thresh``)."""
        n = self.settings.recondition_every_nth_frame
        if n <= 0 or frame % n != 0 or not assoc.recondition:
            return {}
        rows = {o: i for i, o in enumerate(track_ids)}
        return {
            obj: det
            for obj, det in assoc.recondition.items()
            if float(track_logits[rows[obj]]) > self.settings.high_conf_thresh
        }

    def suppress_occluded(
        self, frame: int, reverse: bool, masks: torch.Tensor, track_ids: Sequence[int], removed_now: set[int]
    ) -> torch.Tensor:
        """Of two tracks of one phrase whose masks [M, h, w] overlap (IoU at the threshold), blank the one
        occluded more recently (logit -10, in place); record each track's last occluded frame. Returns the
        blanked tracks [M] bool."""
        threshold = self.settings.suppress_overlapping_based_on_recent_occlusion_threshold
        count = masks.shape[0]
        if count == 0 or threshold <= 0:
            self.last_occluded = {}
            return torch.zeros(count, dtype=torch.bool, device=masks.device)
        binary = masks > 0
        default = {o: ALWAYS_OCCLUDED if o in removed_now else NEVER_OCCLUDED for o in track_ids}
        last = torch.tensor([self.last_occluded.get(o, default[o]) for o in track_ids], device=masks.device)
        phrases = torch.tensor([self.phrase_of[o] for o in track_ids], device=masks.device)
        blank = torch.zeros(count, dtype=torch.bool, device=masks.device)
        later = torch.lt if reverse else torch.gt
        for phrase in phrases.unique().tolist():
            rows = (phrases == phrase).nonzero().flatten()
            if rows.numel() < 2:
                continue
            pairs = torch.triu(mask_iou(binary[rows], binary[rows]) >= threshold, diagonal=1)
            li, lj = last[rows][:, None], last[rows][None, :]
            blank_i = pairs & later(li, lj) & (lj > NEVER_OCCLUDED)
            blank_j = pairs & later(lj, li) & (li > NEVER_OCCLUDED)
            blank[rows] = blank_i.any(1) | blank_j.any(0)
        occluded = ~binary.flatten(1).any(1) | blank
        last = torch.where(occluded, frame, last)
        self.last_occluded = dict(zip(track_ids, last.tolist(), strict=True))
        masks[blank] = SUPPRESSED_LOGIT
        return blank

    def memory_masks(self, masks: torch.Tensor, track_ids: Sequence[int]) -> torch.Tensor:
        """Masks [M, 1, h, w] -> what the memory encoder reads: within each phrase, a track that keeps less
        than 30% of its pixels once every pixel goes to its highest-logit track is blanked (clamped to -10)."""
        out = masks.clone()
        phrases = torch.tensor([self.phrase_of[o] for o in track_ids])
        for phrase in phrases.unique().tolist():
            rows = (phrases == phrase).nonzero().flatten().to(masks.device)
            if rows.numel() > 1:
                out[rows] = _blank_shrunk(masks[rows])
        return out

    def forget(self, obj: int) -> None:
        """Drop a removed object's counters (its phrase and score stay: held-back frames may still name it).
        Its duplicate counts as the older object stay: they may still remove a newer one, as in the reference."""
        for table in (self.first_frame, self.unmatched, self.keep_alive, self.last_occluded):
            table.pop(obj, None)
        self.overlaps = {k: v for k, v in self.overlaps.items() if k[1] != obj}


def _blank_shrunk(masks: torch.Tensor) -> torch.Tensor:
    """[K, 1, h, w] logits: every pixel kept by its highest-logit mask only; masks left with < 30% of their
    area are clamped to -10 everywhere (the others are returned unchanged)."""
    winner = masks.argmax(0, keepdim=True)
    own = winner == torch.arange(masks.shape[0], device=masks.device)[:, None, None, None]
    exclusive = torch.where(own, masks, masks.clamp(max=SUPPRESSED_LOGIT))
    before = (masks > 0).sum((-1, -2)).clamp(min=1)
    after = (exclusive > 0).sum((-1, -2))
    keep = (after / before) >= SHRINK_KEEP
    return torch.where(keep[..., None, None], masks, masks.clamp(max=SUPPRESSED_LOGIT))


def resolve_overlaps(masks: torch.Tensor, scores: torch.Tensor, groups: Sequence[int]) -> torch.Tensor:
    """bool masks [N, H, W]: within each group, a pixel stays only with the highest-scoring mask covering it
    (ties: the first); masks with a score <= 0 keep nothing; scores [N]; groups [N] (e.g. phrase index).
    Returns bool [N, H, W].

    The masks of a group are visited best score first (a stable sort: ties keep their order), each keeping
    the pixels no better mask took: the same answer as an argmax of score-weighted masks over the group,
    with N boolean passes over the frame instead of a float argmax across masks (a strided reduction,
    several times slower at video size).
    """
    out = masks.clone()
    group_t = torch.tensor(list(groups))
    values = scores.float().cpu()
    for group in group_t.unique().tolist():
        rows = (group_t == group).nonzero().flatten().tolist()
        if len(rows) < 2:
            continue
        order = torch.sort(values[rows], descending=True, stable=True).indices.tolist()
        taken = torch.zeros_like(masks[0])
        for k in order:
            row = rows[k]
            if not values[row] > 0:
                out[row] = False
                continue
            out[row] = masks[row] & ~taken
            taken |= masks[row]
    return out
