"""Request bodies -> (image bytes, parameters), within the size limits, errors naming the field.

The body is read here rather than by FastAPI so that its size is capped while it streams in (FastAPI
would buffer it whole first) and so every parse error becomes our JSON error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from .decode import decode_base64
from .errors import ApiError, from_validation_error, invalid
from .schemas import ObjectJSONRequest, ObjectParams, SegmentJSONRequest, SegmentParams
from .settings import ServeSettings


@dataclass(frozen=True)
class BodyKind:
    """What one endpoint's body holds: its JSON model (image in base64), the same without the image
    (multipart form fields), the form fields that carry JSON, and whether the image may be left out."""

    json_model: type[BaseModel]
    params_model: type[BaseModel]
    json_fields: tuple[str, ...]
    image_required: bool = True


SEGMENT = BodyKind(SegmentJSONRequest, SegmentParams, ("boxes", "box_labels"))
OBJECTS = BodyKind(ObjectJSONRequest, ObjectParams, ("objects",), image_required=False)


def check_content_length(request: Request, limit: int) -> None:
    """413 straight from the header, before anything is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _body_too_large(limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing it as soon as it passes ``limit`` bytes (chunked uploads too)."""
    check_content_length(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes, kind: BodyKind = SEGMENT) -> tuple[bytes | None, Any]:
    """``application/json`` body -> image bytes (None if left out where allowed) and parameters (CPU work:
    run it off the event loop)."""
    try:
        request = kind.json_model.model_validate_json(body)
    except ValidationError as err:
        raise from_validation_error(err) from err
    params = kind.params_model.model_validate(request.model_dump(exclude={"image"}))
    image = getattr(request, "image", None)
    return (None if image is None else decode_base64(image)), params


async def parse_multipart(request: Request, body: bytes, kind: BodyKind = SEGMENT) -> tuple[bytes | None, Any]:
    """``multipart/form-data`` body: an ``image`` file and the other fields as text."""

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=64)
    except HTTPException as err:  # Starlette's answer to a malformed multipart body
        raise ApiError(400, "invalid_multipart", f"malformed multipart body: {err.detail}", field="body") from err
    try:
        upload = form.get("image")
        if upload is None and kind.image_required:
            raise invalid("image", "missing: send the image file as the form field 'image'")
        if upload is not None and not isinstance(upload, UploadFile):
            raise invalid("image", "must be a file upload, not a text field")
        image = None if upload is None else await upload.read()
        fields = _form_fields(form, kind.json_fields)
    finally:
        await form.close()
    try:
        return image, kind.params_model.model_validate(fields)
    except ValidationError as err:
        raise from_validation_error(err) from err


def _form_fields(form: Any, json_fields: tuple[str, ...]) -> dict[str, Any]:
    """Form values -> the dict ``SegmentParams`` validates (unknown names kept, so they are reported)."""
    fields: dict[str, Any] = {}
    for name in dict.fromkeys(form.keys()):
        if name == "image":
            continue
        values = form.getlist(name)
        if any(isinstance(v, UploadFile) for v in values):
            raise invalid(name, "must be a text field, not a file")
        if name == "prompts":
            fields[name] = _prompts_field(values)
        elif name in json_fields:
            fields[name] = _json_field(name, values)
        else:
            if len(values) > 1:
                raise invalid(name, "given more than once")
            fields[name] = values[0]
    return fields


def _prompts_field(values: list[str]) -> list[Any]:
    # Either repeated 'prompts' fields (one prompt each) or one field holding a JSON list.
    if len(values) == 1 and values[0].lstrip().startswith("["):
        return _json_field("prompts", values)
    return values


def _json_field(name: str, values: list[str]) -> Any:
    if len(values) > 1:
        raise invalid(name, "given more than once; send one JSON list")
    try:
        return json.loads(values[0])
    except json.JSONDecodeError as err:
        raise invalid(name, f"must be a JSON list ({err.msg})") from err


def check_limits(params: SegmentParams, settings: ServeSettings) -> None:
    """Counts and cross-field rules the schema alone cannot state (they depend on the settings)."""
    if not params.prompts and not params.boxes:
        raise invalid("prompts", "give at least one prompt, or boxes")
    if len(params.prompts) > settings.max_prompts:
        raise invalid("prompts", f"{len(params.prompts)} prompts; this server accepts at most {settings.max_prompts}")
    for i, prompt in enumerate(params.prompts):
        if not prompt.strip():
            raise invalid(f"prompts[{i}]", "must be a non-empty phrase")
        if len(prompt) > settings.max_prompt_chars:
            raise invalid(f"prompts[{i}]", f"longer than {settings.max_prompt_chars} characters")
    boxes = params.boxes or []
    if len(boxes) > settings.max_boxes:
        raise invalid("boxes", f"{len(boxes)} boxes; this server accepts at most {settings.max_boxes}")
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        if not (x2 > x1 and y2 > y1):
            raise invalid(f"boxes[{i}]", f"{[x1, y1, x2, y2]} is not [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
    if params.box_labels is not None:
        if params.boxes is None:
            raise invalid("box_labels", "given without boxes")
        if len(params.box_labels) != len(boxes):
            raise invalid("box_labels", f"{len(params.box_labels)} labels for {len(boxes)} boxes; give one per box")


def check_object_limits(image: bytes | None, params: ObjectParams, settings: ServeSettings) -> None:
    """Counts and cross-field rules of ``/v1/segment_object`` (those that need the image come later)."""
    if image is None and params.session is None:
        raise invalid("image", "missing: send the image (or a session from an earlier answer)")
    if not params.objects:
        raise invalid("objects", "give at least one object (points and/or a box)")
    if len(params.objects) > settings.max_objects:
        raise invalid("objects", f"{len(params.objects)} objects; this server accepts at most {settings.max_objects}")
    seen: set[int] = set()
    for i, item in enumerate(params.objects):
        where = f"objects[{i}]"
        if item.object_id is not None:
            if params.session is None:
                raise invalid(f"{where}.object_id", "refers to a session: send the session it came with too")
            if item.object_id in seen:
                raise invalid(f"{where}.object_id", f"object {item.object_id} is given twice; send its clicks once")
            seen.add(item.object_id)
        elif item.mask_index is not None:
            raise invalid(f"{where}.mask_index", "only refines an earlier answer: give object_id too")
        if not item.points and item.box is None:
            what = "new points or a box to refine it" if item.object_id is not None else "points and/or a box"
            raise invalid(where, f"give {what}")
        if len(item.points) > settings.max_points:
            raise invalid(f"{where}.points", f"{len(item.points)} points; this server accepts at most "
                          f"{settings.max_points} per object")  # fmt: skip
        for j, point in enumerate(item.points):
            if len(point) == 3 and point[2] not in (0, 1):
                raise invalid(f"{where}.points[{j}]", f"label {point[2]:g}: give 1 (on the object) or 0 (background)")
        if item.box is not None:
            x1, y1, x2, y2 = item.box
            if not (x2 > x1 and y2 > y1):
                raise invalid(f"{where}.box", f"{item.box} is not [x1, y1, x2, y2] with x2 > x1 and y2 > y1")


def _body_too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is larger than {limit:,} bytes", field="body")
