"""Video part of the tracker against transformers' ``Sam3TrackerVideoModel`` on a short synthetic video.

Our side is driven by ``MirrorLoop``: a small test-side loop doing what a VideoPredictor does (per-object
prompts, memory bank, which frames each object reads), with the bookkeeping of transformers'
inference session mirrored exactly, but every frame's objects run through ``Sam3Tracker.track_step``
and ``encode_memory`` as one batch (transformers runs them one by one).

Weights: ``reference.randomize_`` (every parameter random) gives non-degenerate tracks on this tiny
model (masks cover part of the frame and differ between objects); the tests assert it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from reference import rel_err

from sam3lite.modeling.tracker import Sam3Tracker, TrackerImageFeatures, gather_memory, select_memory

SIZE = 224
NUM_FRAMES = 8
LOGIT_TOL = 1e-3
MIN_IOU = 0.999


def moving_shapes(num_frames: int = NUM_FRAMES, size: int = SIZE) -> torch.Tensor:
    """[T, 3, S, S] frames in [-1, 1]: a bright square moving right and a dark disc moving down on a
    smooth colour gradient."""
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    background = torch.stack((xs / size, ys / size, 1 - xs / size)) * 1.2 - 0.6
    frames = []
    for t in range(num_frames):
        frame = background.clone()
        x0, y0 = 30 + 12 * t, 40
        frame[:, y0 : y0 + 60, x0 : x0 + 60] = torch.tensor([0.9, 0.8, 0.7])[:, None, None]
        cy, cx = 60 + 10 * t, 160
        disc = (ys - cy) ** 2 + (xs - cx) ** 2 < 30**2
        frame[:, disc] = torch.tensor([-0.9, -0.5, -0.8])[:, None]
        frames.append(frame)
    return torch.stack(frames)


# ---------------------------------------------------------------------------------------------
# Our side: a test-side loop over Sam3Tracker's building blocks
# ---------------------------------------------------------------------------------------------


@dataclass
class Stored:
    """One object's output on one frame."""

    low_res: torch.Tensor  # [1, 4h, 4w]
    pointer: torch.Tensor  # [C]
    memory: torch.Tensor | None = None  # [64, h, w] bfloat16


@dataclass
class ObjectState:
    points: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    masks: dict[int, torch.Tensor] = field(default_factory=dict)
    cond: dict[int, Stored] = field(default_factory=dict)  # prompted frames (insertion order matters)
    non_cond: dict[int, Stored] = field(default_factory=dict)
    tracked: set[int] = field(default_factory=set)


