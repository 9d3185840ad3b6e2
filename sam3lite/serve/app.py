"""``create_app``: the FastAPI application around one model.

POST /v1/segment          image + prompts and/or boxes -> detections per prompt (JSON or multipart)
POST /v1/segment_object   image (or session) + clicks and/or a box per object -> masks per object
POST /v1/track            a short video + noun phrases -> every instance tracked, RLE per object per frame
GET  /v1/model            name, variant, device, dtype, tracker, limits
GET  /healthz      liveness and queue depth
GET  /             the web page (static files, no build step)
"""

from __future__ import annotations

import asyncio
import json
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
from ..video_predictor import VideoPredictor
from .cache import FeatureCache, content_key
from .decode import decode_image, prepare_pixels
from .errors import ApiError, from_predictor_error, install_handlers, invalid, log
from .masks import encode_masks
from .objects import check_in_image, unknown_session
from .parse import (
    OBJECTS,
    SEGMENT,
    BodyKind,
    check_content_length,
    check_limits,
    check_object_limits,
    parse_json,
    parse_multipart,
    read_body,
)
from .schemas import (
    ErrorResponse,
    Health,
    Limits,
    ModelInfo,
    ObjectJSONRequest,
    ObjectParams,
    ObjectResponse,
    SegmentJSONRequest,
    SegmentParams,
    SegmentResponse,
)
from .sessions import SessionStore
from .settings import ServeSettings
from .track import TrackRequest, open_checked, parse_track_form, response_body, track_frames
from .worker import Job, ModelWorker, QueueFull, WorkResult

