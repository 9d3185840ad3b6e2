"""Text-prompted video benchmark: ``VideoPredictor.start(video, text=...)`` against transformers'
``Sam3VideoModel`` (``Sam3VideoProcessor.add_text_prompt`` + ``propagate_in_video_iterator``).

Same random weights (a LiteText S0 detector and SAM3's tracker; full size, or the tiny test config), the
same synthetic video, one phrase, one process. Random detectors score every query alike, so the
thresholds are set for both so that ``objects`` detections are born on the first frame and tracked
(``score_threshold_detection`` = ``new_det_thresh`` = 0, ``max_num_objects`` = ``objects``); NMS and
the hole/speck clean-up are off on both (transformers skips them without its kernel package). Frames
per second of the whole pass (the reference's upfront preprocessing of the video excluded), peak
memory above the start, and growth of the memory held from the middle frame to the last: medians of
interleaved repeats after an untimed warm-up pass of each (``run_video_text``).
"""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..runtime import resolve_dtype
from ..video_predictor import VideoPredictor
from .image import _randomize
from .video import VIDEO_SIZE, _timed_pass, synthetic_frames, video_table

PHRASE = "person"


def _settings(objects: int) -> dict[str, Any]:
    return {
        "score_threshold_detection": 0.0,
        "new_det_thresh": 0.0,
        "max_num_objects": objects,
        "det_nms_thresh": 0.0,
        "fill_hole_area": 0,
        "hotstart_delay": 0,
    }


def build_text_video_pair(tiny_config: dict[str, Any] | None, directory: Path) -> tuple[torch.nn.Module, Path]:
    """A random transformers ``Sam3VideoModel`` (LiteText S0 detector) saved in facebook/sam3's layout."""
    from safetensors.torch import load_file, save_file
    from transformers import Sam3TrackerVideoConfig, Sam3VideoConfig, Sam3VideoModel

    from ..modeling.config import Sam3LiteTextConfig
    from ..modeling.tracker.config import TrackerConfig

    tiny = tiny_config or {"detector_config": {}, "tracker_config": {}}
    detector = Sam3LiteTextConfig.from_dict(tiny["detector_config"]).to_dict()
    tracker = TrackerConfig.from_dict(tiny["tracker_config"]).to_dict()
    tracker.pop("model_type", None)
    tracker = Sam3TrackerVideoConfig(**tracker).to_dict()
    extra = {} if tiny_config is None else {"low_res_mask_size": 64}
    ref = Sam3VideoModel(Sam3VideoConfig(detector_config=detector, tracker_config=tracker, **extra)).eval()
    _randomize(ref)
    ref.save_pretrained(directory)
    # transformers 5.23 writes the tracker under tracker_model.tracker_model.*; the hub's layout has tracker_model.*
    path = directory / "model.safetensors"
    state = load_file(path)
    state = {k.replace("tracker_model.tracker_model.", "tracker_model.", 1): v for k, v in state.items()}
    save_file(state, path, metadata={"format": "pt"})
    return ref, directory


def _ours(model, frames, objects: int, device) -> dict[str, Any]:
    vp = VideoPredictor(model)
    session = vp.start(frames, text=PHRASE, settings=_settings(objects))
    result = _timed_pass(vp.propagate(session), len(frames), device)
    result["objects"] = len(session.objects)
    return result


