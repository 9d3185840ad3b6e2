"""``POST /v1/segment_object``: clicks and object boxes through SAM3's tracker, refined across requests.

Request threads check the prompts against the image (``check_in_image``); the model worker resolves
each object against its session (earlier clicks, last mask logits), runs the tracker and saves the new
state (``run_objects``). Both read the session store, but only the worker writes it, so two clicks on
one object in flight at once are applied one after the other, each refining the other's answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..predictor import Predictor
from .errors import ApiError, invalid
from .schemas import ObjectInput, ObjectParams
from .sessions import ObjectState, Session, SessionStore


@dataclass
class ObjectArrays:
    """One object's answer, in host memory.

    masks: bool [K, H, W]; iou_scores: float32 [K]; points: float32 [N, 3] (x, y, label), every click
    so far; box: float32 [4] or None.
    """

    object_id: int
    masks: np.ndarray
    iou_scores: np.ndarray
    object_score_logit: float
    best: int
    points: np.ndarray
    box: np.ndarray | None


@dataclass
class _FullPrompt:
    """An object's whole prompt for this run: stored clicks + new ones, box, last logits."""

    object_id: int
    points: np.ndarray  # float32 [N, 3]
    box: np.ndarray | None  # float32 [4]
    mask_input: torch.Tensor | None  # float32 [h, w]

    @property
    def signature(self) -> tuple[bool, bool, bool]:
        return len(self.points) > 0, self.box is not None, self.mask_input is not None


def points_array(points: list[list[float]]) -> np.ndarray:
    """Request points ([x, y] or [x, y, label]) -> float32 [N, 3]; a missing label is 1 (positive)."""
    rows = [[*p, 1.0] if len(p) == 2 else list(p) for p in points]
    return np.asarray(rows, dtype=np.float32).reshape(-1, 3)


def check_in_image(params: ObjectParams, size: tuple[int, int]) -> None:
    """Clicks inside the image and boxes overlapping it; 422 naming the point or box otherwise."""
    height, width = size
    for i, item in enumerate(params.objects):
        for j, (x, y, *_) in enumerate(item.points):
            if not (0 <= x <= width and 0 <= y <= height):
                raise invalid(
                    f"objects[{i}].points[{j}]",
                    f"({x:g}, {y:g}) lies outside the {width}x{height} image (x in [0, {width}], y in [0, {height}])",
                )
        if item.box is not None:
            x1, y1, x2, y2 = item.box
            if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
                raise invalid(f"objects[{i}].box", f"{item.box} lies outside the {width}x{height} image")


def unknown_session(session_id: str) -> ApiError:
    return ApiError(
        404,
        "unknown_session",
        f"session: {session_id!r} is unknown or expired; send the image without a session to start a new one",
        field="session",
    )


def run_objects(
    predictor: Predictor, sessions: SessionStore, key: str, size: tuple[int, int], params: ObjectParams, max_points: int
) -> tuple[str, list[ObjectArrays]]:
    """In the model worker, with ``predictor`` set to the image: the session id and each object's answer."""
    session = _session(sessions, key, size, params.session)
    prompts = [_full_prompt(i, item, session, sessions, max_points) for i, item in enumerate(params.objects)]
    answers: list[ObjectArrays | None] = [None] * len(prompts)
    states: dict[int, ObjectState] = {}
    groups: dict[tuple[bool, bool, bool], list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt.signature, []).append(i)
    for indices in groups.values():  # the predictor takes all objects of one call with the same prompt kinds
        group = [prompts[i] for i in indices]
        results = predictor.predict_object(**_predictor_inputs(group), multimask_output=params.multimask)
        for i, prompt, result in zip(indices, group, results, strict=True):
            logits = result.low_res_logits.float().cpu()
            states[prompt.object_id] = ObjectState(prompt.points, prompt.box, logits, result.best)
            answers[i] = ObjectArrays(
                object_id=prompt.object_id,
                masks=result.masks.cpu().numpy(),
                iou_scores=result.iou_scores.float().cpu().numpy(),
                object_score_logit=result.object_score_logit,
                best=result.best,
                points=prompt.points,
                box=prompt.box,
            )
    sessions.save(session, states)
    return session.id, answers  # type: ignore[return-value]


def _session(sessions: SessionStore, key: str, size: tuple[int, int], session_id: str | None) -> Session:
    if session_id is None:
        return sessions.new_session(key, size)
    session = sessions.session(session_id)
    if session is None:  # expired while the request waited
        raise unknown_session(session_id)
    if session.key != key:
        raise invalid("session", "belongs to another image; send this image without a session to start a new one")
    return session


def _full_prompt(
    index: int, item: ObjectInput, session: Session, sessions: SessionStore, max_points: int
) -> _FullPrompt:
    new_points = points_array(item.points)
    box = None if item.box is None else np.asarray(item.box, dtype=np.float32)
    if item.object_id is None:
        return _FullPrompt(session.new_object_id(), new_points, box, None)
    state = sessions.object(session.id, item.object_id)
    if state is None:
        raise ApiError(
            404,
            "unknown_object",
            f"objects[{index}].object_id: object {item.object_id} is not in this session (expired, or the server's "
            "session memory was full); send its clicks again without object_id to start it anew",
            field=f"objects[{index}].object_id",
        )
    points = np.concatenate([state.points, new_points])
    if len(points) > max_points:
        raise invalid(
            f"objects[{index}].points",
            f"object {item.object_id} would have {len(points)} clicks; this server accepts at most {max_points}",
        )
    mask_index = state.best if item.mask_index is None else item.mask_index
    if mask_index >= len(state.logits):
        raise invalid(
            f"objects[{index}].mask_index",
            f"{mask_index} but the object's last answer has {len(state.logits)} mask(s)",
        )
    return _FullPrompt(item.object_id, points, state.box if box is None else box, state.logits[mask_index])


def _predictor_inputs(group: list[_FullPrompt]) -> dict[str, Any]:
    """Batched ``Predictor.predict_object`` arguments for objects with the same prompt kinds."""
    has_points, has_box, has_mask = group[0].signature
    inputs: dict[str, Any] = {}
    if has_points:
        inputs["points"] = [p.points[:, :2] for p in group]
        inputs["point_labels"] = [p.points[:, 2].astype(np.int64) for p in group]
    if has_box:
        inputs["box"] = np.stack([p.box for p in group])
    if has_mask:
        inputs["mask_input"] = torch.stack([p.mask_input for p in group])
    return inputs
