"""``create_app``: the FastAPI application around one model.

POST /v1/segment   image + prompts and/or boxes -> detections per prompt (JSON or multipart)
GET  /v1/model     name, variant, device, dtype, limits
GET  /healthz      liveness and queue depth
GET  /             the web page (static files, no build step)
"""

from __future__ import annotations

import asyncio
import math
import secrets
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..checkpoints import Sam3LiteTextModel
from ..checkpoints import variant_of as config_variant
from ..predictor import Predictor
from .cache import FeatureCache, content_key
from .decode import decode_image, prepare_pixels
from .errors import ApiError, from_predictor_error, install_handlers, log
from .masks import encode_masks
from .parse import check_content_length, check_limits, parse_json, parse_multipart, read_body
from .schemas import (
    ErrorResponse,
    Health,
    Limits,
    ModelInfo,
    SegmentJSONRequest,
    SegmentParams,
    SegmentResponse,
)
from .settings import ServeSettings
from .worker import Job, ModelWorker, QueueFull, WorkResult

STATIC_DIR = Path(__file__).parent / "static"
# Module-level so the handlers' string annotations resolve; auto_error=False: we answer 401 ourselves.
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False)
BEARER = HTTPBearer(auto_error=False)
# The page loads only its own files; masks are drawn from data the API returns.
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'"


class Admission:
    """Bounded admission: the running request plus ``queue_size`` waiting; the rest get 503 at once.

    Requests hold their slot from before their body is read until their answer is built, so the
    memory in flight (bodies, decoded images, masks) is bounded by the slot count.
    """

    def __init__(self, queue_size: int, worker: ModelWorker) -> None:
        self.capacity = queue_size + 1
        self.active = 0
        self.worker = worker
        self._lock = threading.Lock()

    @contextmanager
    def slot(self):
        with self._lock:
            if self.active >= self.capacity:
                raise self.busy()
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1

    def busy(self) -> ApiError:
        # Retry-After: the time the admitted requests should take, from the running mean per job.
        wait = max(1, min(60, math.ceil(self.worker.seconds_per_job * max(self.active, 1))))
        return ApiError(
            503,
            "queue_full",
            f"the server is busy ({self.active} requests in progress); retry after {wait} s",
            headers={"Retry-After": str(wait)},
        )


class Service:
    """The work behind ``POST /v1/segment``: decode (threads), model (worker), encode masks (threads)."""

    def __init__(self, predictor: Predictor, settings: ServeSettings) -> None:
        self.predictor, self.settings = predictor, settings
        self.cache = FeatureCache(settings.image_cache_bytes, settings.image_cache_entries)
        self.worker = ModelWorker(predictor, self.cache, capacity=settings.queue_size + 1)
        self.admission = Admission(settings.queue_size, self.worker)
        self._decode_slots = threading.BoundedSemaphore(settings.decode_concurrency)

    async def segment(self, image: bytes, params: SegmentParams, started: float) -> Response:
        job, decode_ms = await run_in_threadpool(self._prepare, image, params)
        try:
            future = self.worker.submit(job)
        except QueueFull:
            raise self.admission.busy() from None
        try:
            work = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # the client went away: skip the job if it has not started
            raise
        except ValueError as err:  # the predictor's input checks (e.g. a box outside this image)
            raise from_predictor_error(err) from err
        except torch.OutOfMemoryError as err:
            raise ApiError(503, "out_of_memory", "the model ran out of memory; retry with fewer prompts") from err
        except Exception as err:
            log.error("model worker failed", exc_info=err)
            raise ApiError(500, "internal", "internal server error (details are in the server log)") from err
        body = await run_in_threadpool(self._response, job, params, work, decode_ms, started)
        return Response(body, media_type="application/json")

    def _prepare(self, image: bytes, params: SegmentParams) -> tuple[Job, float]:
        """Hash; on a cache miss decode and resize too (a bounded number at once: they hold big arrays)."""
        t0 = time.perf_counter()
        key = content_key(image)
        cached = self.cache.get(key)
        if cached is not None:
            return Job(key, cached.size, params, cached=cached), _ms(t0)
        with self._decode_slots:
            rgb = decode_image(image, self.settings.max_image_pixels)
            pixels, size = prepare_pixels(rgb, self.predictor.processor.image_settings)
        return Job(key, size, params, pixel_values=pixels), _ms(t0)

    def _response(self, job: Job, params: SegmentParams, work: WorkResult, decode_ms: float, started: float) -> bytes:
        t0 = time.perf_counter()
        results = []
        for item in work.results:
            masks = encode_masks(item.masks, params.output)
            detections = [
                {"score": float(score), "box": [float(v) for v in box], **mask}
                for score, box, mask in zip(item.scores, item.boxes, masks, strict=True)
            ]
            results.append({"prompt": item.prompt, "detections": detections})
        output_ms = _ms(t0)
        height, width = job.size
        response = SegmentResponse.model_validate(
            {
                "image": {"width": width, "height": height, "sha256": job.key},
                "output": params.output,
                "results": results,
                "timings": {
                    "decode_ms": decode_ms,
                    "queue_ms": work.queue_ms,
                    "image_encoder_ms": work.image_encoder_ms,
                    "prompts_ms": work.prompts_ms,
                    "output_ms": output_ms,
                    "total_ms": _ms(started),
                    "image_cache_hit": work.cache_hit,
                },
            }
        )
        return response.model_dump_json(exclude_none=True).encode()