STATIC_DIR = Path(__file__).parent / "static"
# Module-level so the handlers' string annotations resolve; auto_error=False: we answer 401 ourselves.
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False)
BEARER = HTTPBearer(auto_error=False)
# The page loads only its own files; masks are drawn from data the API returns. blob: is the user's own
# image or video file, shown from memory (an object URL), never sent anywhere but this server.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'"
)


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
    """The work behind the POST endpoints: decode (threads), model (worker), encode masks (threads)."""

    def __init__(self, predictor: Predictor, settings: ServeSettings) -> None:
        self.predictor, self.settings = predictor, settings
        self.cache = FeatureCache(settings.image_cache_bytes, settings.image_cache_entries)
        self.sessions = SessionStore(settings.session_cache_bytes, settings.max_sessions, settings.session_ttl_s)
        capacity = settings.queue_size + 1
        self.worker = ModelWorker(predictor, self.cache, capacity, self.sessions, settings.max_points)
        self.admission = Admission(settings.queue_size, self.worker)
        self._decode_slots = threading.BoundedSemaphore(settings.decode_concurrency)
        self._videos: VideoPredictor | None = None  # made on the model's thread at the first /v1/track

    async def segment(self, image: bytes, params: SegmentParams, started: float) -> Response:
        job, decode_ms = await run_in_threadpool(self._prepare, image, params)
        work = await self._run(job)
        body = await run_in_threadpool(self._response, job, params, work, decode_ms, started)
        return Response(body, media_type="application/json")

    async def segment_objects(self, image: bytes | None, params: ObjectParams, started: float) -> Response:
        job, decode_ms = await run_in_threadpool(self._prepare_objects, image, params)
        work = await self._run(job)
        body = await run_in_threadpool(self._object_response, job, params, work, decode_ms, started)
        return Response(body, media_type="application/json")

    async def track(self, request: TrackRequest, started: float) -> Response:
        frames = await run_in_threadpool(open_checked, request.path, self.settings)
        submitted = time.perf_counter()

        def work() -> tuple[list, float, float]:  # on the model's thread
            t0 = time.perf_counter()
            if self._videos is None:
                self._videos = VideoPredictor(self.predictor.model)
            results = track_frames(self._videos, frames, request)
            return results, (t0 - submitted) * 1000, (time.perf_counter() - t0) * 1000

        try:
            results, queue_ms, track_ms = await self._run(Job("", frames.size, None, call=work))
            body = await run_in_threadpool(response_body, frames, request, results, queue_ms, track_ms, started)
        finally:
            frames.close()
        return Response(body, media_type="application/json")

    async def _run(self, job: Job) -> WorkResult:
        try:
            future = self.worker.submit(job)
        except QueueFull:
            raise self.admission.busy() from None
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # the client went away: skip the job if it has not started
            raise
        except ApiError:  # the worker's own checks (an expired session, an unknown object)
            raise
        except ValueError as err:  # the predictor's input checks (e.g. a box outside this image)
            raise from_predictor_error(err) from err
        except torch.OutOfMemoryError as err:
            raise ApiError(503, "out_of_memory", "the model ran out of memory; retry with fewer prompts") from err
        except Exception as err:
            log.error("model worker failed", exc_info=err)
            raise ApiError(500, "internal", "internal server error (details are in the server log)") from err

    def _prepare(self, image: bytes, params: SegmentParams | ObjectParams) -> tuple[Job, float]:
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

    def _prepare_objects(self, image: bytes | None, params: ObjectParams) -> tuple[Job, float]:
        """As ``_prepare``; a session may stand in for the image while its features are cached."""
        t0 = time.perf_counter()
        session = None
        if params.session is not None:
            session = self.sessions.session(params.session)
            if session is None:
                raise unknown_session(params.session)
        if image is None:
            cached = self.cache.get(session.key)  # check_object_limits: no image means a session
            if cached is None:
                raise ApiError(
                    409,
                    "image_not_cached",
                    "image: the server no longer holds this session's image features; send the image again "
                    "(with the session, to keep refining its objects)",
                    field="image",
                )
            job, decode_ms = Job(session.key, cached.size, params, cached=cached), _ms(t0)
        else:
            if session is not None and content_key(image) != session.key:
                raise invalid("session", "belongs to another image; leave it out to start a session on this one")
            job, decode_ms = self._prepare(image, params)
        check_in_image(params, job.size)
        return job, decode_ms

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
        response = SegmentResponse.model_validate(
            {
                "image": _image_info(job),
                "output": params.output,
                "results": results,
                "timings": _timings(work, decode_ms, _ms(t0), started),
            }
        )
        return response.model_dump_json(exclude_none=True).encode()

    def _object_response(
        self, job: Job, params: ObjectParams, work: WorkResult, decode_ms: float, started: float
    ) -> bytes:
        t0 = time.perf_counter()
        objects = []
        for item in work.objects:
            masks = encode_masks(item.masks, params.output)
            objects.append(
                {
                    "object_id": item.object_id,
                    "best": item.best,
                    "masks": [
                        {"iou_score": float(score), **mask} for score, mask in zip(item.iou_scores, masks, strict=True)
                    ],
                    "object_score": 1 / (1 + math.exp(-item.object_score_logit)),
                    "object_score_logit": item.object_score_logit,
                    "points": item.points.tolist(),
                    "box": None if item.box is None else item.box.tolist(),
                }
            )
        response = ObjectResponse.model_validate(
            {
                "image": _image_info(job),
                "session": work.session,
                "output": params.output,
                "objects": objects,
                "timings": _timings(work, decode_ms, _ms(t0), started),
            }
        )
        # exclude_none would drop "box": null too; the masks' absent encodings are dropped by hand.
        body = response.model_dump(mode="json")
        for answer in body["objects"]:
            answer["masks"] = [{k: v for k, v in mask.items() if v is not None} for mask in answer["masks"]]
        return json.dumps(body, separators=(",", ":")).encode()


def _image_info(job: Job) -> dict[str, Any]:
    height, width = job.size
    return {"width": width, "height": height, "sha256": job.key}


