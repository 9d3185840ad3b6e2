"""Every error leaves the server as ``{"error": {"status", "code", "message", "field"}}``, never a traceback."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .schemas import ErrorBody, ErrorResponse

log = logging.getLogger("sam3lite.serve")


class ApiError(Exception):
    """An answer other than 200: HTTP status, a stable machine code, a message, the offending field."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = ErrorResponse(
            error=ErrorBody(status=self.status, code=self.code, message=self.message, field=self.field)
        )
        return JSONResponse(body.model_dump(), status_code=self.status, headers=self.headers)


def invalid(field: str, message: str) -> ApiError:
    """422 for a request field; the message starts with the field so it reads alone too."""
    return ApiError(422, "invalid_field", f"{field}: {message}", field=field)


def field_path(loc: tuple[int | str, ...]) -> str:
    """Pydantic location -> ``boxes[1][2]``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def from_validation_error(err: ValidationError | RequestValidationError, skip: int = 0) -> ApiError:
    """The first problem of a pydantic error as a 422 (``skip`` drops leading loc parts such as 'body')."""
    first = err.errors()[0]
    if first.get("type") == "json_invalid":
        return ApiError(400, "invalid_json", f"the body is not valid JSON: {first.get('msg')}", field="body")
    loc = tuple(first.get("loc", ()))[skip:]
    msg = str(first.get("msg", "invalid value"))
    if first.get("type") == "extra_forbidden":
        msg = "unknown field (check its spelling; see /openapi.json)"
    return invalid(field_path(loc), msg)


# The predictor names its own arguments; requests name them differently.
_PREDICTOR_FIELDS = [
    (re.compile(r"input_boxes_labels\[0\]\[(\d+)\]"), r"box_labels[\1]"),
    (re.compile(r"input_boxes\[0\]\[(\d+)\]"), r"boxes[\1]"),
    (re.compile(r"^text\[(\d+)\]"), r"prompts[\1]"),
]


def from_predictor_error(err: ValueError) -> ApiError:
    """A ValueError raised by the predictor (bad box for this image size, ...) -> 422 naming the field."""
    message = str(err)
    for pattern, replacement in _PREDICTOR_FIELDS:
        message = pattern.sub(replacement, message)
    match = re.match(r"(boxes\[\d+\]|box_labels\[\d+\]|prompts\[\d+\]|threshold|mask_threshold|box_labels)", message)
    field = match.group(1) if match else "body"
    return ApiError(422, "invalid_field", message, field=field)


def install_handlers(app: FastAPI) -> None:
    """JSON errors for our own, FastAPI's and Starlette's exceptions, and a generic 500."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        return from_validation_error(err, skip=1).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return ApiError(err.status_code, code, str(err.detail), headers=err.headers).response()

    @app.exception_handler(Exception)
    async def _internal(request: Request, err: Exception) -> JSONResponse:
        # The traceback goes to the server log only.
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=err)
        return ApiError(500, "internal", "internal server error (details are in the server log)").response()
