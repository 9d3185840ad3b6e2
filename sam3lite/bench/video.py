"""Video tracking benchmark: ``VideoPredictor`` against transformers' ``Sam3TrackerVideoModel``.

Same random weights (full size, or the tiny test config with ``tiny=True``), same synthetic video (a
bright square and a dark disc moving over a gradient), same objects (N clicks spread over frame 0),
one process. Per object count: frames per second of propagation (the prompts on frame 0 excluded),
peak memory above the start, and how much the memory held grows from the middle frame to the last
(zero means the video's length does not matter). transformers' session preprocesses and keeps the whole
video and every frame's outputs; ours decodes frames on demand and drops what no step can read.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np
import torch

from ..checkpoints import Sam3LiteTextModel, skip_weight_init
from ..modeling.config import Sam3LiteTextConfig, VisionConfig
from ..modeling.tracker.config import TrackerConfig
from ..runtime import resolve_dtype
from ..video_predictor import VideoPredictor
from .image import PeakMemory, _randomize, _rss_bytes
from .tracker import tracker_state_from_reference

VIDEO_SIZE = (360, 480)  # (height, width) of the synthetic frames


def tiny_video_config() -> dict[str, Any]:
    """A small ``sam3_video``-style config (detector and tracker dicts) for a quick CPU run: a 4-layer
    64-wide ViT on 224-pixel frames, 128-wide tracker (memory and pointers need > 64)."""
    vision = {
        "backbone_config": {
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
            "image_size": 224, "patch_size": 14, "window_size": 8, "global_attn_indexes": [1, 3],
            "pretrain_image_size": 112,
        },
        "fpn_hidden_size": 128,
        "backbone_feature_sizes": [[64, 64], [32, 32], [16, 16]],
    }  # fmt: skip
    head = {"hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 256}
    detector = {
        "vision_config": vision,
        "geometry_encoder_config": head,
        "detr_encoder_config": head,
        "detr_decoder_config": head,
        "mask_decoder_config": {"hidden_size": 128, "num_attention_heads": 4},
    }
    tracker = {
        "vision_config": vision,
        "image_size": 224,
        "prompt_encoder_config": {"hidden_size": 128, "image_size": 224, "patch_size": 14},
        "mask_decoder_config": {
            "hidden_size": 128, "num_attention_heads": 4, "mlp_dim": 256, "iou_head_hidden_dim": 64,
        },
        "memory_attention_hidden_size": 128, "memory_attention_num_layers": 2,
        "memory_attention_feed_forward_hidden_size": 256, "memory_attention_rope_feat_sizes": [16, 16],
        "memory_encoder_hidden_size": 128, "mask_downsampler_embed_dim": 128, "memory_fuser_embed_dim": 128,
        "memory_fuser_intermediate_dim": 256,
    }  # fmt: skip
    return {"detector_config": detector, "tracker_config": tracker}


def synthetic_frames(count: int, size: tuple[int, int] = VIDEO_SIZE) -> list[np.ndarray]:
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    background = (np.stack([xs / width, ys / height, 1 - xs / width], -1) * 200 + 20).astype(np.uint8)
    frames = []
    for t in range(count):
        frame = background.copy()
        x0 = int(20 + (t * 5) % (width - 120))
        frame[60:160, x0 : x0 + 100] = (240, 220, 200)
        disc = (ys - (100 + (t * 3) % (height - 200))) ** 2 + (xs - width * 0.7) ** 2 < 40**2
        frame[disc] = (15, 60, 25)
        frames.append(frame)
    return frames


def build_video_pair(tiny_config: dict[str, Any] | None = None) -> tuple[torch.nn.Module, Sam3LiteTextModel]:
    """(transformers Sam3TrackerVideoModel, sam3lite model with the tracker) on the same random weights."""
    from transformers import Sam3TrackerVideoConfig, Sam3TrackerVideoModel

    if tiny_config is None:
        tracker = TrackerConfig()
        detector = Sam3LiteTextConfig.from_dict({"vision_config": VisionConfig().to_dict()})
    else:
        tracker = TrackerConfig.from_dict(tiny_config["tracker_config"])
        detector = Sam3LiteTextConfig.from_dict(tiny_config["detector_config"])
    data = tracker.to_dict()
    data.pop("model_type", None)
    ref = Sam3TrackerVideoModel(Sam3TrackerVideoConfig(**data)).eval()
    _randomize(ref)
    with skip_weight_init():
        ours = Sam3LiteTextModel(detector, tracker_config=tracker)
    ours.load_state_dict(tracker_state_from_reference(ours, ref))
    return ref, ours.eval()


def _clicks(count: int, size: tuple[int, int]) -> list[list[float]]:
    gen = np.random.default_rng(count)
    return [[float(gen.uniform(10, size[1] - 10)), float(gen.uniform(10, size[0] - 10))] for _ in range(count)]


def _held_mib(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device) / 2**20
    return _rss_bytes() / 2**20


def _ours(model, frames, clicks, device) -> dict[str, Any]:
    vp = VideoPredictor(model)
    session = vp.start(frames)
    for obj, xy in enumerate(clicks, start=1):
        vp.add_object(session, 0, obj, points=[xy], point_labels=[1])
    return _timed_pass(vp.propagate(session), len(frames), device)


def _reference(ref, frames, clicks, device, dtype) -> dict[str, Any]:
    from transformers import Sam2VideoVideoProcessor, Sam3ImageProcessor, Sam3TrackerVideoProcessor

    size = ref.config.image_size
    images = Sam3ImageProcessor(size={"height": size, "width": size})
    processor = Sam3TrackerVideoProcessor(
        images, Sam2VideoVideoProcessor(size={"height": size, "width": size}), target_size=size
    )
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import Sam3TrackerVideoInferenceSession

    pixels = images(images=frames, return_tensors="pt")["pixel_values"]
    session = Sam3TrackerVideoInferenceSession(
        video=pixels, video_height=frames[0].shape[0], video_width=frames[0].shape[1],
        inference_device=device, dtype=dtype,
    )  # fmt: skip
    for obj, xy in enumerate(clicks, start=1):
        processor.add_inputs_to_inference_session(session, 0, obj, input_points=[[[xy]]], input_labels=[[[1]]])
        ref(inference_session=session, frame_idx=0)
    outputs = (
        processor.post_process_masks([out.pred_masks], [list(frames[0].shape[:2])])[0]
        for out in ref.propagate_in_video_iterator(session, start_frame_idx=0)
    )
    return _timed_pass(outputs, len(frames), device)


def _timed_pass(results, num_frames: int, device: torch.device) -> dict[str, Any]:
    """Consume a propagation; frames per second, peak memory, growth of the memory held from the middle
    frame to the end (sam3lite's windows are full after ``max_object_pointers_in_encoder`` frames)."""
    held: dict[str, float] = {}
    with PeakMemory(device) as peak:
        start = time.perf_counter()
        for i, _ in enumerate(results):
            if i == num_frames // 2:
                paused = time.perf_counter()
                held["half"] = _held_mib(device)
                start += time.perf_counter() - paused  # the reading is not part of the work timed
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    held["end"] = _held_mib(device)
    return {"fps": num_frames / seconds, "peak_mib": peak.mib, "held_growth_mib": held["end"] - held["half"]}


def run_video(
    objects: tuple[int, ...] = (1, 4, 16),
    num_frames: int = 64,
    device: str = "cpu",
    dtype: str = "float32",
    tiny_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Both implementations per object count; a JSON-able report."""
    torch_device, torch_dtype = torch.device(device), resolve_dtype(dtype)
    ref, ours = build_video_pair(tiny_config)
    ref, ours = ref.to(torch_device, torch_dtype), ours.to(torch_device, torch_dtype)
    frames = synthetic_frames(num_frames)
    rows = []
    with torch.inference_mode():
        for count in objects:
            clicks = _clicks(count, VIDEO_SIZE)
            row: dict[str, Any] = {"objects": count}
            for who in ("reference", "sam3lite"):
                gc.collect()
                if torch_device.type == "cuda":
                    torch.cuda.empty_cache()
                if who == "reference":
                    row[who] = _reference(ref, frames, clicks, torch_device, torch_dtype)
                else:
                    row[who] = _ours(ours, frames, clicks, torch_device)
            row["speedup"] = row["sam3lite"]["fps"] / row["reference"]["fps"]
            rows.append(row)
    return {"rows": rows, "frames": num_frames, "device": device, "dtype": dtype, "tiny": tiny_config is not None}


def format_video_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"video tracking, {report['frames']} frames, {report['device']} {report['dtype']}"
        + (" (tiny config)" if report["tiny"] else " (full size)"),
        "",
    ]
    return "\n".join(lines + video_table(report["rows"], fps_digits=2))


def video_table(rows: list[dict[str, Any]], fps_digits: int) -> list[str]:
    """The markdown table of ``bench --video`` (and ``--text``): fps, speedup, peak and held memory."""
    lines = [
        "| objects | reference fps | sam3lite fps | speedup | peak MiB (ref / ours) "
        "| held growth, middle -> end MiB (ref / ours) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        r, o = row["reference"], row["sam3lite"]
        peak = " / ".join("-" if p is None else f"{p:.0f}" for p in (r["peak_mib"], o["peak_mib"]))
        growth = f"{r['held_growth_mib']:.1f} / {o['held_growth_mib']:.1f}"
        fps = f"{r['fps']:.{fps_digits}f} | {o['fps']:.{fps_digits}f}"
        lines.append(f"| {row['objects']} | {fps} | {row['speedup']:.2f}x | {peak} | {growth} |")
    return lines
