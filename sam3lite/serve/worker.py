"""The one thread that runs the model, fed by a bounded queue.

Request handlers never touch the model: they submit a ``Job`` and await its future, so the event loop
stays free while the model runs. One thread owns the ``Predictor`` (its current image is state) and
runs jobs in arrival order; a full queue is refused at once (``QueueFull``), never waited on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from ..predictor import Predictor
from .cache import CachedImage, FeatureCache
from .objects import ObjectArrays, run_objects
from .schemas import ObjectParams, SegmentParams
from .sessions import SessionStore

log = logging.getLogger("sam3lite.serve")


class QueueFull(Exception):
    """No room for another job: answer 503."""


@dataclass
class Job:
    """One request's model work. Either ``cached`` features or ``pixel_values`` to encode."""

    key: str
    size: tuple[int, int]
    params: SegmentParams | ObjectParams
    cached: CachedImage | None = None
    pixel_values: torch.Tensor | None = None
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class PromptArrays:
    prompt: str
    masks: np.ndarray  # bool [N, H, W]
    boxes: np.ndarray  # float32 [N, 4] xyxy pixels
    scores: np.ndarray  # float32 [N]


@dataclass
class WorkResult:
    """Detections per text prompt (``/v1/segment``), or the session and answer per object (``/v1/segment_object``)."""

    results: list[PromptArrays]
    cache_hit: bool
    queue_ms: float
    image_encoder_ms: float
    prompts_ms: float
    session: str | None = None
    objects: list[ObjectArrays] = field(default_factory=list)


class ModelWorker:
    """Runs ``Job``s on ``predictor`` in one daemon thread; at most ``capacity`` jobs wait.

    Object jobs read and update ``sessions``; each holds at most ``max_points`` clicks per object.
    """

    def __init__(
        self,
        predictor: Predictor,
        cache: FeatureCache,
        capacity: int,
        sessions: SessionStore | None = None,
        max_points: int = 64,
    ) -> None:
        self.predictor, self.cache = predictor, cache
        self.sessions = sessions if sessions is not None else SessionStore(max_bytes=0, max_sessions=1, ttl_s=1.0)
        self.max_points = max_points
        # The image the predictor holds now: the next job on it keeps the predictor's state (the
        # tracker's features among it, computed on the first click), so a run of clicks on one image
        # costs one tracker neck pass as well as one image encoding.
        self._current_key: str | None = None
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max(capacity, 1))
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.started = False  # start() called and stop() not since
        self.seconds_per_job = 0.5  # running mean, for Retry-After

    def start(self) -> None:
        with self._lock:
            self.started = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sam3lite-model", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self.started = False
        if thread is not None and thread.is_alive():
            self._jobs.put(None)  # after the jobs already queued
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    def submit(self, job: Job) -> Future:
        self.start()
        try:
            self._jobs.put_nowait(job)
        except queue.Full as err:
            raise QueueFull from err
        return job.future

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue  # the client went away while it waited
            started = time.perf_counter()
            try:
                job.future.set_result(self._run(job, started))
            except BaseException as err:  # noqa: B036 - handed to the waiting request, which maps it to 4xx/5xx
                job.future.set_exception(err)
            self.seconds_per_job = 0.8 * self.seconds_per_job + 0.2 * (time.perf_counter() - started)

    def _run(self, job: Job, started: float) -> WorkResult:
        queue_ms = (started - job.submitted) * 1000
        cache_hit, encoder_ms = self._set_image(job)
        t0 = time.perf_counter()
        if isinstance(job.params, ObjectParams):
            session, objects = run_objects(
                self.predictor, self.sessions, job.key, job.size, job.params, self.max_points
            )
            prompts_ms = (time.perf_counter() - t0) * 1000
            return WorkResult([], cache_hit, queue_ms, encoder_ms, prompts_ms, session, objects)
        results = self._predict(job.params)
        prompts_ms = (time.perf_counter() - t0) * 1000
        return WorkResult(results, cache_hit, queue_ms, encoder_ms, prompts_ms)

    def _set_image(self, job: Job) -> tuple[bool, float]:
        """Give the predictor the job's image, from the cache or encoded: (cache hit, encoder ms)."""
        cached = job.cached or self.cache.get(job.key)  # a twin request may have encoded it meanwhile
        if cached is not None:
            if job.key != self._current_key:
                self._current_key = None  # in case set_features fails half-way
                self.predictor.set_features(cached.vision, cached.size)
                self._current_key = job.key
            return True, 0.0
        if job.pixel_values is None:
            raise RuntimeError("job has neither cached features nor pixel values")
        t0 = time.perf_counter()
        vision = self._encode(job.pixel_values)
        encoder_ms = (time.perf_counter() - t0) * 1000
        self.cache.put(job.key, vision, job.size)
        self._current_key = None
        self.predictor.set_features(vision, job.size)
        self._current_key = job.key
        return False, encoder_ms

    @torch.inference_mode()
    def _encode(self, pixel_values: torch.Tensor):
        model = self.predictor.model
        vision = model.get_vision_features(pixel_values.to(device=model.device, dtype=model.dtype))
        _sync(model.device)
        return vision

    def _predict(self, params: SegmentParams) -> list[PromptArrays]:
        out = self.predictor.predict(
            text=list(params.prompts) or None,
            boxes=None if params.boxes is None else [list(b) for b in params.boxes],
            box_labels=params.box_labels,
            threshold=params.threshold,
            mask_threshold=params.mask_threshold,
        )
        results = out if isinstance(out, list) else [out]
        # To host memory here, so the device memory is free before the next job.
        return [
            PromptArrays(
                r.prompt,
                r.masks.cpu().numpy(),
                r.boxes.float().cpu().numpy(),
                r.scores.float().cpu().numpy(),
            )
            for r in results
        ]


def _sync(device: torch.device) -> None:
    # Timings on an asynchronous device mean nothing without it.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
