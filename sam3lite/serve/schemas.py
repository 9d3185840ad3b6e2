"""Request and response bodies (pydantic): the OpenAPI schema is generated from these."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

OutputFormat = Literal["rle", "polygons", "png"]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Box = Annotated[list[FiniteFloat], Field(min_length=4, max_length=4, description="[x1, y1, x2, y2]")]


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


class SegmentParams(BaseModel):
    """Everything but the image; multipart form fields carry the same names."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[str] = Field(
        default_factory=list,
        description="Noun phrases; each gets its own list of detections. May be empty when boxes are given.",
        examples=[["dog", "red car"]],
    )
    boxes: list[Box] | None = Field(
        None,
        description="Exemplar boxes, xyxy in pixels of the image, shared by every prompt. "
        "With no prompts they form one visual prompt (named 'visual').",
        examples=[[[10, 20, 110, 140]]],
    )
    box_labels: list[Literal[0, 1]] | None = Field(
        None, description="1 (positive, the default) or 0 (negative) per box."
    )
    threshold: FiniteFloat = Field(0.5, ge=0, le=1, description="Keep detections scoring above this.")
    mask_threshold: FiniteFloat = Field(0.5, ge=0, le=1, description="Binarize mask probabilities at this value.")
    output: OutputFormat = Field(
        "rle",
        description="Mask encoding: 'rle' (COCO compressed RLE, exact), 'polygons' (outer contours, "
        "COCO flat [x0, y0, x1, y1, ...] lists; holes are not represented) or 'png' (base64 1-bit PNG).",
    )


class SegmentJSONRequest(SegmentParams):
    """``application/json`` form of a request: the image file's bytes in base64."""

    image: str = Field(
        description="The image file (PNG, JPEG, WebP, ...) base64-encoded; a 'data:image/...;base64,' prefix is "
        "accepted. URLs are not fetched."
    )


Point = Annotated[
    list[FiniteFloat],
    Field(min_length=2, max_length=3, description="[x, y] (a positive click) or [x, y, label], label 1 or 0"),
]


class ObjectInput(BaseModel):
    """One object: new clicks and/or a box; with ``object_id``, added to that object of the session."""

    model_config = ConfigDict(extra="forbid")

    object_id: int | None = Field(
        None,
        ge=1,
        description="Refine this object of the session (from an earlier answer): its clicks so far, these new "
        "ones, and its last mask (low-res logits kept by the server). Omit to start a new object.",
    )
    points: list[Point] = Field(
        default_factory=list,
        description="Clicks in pixels of the image: [x, y, label], label 1 on the object (positive) or 0 on the "
        "background (negative); [x, y] means label 1.",
        examples=[[[120, 80, 1], [140, 200, 0]]],
    )
    box: Box | None = Field(
        None,
        description="A box around *this* object, xyxy in pixels (replaces the object's earlier box). Not an exemplar "
        "box: /v1/segment's boxes mean 'find everything like this'.",
    )
    mask_index: int | None = Field(
        None, ge=0, description="With object_id: refine from this candidate of its last answer (default: its best)."
    )


class ObjectParams(BaseModel):
    """``POST /v1/segment_object`` without the image; multipart form fields carry the same names."""

    model_config = ConfigDict(extra="forbid")

    session: str | None = Field(
        None,
        description="From an earlier answer: the image and the objects' last masks stay on the server for a while, "
        "so the image may be left out and objects refined by object_id.",
    )
    objects: list[ObjectInput] = Field(description="One entry per object, answered in this order.")
    multimask: bool = Field(
        True,
        description="Three candidate masks per object (for one ambiguous click) instead of one (better once an "
        "object has several clicks or a box).",
    )
    output: OutputFormat = Field("rle", description="Mask encoding, as for /v1/segment.")


class ObjectJSONRequest(ObjectParams):
    """``application/json`` form: the image in base64, or only a session that holds it."""

    image: str | None = Field(
        None,
        description="The image file base64-encoded (as for /v1/segment). May be left out with a session whose image "
        "the server still holds (else 409 image_not_cached: send it again).",
    )


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