def _timings(work: WorkResult, decode_ms: float, output_ms: float, started: float) -> dict[str, Any]:
    return {
        "decode_ms": decode_ms,
        "queue_ms": work.queue_ms,
        "image_encoder_ms": work.image_encoder_ms,
        "prompts_ms": work.prompts_ms,
        "output_ms": output_ms,
        "total_ms": _ms(started),
        "image_cache_hit": work.cache_hit,
    }


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
        summary="SAM3-LiteText: every instance of a noun phrase (and/or exemplar boxes) as masks, boxes, scores; "
        "the object at some clicks or in a box as masks (with SAM3's tracker).",
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
    object_errors = {
        **errors,
        400: {"model": ErrorResponse, "description": "Malformed body, or the model has no tracker (code no_tracker)"},
        404: {"model": ErrorResponse, "description": "Unknown or expired session or object_id"},
        409: {"model": ErrorResponse, "description": "The session's image is no longer held: send it again"},
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
            image, params = await parse_body(request, body, SEGMENT)
            check_limits(params, settings)
            return await service.segment(image, params, started)

    @app.post(
        "/v1/segment_object",
        response_model=ObjectResponse,
        responses=object_errors,
        dependencies=auth,
        openapi_extra={"requestBody": object_request_body()},
        summary="Segment the object at these clicks or in this box; refine it with more clicks",
    )
    async def segment_object(request: Request) -> Response:
        started = time.perf_counter()
        if not predictor.model.has_tracker:
            raise no_tracker(settings.model_name)
        check_content_length(request, settings.max_body_bytes)
        with service.admission.slot():
            body = await read_body(request, settings.max_body_bytes)
            image, params = await parse_body(request, body, OBJECTS)
            check_object_limits(image, params, settings)
            return await service.segment_objects(image, params, started)

    @app.post(
        "/v1/track",
        responses={**object_errors, 413: {"model": ErrorResponse, "description": "Body or video too large"}},
        dependencies=auth,
        summary="Track every instance of noun phrases through a short video (multipart: video, prompts, settings)",
    )
    async def track(request: Request) -> Response:
        started = time.perf_counter()
        if not predictor.model.has_tracker:
            raise no_tracker(settings.model_name)
        check_content_length(request, settings.max_body_bytes)
        with service.admission.slot():
            body = await read_body(request, settings.max_body_bytes)
            parsed = await parse_track_form(request, body, settings)
            del body
            try:
                return await service.track(parsed, started)
            finally:
                parsed.close()

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
            sessions=len(service.sessions),
        )
        return JSONResponse(health.model_dump(), status_code=200 if alive else 503)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


async def parse_body(request: Request, body: bytes, kind: BodyKind) -> tuple[Any, Any]:
    """Dispatch on Content-Type: JSON (base64 image) or multipart (file upload)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return await run_in_threadpool(parse_json, body, kind)  # base64 of a large image: not on the event loop
    if content_type == "multipart/form-data":
        return await parse_multipart(request, body, kind)
    raise ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type {content_type or '(none)'!r} is not accepted; send application/json or multipart/form-data",
        field="content-type",
    )


def no_tracker(model_name: str) -> ApiError:
    return ApiError(
        400,
        "no_tracker",
        "this server's model has no tracker, which clicks and object boxes need: restart it with one, e.g. "
        f"'sam3lite serve --model {model_name} --tracker sam3' (facebook/sam3's tracker fits every LiteText model)",
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
        max_objects=settings.max_objects,
        max_points=settings.max_points,
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
        tracker=model.has_tracker,
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


def object_request_body() -> dict[str, Any]:
    """OpenAPI for ``/v1/segment_object``'s two body forms."""
    form_schema = {
        "type": "object",
        "properties": {
            "image": {"type": "string", "format": "binary", "description": "The image file (optional with a session)"},
            "session": {"type": "string", "description": "From an earlier answer on this image"},
            "objects": {
                "type": "string",
                "description": 'JSON list of objects, e.g. [{"points": [[120, 80, 1]]}, {"object_id": 1, '
                '"points": [[140, 200, 0]]}, {"box": [10, 20, 200, 180]}]',
            },
            "multimask": {"type": "boolean", "default": True},
            "output": {"type": "string", "enum": ["rle", "polygons", "png"], "default": "rle"},
        },
        "required": ["objects"],
    }
    json_schema = _inline_refs(ObjectJSONRequest.model_json_schema())
    return {
        "required": True,
        "content": {"application/json": {"schema": json_schema}, "multipart/form-data": {"schema": form_schema}},
    }


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace pydantic's local ``#/$defs/X`` references by the definitions (OpenAPI would not resolve them)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000