class MirrorLoop:
    """Per-object state as transformers' ``Sam3TrackerVideoInferenceSession`` keeps it; each frame's
    objects computed in one batch."""

    def __init__(self, tracker: Sam3Tracker, features: dict[int, TrackerImageFeatures]) -> None:
        self.tracker = tracker
        self.features = features
        self.objects: dict[int, ObjectState] = {}
        self.new_inputs: list[int] = []
        self.calls: list[tuple[int, ...]] = []  # objects computed per track_step call (to check batching)

    def add_points(self, frame: int, obj: int, coords: list, labels: list) -> None:
        state = self.objects.setdefault(obj, ObjectState())
        state.points[frame] = (torch.tensor(coords, dtype=torch.float32), torch.tensor(labels))
        state.masks.pop(frame, None)
        self.new_inputs = [obj]

    def add_box(self, frame: int, obj: int, box: list) -> None:
        # A box travels as its two corners labelled 2 and 3, as transformers' video processor sends it.
        self.add_points(frame, obj, [box[:2], box[2:]], [2, 3])

    def add_mask(self, frame: int, obj: int, mask: torch.Tensor) -> None:
        state = self.objects.setdefault(obj, ObjectState())
        state.masks[frame] = mask.float()
        state.points.pop(frame, None)
        self.new_inputs = [obj]

    def run(self, frame: int, reverse: bool = False) -> dict[int, torch.Tensor]:
        """One frame for every object -> {object id: low-res logits [1, 4h, 4w]}."""
        results: dict[int, torch.Tensor] = {}
        todo = []
        for obj, state in self.objects.items():
            if obj not in self.new_inputs and frame in state.cond:
                results[obj] = state.cond[frame].low_res
                continue
            initial, points, mask = False, None, None
            if obj in self.new_inputs:
                initial = frame not in state.tracked
                reverse = reverse and not initial
                points, mask = state.points.get(frame), state.masks.get(frame)
                if points is not None or mask is not None:
                    self.new_inputs.remove(obj)
            todo.append((obj, initial, points, mask, reverse))
        if todo:
            results.update(self._compute(frame, todo))
        return {obj: results[obj] for obj in self.objects}

    def _compute(self, frame: int, todo: list) -> dict[int, torch.Tensor]:
        tracker, cfg = self.tracker, self.tracker.config
        memories = []
        for obj, initial, _, mask, reverse in todo:
            state = self.objects[obj]
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
                num_frames=len(self.features),
                reverse=reverse,
            )
            stored = {**state.cond, **state.non_cond}
            memories.append(
                gather_memory(
                    selection, {t: s.memory for t, s in stored.items()}, {t: s.pointer for t, s in stored.items()}
                )
            )
        features = self.features[frame]
        with torch.no_grad():
            out = tracker.track_step(
                features,
                memories,
                points=[None if p is None else p[0] for _, _, p, _, _ in todo],
                labels=[None if p is None else p[1] for _, _, p, _, _ in todo],
                mask_inputs=[m for _, _, _, m, _ in todo],
                multimask=[tracker.use_multimask(0 if p is None else len(p[1]), init) for _, init, p, _, _ in todo],
            )
            # transformers binarizes every object's memory mask when any object was prompted on this frame.
            prompted = any(p is not None or m is not None for _, _, p, m, _ in todo)
            encoded = tracker.encode_memory(features, out.high_res_masks, out.object_score_logits, prompted)
        self.calls.append(tuple(obj for obj, *_ in todo))
        results = {}
        for i, (obj, initial, _, _, _) in enumerate(todo):
            state = self.objects[obj]
            stored = Stored(out.low_res_masks[i], out.object_pointer[i], encoded[i])
            (state.cond if initial else state.non_cond)[frame] = stored
            if not initial:
                state.tracked.add(frame)
            results[obj] = out.low_res_masks[i]
        return results

    def propagate(self, reverse: bool = False, start: int | None = None):
        if start is None:
            start = min(t for state in self.objects.values() for t in state.cond)
        num_frames = len(self.features)
        if reverse:
            order = range(start, max(start - num_frames, 0) - 1, -1) if start > 0 else []
        else:
            order = range(start, min(start + num_frames, num_frames - 1) + 1)
        for frame in order:
            yield frame, self.run(frame, reverse)


# ---------------------------------------------------------------------------------------------
# The reference side: transformers' session API, fed the same prompts in model coordinates
# ---------------------------------------------------------------------------------------------


class ReferenceRun:
    def __init__(self, model, frames: torch.Tensor) -> None:
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
            Sam3TrackerVideoInferenceSession,
        )

        self.model = model
        self.session = Sam3TrackerVideoInferenceSession(
            video=frames, video_height=SIZE, video_width=SIZE, dtype=torch.float32
        )

    def _outputs(self, out) -> dict[int, torch.Tensor]:
        return {obj: out.pred_masks[i] for i, obj in enumerate(out.object_ids)}

    def add_points(self, frame: int, obj: int, coords: list, labels: list) -> dict[int, torch.Tensor]:
        # What Sam3TrackerVideoProcessor.add_inputs_to_inference_session stores (coordinates already in
        # the model's 224 x 224 input, so its rescaling is the identity).
        idx = self.session.obj_id_to_idx(obj)
        points = {
            "point_coords": torch.tensor(coords, dtype=torch.float32)[None, None],
            "point_labels": torch.tensor(labels, dtype=torch.int32)[None, None],
        }
        self.session.add_point_inputs(idx, frame, points)
        self.session.remove_mask_inputs(idx, frame)
        self.session.obj_with_new_inputs = [obj]
        return self._outputs(self.model(inference_session=self.session, frame_idx=frame))

    def add_box(self, frame: int, obj: int, box: list) -> dict[int, torch.Tensor]:
        return self.add_points(frame, obj, [box[:2], box[2:]], [2, 3])

    def add_mask(self, frame: int, obj: int, mask: torch.Tensor) -> dict[int, torch.Tensor]:
        idx = self.session.obj_id_to_idx(obj)
        self.session.add_mask_inputs(idx, frame, mask.float()[None, None])
        self.session.remove_point_inputs(idx, frame)
        self.session.obj_with_new_inputs = [obj]
        return self._outputs(self.model(inference_session=self.session, frame_idx=frame))

    def propagate(self, reverse: bool = False, start: int | None = None):
        for out in self.model.propagate_in_video_iterator(self.session, start_frame_idx=start, reverse=reverse):
            yield out.frame_idx, self._outputs(out)


# ---------------------------------------------------------------------------------------------
# Fixtures and the scenario
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frames():
    return moving_shapes()


