"""Request bodies -> (image bytes, ``SegmentParams``), within the size limits, errors naming the field.

The body is read here rather than by FastAPI so that its size is capped while it streams in (FastAPI
would buffer it whole first) and so every parse error becomes our JSON error.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from .decode import decode_base64
from .errors import ApiError, from_validation_error, invalid
from .schemas import SegmentJSONRequest, SegmentParams
from .settings import ServeSettings

_JSON_FIELDS = ("boxes", "box_labels")  # lists, sent JSON-encoded in a form


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


def parse_json(body: bytes) -> tuple[bytes, SegmentParams]:
    """``application/json`` body -> image bytes and parameters (CPU work: run it off the event loop)."""
    try:
        request = SegmentJSONRequest.model_validate_json(body)
    except ValidationError as err:
        raise from_validation_error(err) from err
    params = SegmentParams.model_validate(request.model_dump(exclude={"image"}))
    return decode_base64(request.image), params


async def parse_multipart(request: Request, body: bytes) -> tuple[bytes, SegmentParams]:
    """``multipart/form-data`` body: an ``image`` file and the other fields as text."""

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=64)
    except HTTPException as err:  # Starlette's answer to a malformed multipart body
        raise ApiError(400, "invalid_multipart", f"malformed multipart body: {err.detail}", field="body") from err
    try:
        upload = form.get("image")
        if upload is None:
            raise invalid("image", "missing: send the image file as the form field 'image'")
        if not isinstance(upload, UploadFile):
            raise invalid("image", "must be a file upload, not a text field")
        image = await upload.read()
        fields = _form_fields(form)
    finally:
        await form.close()
    try:
        return image, SegmentParams.model_validate(fields)
    except ValidationError as err:
        raise from_validation_error(err) from err


def _form_fields(form: Any) -> dict[str, Any]:
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
        elif name in _JSON_FIELDS:
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


def _body_too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is larger than {limit:,} bytes", field="body")
