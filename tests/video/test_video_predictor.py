"""``VideoPredictor`` against transformers' ``Sam3TrackerVideoModel`` + ``Sam3TrackerVideoProcessor`` on
a synthetic video (moving shapes, 10 frames of 150x200, so coordinates are rescaled), driven through
each side's public API: a box and a click on frame 0, a second object added later, a correction click
mid-video, a mask prompt, an object given as absent, and backward propagation.

Weights: tests/reference.py ``randomize_`` (every parameter random) already gives non-degenerate
tracks on the tiny tracker: objects are sometimes absent, present masks are partial, objects differ
(the test asserts it).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import rel_err, save_video_reference, tiny_video_config_dict

import sam3lite
from sam3lite.video_predictor import VideoPredictor

HEIGHT, WIDTH, NUM_FRAMES = 150, 200, 10
LOGIT_TOL, MIN_IOU = 1e-3, 0.999


def moving_shapes(num_frames: int = NUM_FRAMES) -> list[np.ndarray]:
    """uint8 RGB frames: a bright square moving right, a dark disc moving down, on a gradient."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    background = np.stack([xs / WIDTH, ys / HEIGHT, 1 - xs / WIDTH], -1) * 200 + 20
    frames = []
    for t in range(num_frames):
        frame = background.copy()
        x0, y0 = 20 + 9 * t, 30
        frame[y0 : y0 + 45, x0 : x0 + 45] = (240, 220, 200)
        disc = (ys - (40 + 7 * t)) ** 2 + (xs - 150) ** 2 < 22**2
        frame[disc] = (15, 60, 25)
        frames.append(frame.astype(np.uint8))
    return frames


def mask_prompt(t: int, kind: str) -> np.ndarray:
    """The disc's mask on frame t, or an empty mask (an object given as absent)."""
    if kind == "empty":
        return np.zeros((HEIGHT, WIDTH), bool)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    return (ys - (40 + 7 * t)) ** 2 + (xs - 150) ** 2 < 22**2


SCENARIO = [
    ("box", 0, 1, [20.0, 30.0, 65.0, 75.0]),
    ("points", 0, 2, [[150.0, 40.0]], [1]),
    ("propagate", False, None),
    ("points", 4, 3, [[180.0, 130.0], [15.0, 140.0]], [1, 0]),
    ("propagate", False, None),
    ("points", 5, 1, [[80.0, 50.0]], [1]),  # a correction click on a tracked frame
    ("propagate", False, 5),  # continue from the correction
    ("mask", 6, 4, "disc"),
    ("mask", 3, 5, "empty"),  # an object given as absent
    ("propagate", True, NUM_FRAMES - 1),  # backwards from the last frame
]


class Ours:
    def __init__(self, model, frames):
        self.vp = VideoPredictor(model)
        self.session = self.vp.start(frames)

    def prompt(self, kind, frame, obj, *args):
        if kind == "box":
            return self.vp.add_object(self.session, frame, obj, box=args[0])
        if kind == "points":
            return self.vp.add_object(self.session, frame, obj, points=args[0], point_labels=args[1])
        return self.vp.add_object(self.session, frame, obj, mask=mask_prompt(frame, args[0]))

    def propagate(self, reverse, start):
        yield from self.vp.propagate(self.session, start=start, reverse=reverse)