@pytest.fixture(scope="module")
def frame_features(ours, frames):
    return {t: ours.features(frames[t : t + 1]) for t in range(len(frames))}


def disc_mask(frame: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    return ((ys - (60 + 10 * frame)) ** 2 + (xs - 160) ** 2 < 30**2).float()


SCENARIO = [
    ("add_box", 0, 1, [30.0, 40.0, 90.0, 100.0]),
    ("add_points", 0, 2, [[160.0, 60.0]], [1]),
    ("propagate", False),
    ("add_points", 4, 3, [[200.0, 200.0], [20.0, 210.0]], [1, 0]),
    ("propagate", False),
    ("add_points", 5, 1, [[100.0, 70.0]], [1]),  # a correction click on an already tracked frame
    ("propagate", False),
    ("add_mask", 6, 4, "disc"),
    ("add_mask", 3, 5, "empty"),  # an object prompted as absent
    ("propagate", True, NUM_FRAMES - 1),  # backwards from the last frame
]


def play(runner, scenario) -> list[tuple[str, int, dict[int, torch.Tensor]]]:
    """Run a scenario; return (step, frame, {object: low-res logits}) for every frame answered."""
    records = []
    for step, (action, *args) in enumerate(scenario):
        if action == "propagate":
            for frame, outputs in runner.propagate(*args):
                records.append((f"{step}:propagate", frame, outputs))
            continue
        if action == "add_mask":
            frame, obj, kind = args
            mask = disc_mask(frame) if kind == "disc" else torch.zeros(SIZE, SIZE)
            outputs = runner.add_mask(frame, obj, mask)
        else:
            frame = args[0]
            outputs = getattr(runner, action)(*args)
        records.append((f"{step}:{action}", frame, outputs))
    return records


class OurRunner(MirrorLoop):
    """MirrorLoop with the reference runner's interface (each prompt answered at once)."""

    def add_points(self, frame, obj, coords, labels):
        super().add_points(frame, obj, coords, labels)
        return self.run(frame)

    def add_box(self, frame, obj, box):
        super().add_box(frame, obj, box)
        return self.run(frame)

    def add_mask(self, frame, obj, mask):
        super().add_mask(frame, obj, mask)
        return self.run(frame)


def _band_iou(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """IoU of the masks (logits > 0), ignoring pixels whose reference logit lies within the float-noise band
    (|logit| <= LOGIT_TOL * max |logit|): a pixel at 1e-5 from zero may take either side in either run."""
    decided = ref.abs() > LOGIT_TOL * ref.abs().max()
    a, b = (ours > 0) & decided, (ref > 0) & decided
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


@pytest.fixture(scope="module")
def runs(ours, hf_video, frames, frame_features):
    """(our records, the reference's records, our loop) for SCENARIO."""
    loop = OurRunner(ours.tracker, frame_features)
    with torch.no_grad():
        expected = play(ReferenceRun(hf_video, frames), SCENARIO)
    return play(loop, SCENARIO), expected, loop


def test_sequence_parity(runs):
    """Every answered frame: the same objects, low-res logits within 1e-3 relative, the same masks."""
    got, expected, _ = runs
    assert [(s, f, list(o)) for s, f, o in got] == [(s, f, list(o)) for s, f, o in expected]
    assert sum(action.endswith("propagate") for action, _, _ in got) == 4 * NUM_FRAMES
    for (step, frame, outputs), (_, _, ref) in zip(got, expected, strict=True):
        for obj, logits in outputs.items():
            where = f"{step} frame {frame} object {obj}"
            assert logits.shape == ref[obj].shape == (1, 64, 64), where
            assert rel_err(logits, ref[obj]) < LOGIT_TOL, f"{where}: {rel_err(logits, ref[obj])}"
            assert _band_iou(logits, ref[obj]) >= MIN_IOU, where


def test_scenario_is_not_degenerate(runs):
    """Guards the parity test: objects are sometimes absent, present masks are partial, objects differ."""
    _, expected, loop = runs
    absent = present = 0
    for _, _, outputs in expected:
        visible = [obj for obj, logits in outputs.items() if not bool((logits <= -1000).all())]
        absent += len(outputs) - len(visible)
        present += len(visible)
        for obj in visible:
            covered = (outputs[obj] > 0).float().mean().item()
            assert 0.0 <= covered < 0.95
        for i, a in enumerate(visible):
            for b in visible[:i]:
                assert rel_err(outputs[a], outputs[b]) > 10 * LOGIT_TOL, (a, b)
    assert absent >= 3 and present >= 5 * absent
    # Batching: the frames' objects went through track_step together.
    assert max(len(call) for call in loop.calls) >= 4