class RleMask(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE string (column-major), as pycocotools writes it")


class Detection(BaseModel):
    """One instance; exactly one of ``rle``, ``polygons``, ``png`` is present (the requested output)."""

    score: float = Field(description="sigmoid(logit) * sigmoid(presence), in [0, 1]")
    box: list[float] = Field(description="[x1, y1, x2, y2] in pixels")
    rle: RleMask | None = None
    polygons: list[list[float]] | None = Field(
        None, description="Outer contours, each a flat [x0, y0, x1, y1, ...] list in pixels"
    )
    png: str | None = Field(None, description="base64 PNG, 1 bit per pixel, white = instance")


class ObjectMask(BaseModel):
    """One candidate mask; exactly one of ``rle``, ``polygons``, ``png`` is present (the requested output)."""

    iou_score: float = Field(description="The model's estimate of this mask's IoU with the object")
    rle: RleMask | None = None
    polygons: list[list[float]] | None = Field(
        None, description="Outer contours, each a flat [x0, y0, x1, y1, ...] list in pixels"
    )
    png: str | None = Field(None, description="base64 PNG, 1 bit per pixel, white = object")


class ObjectAnswer(BaseModel):
    object_id: int = Field(description="Send it back (with the session) to refine this object")
    best: int = Field(description="Index of the mask with the highest iou_score")
    masks: list[ObjectMask] = Field(description="3 candidates with multimask, else 1")
    object_score: float = Field(description="sigmoid(object_score_logit): the model's belief the object is there")
    object_score_logit: float
    points: list[list[float]] = Field(description="Every click of this object so far, [x, y, label]")
    box: list[float] | None = Field(description="The object's box, if it has one")


class PromptDetections(BaseModel):
    prompt: str
    detections: list[Detection]


class ImageInfo(BaseModel):
    width: int
    height: int
    sha256: str = Field(description="Hash of the image file's bytes: the image-feature cache key")


class Timings(BaseModel):
    """Milliseconds spent in each stage of this request."""

    decode_ms: float = Field(description="Hashing, decoding and resizing the image (0 on a cache hit)")
    queue_ms: float = Field(description="Waiting for the model worker")
    image_encoder_ms: float = Field(description="Image encoder (0 on a cache hit)")
    prompts_ms: float = Field(
        description="Text encoder (cached per prompt), detector heads, post-processing; for objects the tracker's "
        "neck (once per image) and mask decoder"
    )
    output_ms: float = Field(description="Encoding masks as RLE / polygons / PNG")
    total_ms: float
    image_cache_hit: bool = Field(description="The image's features came from the cache")


class SegmentResponse(BaseModel):
    image: ImageInfo
    output: OutputFormat
    results: list[PromptDetections] = Field(description="One entry per prompt, in request order")
    timings: Timings


class ObjectResponse(BaseModel):
    image: ImageInfo
    session: str = Field(description="Send it with later requests on this image to refine its objects")
    output: OutputFormat
    objects: list[ObjectAnswer] = Field(description="One entry per requested object, in request order")
    timings: Timings


class Limits(BaseModel):
    max_image_pixels: int
    max_prompts: int
    max_boxes: int
    max_objects: int
    max_points: int
    max_prompt_chars: int
    max_body_bytes: int
    queue_size: int


class ModelInfo(BaseModel):
    name: str = Field(description="What the server was started with (--model)")
    variant: str = Field(description="s0 / s1 / l / sam3 when the config is one of those, else 'custom'")
    device: str
    dtype: str
    image_size: int = Field(description="Side of the square the image encoder sees")
    text_mode: str = Field(description="How prompts are encoded: 'transformers' or 'original' (docs/text_modes.md)")
    tracker: bool = Field(description="The model has SAM3's tracker: /v1/segment_object answers clicks and boxes")
    limits: Limits


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    queue_waiting: int
    queue_capacity: int
    image_cache_entries: int
    sessions: int = Field(description="Click sessions held (objects' last masks, for refinement)")


class ErrorBody(BaseModel):
    status: int
    code: str = Field(description="Stable machine-readable reason, e.g. invalid_field, queue_full, image_too_large")
    message: str
    field: str | None = Field(None, description="The request field at fault, e.g. 'prompts[2]' or 'image'")


class ErrorResponse(BaseModel):
    error: ErrorBody
