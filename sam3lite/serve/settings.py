"""Limits and options of one server; plain data, so tests and the CLI build it without FastAPI."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20
_AT_LEAST_ONE = (
    "max_image_pixels", "max_prompts", "max_boxes", "max_objects", "max_points", "max_prompt_chars", "max_body_bytes",
    "max_sessions",
)  # fmt: skip


@dataclass(frozen=True)
class ServeSettings:
    """What the server accepts and how much it keeps.

    Attributes:
        model_name: shown by ``GET /v1/model`` (the ``--model`` argument).
        api_key: when set, every ``/v1/*`` request needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
        max_image_pixels: width * height above which an image is refused (413) before it is decoded.
        max_prompts: text prompts per request (422 above).
        max_boxes: exemplar boxes per request (422 above).
        max_objects: objects per ``/v1/segment_object`` request (422 above).
        max_points: clicks per object, counting those of earlier requests in its session (422 above).
        max_prompt_chars: characters per prompt (the tokenizer keeps 16-32 tokens anyway).
        max_body_bytes: request body size (413 above); base64 JSON is 4/3 of the file size.
        queue_size: requests admitted beyond the one the model runs; more are answered 503.
        image_cache_bytes: memory the image-feature cache may hold (0 disables it); about 130 MB per
            image for the full-size model in float32, a few hundred kB for the tiny test model.
        image_cache_entries: most images the cache keeps, whatever their size.
        decode_concurrency: images decoded at once (in threads, beside the model); bounds their memory.
        session_cache_bytes: memory for click sessions: each object's last low-res mask logits (3 x 288 x 288
            float32, about 1 MB, at full size with multimask), kept so that the next click refines it.
        max_sessions: click sessions kept, whatever their size; least recently used go first.
        session_ttl_s: a session (and each of its objects) is forgotten this long after its last use.
    """

    model_name: str = "model"
    api_key: str | None = None
    max_image_pixels: int = 40_000_000
    max_prompts: int = 32
    max_boxes: int = 32
    max_objects: int = 16
    max_points: int = 64
    max_prompt_chars: int = 256
    max_body_bytes: int = 32 * MIB
    queue_size: int = 8
    image_cache_bytes: int = 1024 * MIB
    image_cache_entries: int = 64
    decode_concurrency: int = 2
    session_cache_bytes: int = 256 * MIB
    max_sessions: int = 1024
    session_ttl_s: float = 1800.0

    def __post_init__(self) -> None:
        for name in _AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("queue_size", "image_cache_bytes", "image_cache_entries", "session_cache_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.session_ttl_s > 0:
            raise ValueError(f"session_ttl_s must be > 0, got {self.session_ttl_s}")
        if self.decode_concurrency < 1:
            raise ValueError(f"decode_concurrency must be >= 1, got {self.decode_concurrency}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key is empty; leave it unset to serve without a key")