def _reference(ref, frames, objects: int, device, dtype) -> dict[str, Any]:
    from transformers import Sam3ImageProcessor, Sam3VideoProcessor
    from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

    from ..processing.tokenizer import Tokenizer

    for name, value in _settings(objects).items():
        setattr(ref, name, value)
    size = ref.config.detector_config.vision_config.backbone_config.image_size
    images = Sam3ImageProcessor(size={"height": size, "width": size})
    # postprocess_outputs reads nothing of the processor: no tokenizer needed (the prompt is tokenized below).
    processor = object.__new__(Sam3VideoProcessor)
    pixels = images(images=frames, return_tensors="pt")["pixel_values"]
    session = Sam3VideoInferenceSession(
        video=pixels, video_height=frames[0].shape[0], video_width=frames[0].shape[1],
        inference_device=device, dtype=dtype,
    )  # fmt: skip
    # What processor.add_text_prompt stores, from our tokenizer (equal to transformers' CLIP tokenizer: tested).
    prompt_id = session.add_prompt(PHRASE)
    ids, mask = Tokenizer(32)([PHRASE])
    session.prompt_input_ids[prompt_id], session.prompt_attention_masks[prompt_id] = ids.to(device), mask.to(device)
    outputs = (processor.postprocess_outputs(session, out) for out in ref.propagate_in_video_iterator(session))
    return _timed_pass(outputs, len(frames), device)


WARMUP_FRAMES = 2  # frames of the untimed first pass of each implementation


def run_video_text(
    objects: int = 4,
    num_frames: int = 16,
    device: str = "cpu",
    dtype: str = "float32",
    tiny_config: dict[str, Any] | None = None,
    repeats: int = 3,
) -> dict[str, Any]:
    """Both implementations on one phrase, ``repeats`` timed passes each, interleaved (reference first on
    even repeats, sam3lite first on odd ones, so load from other jobs falls on both); medians in a
    JSON-able report.

    Each implementation first runs an untimed ``WARMUP_FRAMES``-frame pass: sam3lite memory-maps its
    checkpoint, so the first pass would otherwise count the weights' pages (the text encoder's alone are
    ~230 MiB at S0 size) as peak memory, which the reference, holding its weights in ordinary memory,
    never shows; first calls also build the kernels' caches.
    """
    import statistics

    import sam3lite

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    torch_device, torch_dtype = torch.device(device), resolve_dtype(dtype)
    frames = synthetic_frames(num_frames)
    with tempfile.TemporaryDirectory() as tmp:
        ref, directory = build_text_video_pair(tiny_config, Path(tmp))
        ours = sam3lite.load(directory, device=torch_device, dtype=torch_dtype)
    ref = ref.to(torch_device, torch_dtype)

    def one(who: str, clip: list) -> dict[str, Any]:
        gc.collect()
        if torch_device.type == "cuda":
            torch.cuda.empty_cache()
        if who == "reference":
            return _reference(ref, clip, objects, torch_device, torch_dtype)
        return _ours(ours, clip, objects, torch_device)

    runs: dict[str, list[dict[str, Any]]] = {"reference": [], "sam3lite": []}
    with torch.inference_mode():
        for who in runs:
            one(who, frames[: min(WARMUP_FRAMES, num_frames)])
        for i in range(repeats):
            for who in ("reference", "sam3lite") if i % 2 == 0 else ("sam3lite", "reference"):
                runs[who].append(one(who, frames))
    row: dict[str, Any] = {"objects": objects}
    for who, results in runs.items():
        row[who] = {
            key: None if any(r[key] is None for r in results) else statistics.median(r[key] for r in results)
            for key in ("fps", "peak_mib", "held_growth_mib")
        }
        row[who]["fps_runs"] = [r["fps"] for r in results]
    row["sam3lite"]["objects"] = runs["sam3lite"][-1]["objects"]
    row["speedup"] = row["sam3lite"]["fps"] / row["reference"]["fps"]
    return {
        "rows": [row],
        "frames": num_frames,
        "repeats": repeats,
        "video_size": list(VIDEO_SIZE),
        "device": device,
        "dtype": dtype,
        "tiny": tiny_config is not None,
    }


def format_video_text_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"text-prompted video ('{PHRASE}'), {report['frames']} frames, {report['device']} {report['dtype']}"
        + (" (tiny config)" if report["tiny"] else " (full size)")
        + f", medians of {report.get('repeats', 1)} interleaved runs after a warm-up",
        "",
    ]
    return "\n".join(lines + video_table(report["rows"], fps_digits=3))