class Reference:
    def __init__(self, directory, frames):
        from transformers import Sam2VideoVideoProcessor, Sam3ImageProcessor, Sam3TrackerVideoModel
        from transformers import Sam3TrackerVideoProcessor as VideoProcessor
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
            Sam3TrackerVideoInferenceSession,
        )

        size = {"height": 224, "width": 224}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = Sam3TrackerVideoModel.from_pretrained(directory).eval()
            images = Sam3ImageProcessor(size=size)
            self.processor = VideoProcessor(images, Sam2VideoVideoProcessor(size=size), target_size=224)
            # Frames preprocessed as SAM3's image processor does (what the hub's processor config sets).
            pixels = images(images=frames, return_tensors="pt")["pixel_values"]
        self.session = Sam3TrackerVideoInferenceSession(
            video=pixels, video_height=HEIGHT, video_width=WIDTH, dtype=torch.float32
        )

    def _answer(self, out):
        masks = self.processor.post_process_masks([out.pred_masks], [[HEIGHT, WIDTH]], binarize=True)[0][:, 0]
        return out.frame_idx, list(out.object_ids), out.pred_masks[:, 0], masks

    def prompt(self, kind, frame, obj, *args):
        kwargs = {}
        if kind == "box":
            kwargs["input_boxes"] = [[args[0]]]
        elif kind == "points":
            kwargs["input_points"] = [[args[0]]]
            kwargs["input_labels"] = [[args[1]]]
        else:
            kwargs["input_masks"] = mask_prompt(frame, args[0])
        self.processor.add_inputs_to_inference_session(self.session, frame, obj, **kwargs)
        out = self.model(inference_session=self.session, frame_idx=frame)
        out.frame_idx = frame
        return self._answer(out)

    def propagate(self, reverse, start):
        for out in self.model.propagate_in_video_iterator(self.session, start_frame_idx=start, reverse=reverse):
            yield self._answer(out)


def play(runner, is_ours):
    records = []
    for step, (action, *args) in enumerate(SCENARIO):
        with torch.no_grad():
            if action == "propagate":
                outputs = list(runner.propagate(*args))
            else:
                outputs = [runner.prompt(action, *args)]
        for out in outputs:
            if is_ours:
                records.append((step, out.frame, out.object_ids, out.logits[:, 0], out.masks))
            else:
                records.append((step, *out))
    return records


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sam3_video")
    save_video_reference(tiny_video_config_dict("s0"), directory, seed=0)
    frames = moving_shapes()
    ours = play(Ours(sam3lite.load(directory), frames), True)
    theirs = play(Reference(directory, frames), False)
    return ours, theirs


def band_iou(ours: torch.Tensor, ref_masks: torch.Tensor, ref_logits: torch.Tensor) -> float:
    """IoU of the masks at the video size, ignoring pixels whose reference logit (resized) lies within the
    float-noise band: a pixel a hair from zero may take either side."""
    logits = F.interpolate(ref_logits[None, None].float(), size=ours.shape, mode="bilinear", align_corners=False)[0, 0]
    decided = logits.abs() > LOGIT_TOL * ref_logits.abs().max()
    a, b = ours & decided, ref_masks.bool() & decided
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def test_same_frames_objects_and_masks(runs):
    ours, theirs = runs
    assert [(s, f, ids) for s, f, ids, _, _ in ours] == [(s, f, ids) for s, f, ids, _, _ in theirs]
    for (step, frame, ids, logits, masks), (_, _, _, ref_logits, ref_masks) in zip(ours, theirs, strict=True):
        assert masks.shape == (len(ids), HEIGHT, WIDTH) and masks.dtype == torch.bool
        for i, obj in enumerate(ids):
            where = f"step {step} frame {frame} object {obj}"
            assert rel_err(logits[i], ref_logits[i]) < LOGIT_TOL, f"{where}: {rel_err(logits[i], ref_logits[i])}"
            assert band_iou(masks[i], ref_masks[i], ref_logits[i]) >= MIN_IOU, where


def test_scenario_is_not_degenerate(runs):
    """Guards the parity test: objects are sometimes absent (no mask), present masks are partial, and
    objects differ."""
    _, theirs = runs
    absent = present = 0
    differences = []
    for _, _, ids, logits, masks in theirs:
        covered = masks.float().flatten(1).mean(1)
        absent += int((covered == 0).sum())
        present += int((covered > 0).sum())
        assert bool((covered < 0.95).all())
        differences += [rel_err(logits[i], logits[j]) for i in range(len(ids)) for j in range(i)]
    assert absent >= 2 and present >= 3 * absent
    # Every two objects on a frame are told apart at the parity tolerance, most by far more.
    assert min(differences) > LOGIT_TOL and float(np.median(differences)) > 10 * LOGIT_TOL