def create_app(predictor_or_model: Predictor | Sam3LiteTextModel, settings: ServeSettings | None = None) -> FastAPI:
    """The service for one model (or a ``Predictor`` around it, to choose its caches and batch size)."""
    settings = settings or ServeSettings()
    predictor = predictor_or_model if isinstance(predictor_or_model, Predictor) else Predictor(predictor_or_model)
    service = Service(predictor, settings)
    info = model_info(predictor.model, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.worker.start()
        yield
        await run_in_threadpool(service.worker.stop)

    app = FastAPI(
        title="sam3lite",
        version=__version__,
        summary="SAM3-LiteText: every instance of a noun phrase (and/or exemplar boxes) as masks, boxes, scores.",
        lifespan=lifespan,
    )
    app.state.service = service
    install_handlers(app)
    auth = [Depends(api_key_check(settings.api_key))]
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse, "description": text}
        for code, text in {
            400: "Malformed body",
            401: "Missing or wrong API key",
            413: "Body or image too large",
            415: "Not JSON or multipart",
            422: "A field is invalid (its name is in error.field)",
            503: "Queue full (see Retry-After)",
        }.items()
    }

    @app.post(
        "/v1/segment",
        response_model=SegmentResponse,
        responses=errors,
        dependencies=auth,
        openapi_extra={"requestBody": segment_request_body()},
        summary="Segment every instance of each prompt",
    )
    async def segment(request: Request) -> Response:
        started = time.perf_counter()
        check_content_length(request, settings.max_body_bytes)
        with service.admission.slot():
            body = await read_body(request, settings.max_body_bytes)
            image, params = await parse_body(request, body)
            check_limits(params, settings)
            return await service.segment(image, params, started)

    @app.get("/v1/model", response_model=ModelInfo, responses=errors, dependencies=auth)
    async def model() -> ModelInfo:
        return info

    @app.get("/healthz", response_model=Health)
    async def healthz() -> JSONResponse:
        alive = service.worker.alive or not service.worker.started
        health = Health(
            status="ok" if alive else "unavailable",
            queue_waiting=service.worker.waiting,
            queue_capacity=service.admission.capacity,
            image_cache_entries=len(service.cache),
        )
        return JSONResponse(health.model_dump(), status_code=200 if alive else 503)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


async def parse_body(request: Request, body: bytes) -> tuple[bytes, SegmentParams]:
    """Dispatch on Content-Type: JSON (base64 image) or multipart (file upload)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return await run_in_threadpool(parse_json, body)  # base64 of a large image: not on the event loop
    if content_type == "multipart/form-data":
        return await parse_multipart(request, body)
    raise ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type {content_type or '(none)'!r} is not accepted; send application/json or multipart/form-data",
        field="content-type",
    )


def api_key_check(api_key: str | None):
    """A dependency refusing requests without the key (``Authorization: Bearer`` or ``X-API-Key``)."""

    async def check(
        key: Annotated[str | None, Depends(API_KEY_HEADER)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        if api_key is None:
            return
        given = key or (credentials.credentials if credentials else None)
        # compare_digest: the comparison takes the same time wherever the first difference is.
        if given is None or not secrets.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                field="authorization",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def model_info(model: Sam3LiteTextModel, settings: ServeSettings) -> ModelInfo:
    limits = Limits(
        max_image_pixels=settings.max_image_pixels,
        max_prompts=settings.max_prompts,
        max_boxes=settings.max_boxes,
        max_prompt_chars=settings.max_prompt_chars,
        max_body_bytes=settings.max_body_bytes,
        queue_size=settings.queue_size,
    )
    return ModelInfo(
        name=settings.model_name,
        variant=variant_of(model),
        device=str(model.device),
        dtype=str(model.dtype).removeprefix("torch."),
        image_size=model.config.image_size,
        text_mode=model.config.text_mode,
        limits=limits,
    )


def variant_of(model: Sam3LiteTextModel) -> str:
    """The named variant this model's architecture matches, else 'custom' (see checkpoints.variant_of)."""
    return config_variant(model.config)


def segment_request_body() -> dict[str, Any]:
    """OpenAPI for the two body forms (the handler parses the body itself, to cap its size)."""
    json_schema = SegmentJSONRequest.model_json_schema()
    form_schema = {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {"type": "string", "format": "binary", "description": "The image file"},
            "prompts": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Repeat the field once per prompt, or send one field holding a JSON list",
            },
            "boxes": {"type": "string", "description": "JSON list of [x1, y1, x2, y2] in pixels"},
            "box_labels": {"type": "string", "description": "JSON list of 1 / 0, one per box"},
            "threshold": {"type": "number", "default": 0.5},
            "mask_threshold": {"type": "number", "default": 0.5},
            "output": {"type": "string", "enum": ["rle", "polygons", "png"], "default": "rle"},
        },
    }
    return {
        "required": True,
        "content": {"application/json": {"schema": json_schema}, "multipart/form-data": {"schema": form_schema}},
    }


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000
