"""Point-prompt benchmark: SAM3's tracker head in sam3lite against transformers' ``Sam3TrackerModel``.

Both get the same full-size random weights (ViT, tracker neck, prompt encoder, mask decoder) and the
same image and clicks, in one process. Rows: encoding an image for clicks (ViT + necks), one click on
an encoded image (prompt encoder, mask decoder and masks at the image size), 8 objects with one click
each, and the cost of a click as a share of the image encoding. Medians of ``repeats`` runs.

transformers' ``Sam3TrackerModel(pixel_values=...)`` leaves out SAM3's no-memory embedding; both sides
here decode from SAM3's embeddings (see tests/modeling/tracker/test_tracker_image_parity.py).
"""

from __future__ import annotations

from typing import Any

import torch

from ..checkpoints import VARIANTS, Sam3LiteTextModel, skip_weight_init
from ..modeling.config import Sam3LiteTextConfig
from ..modeling.tracker.config import TrackerConfig
from ..objects import upscale_masks
from ..predictor import Predictor
from .image import PeakMemory, _randomize, median_time

IMAGE_SIZE = (480, 640)  # (height, width) of the "photo" the clicks are on
CLICK = (320.0, 200.0)  # (x, y) pixels of the photo


def build_tracker_pair(video_config: dict[str, Any] | None = None) -> tuple[torch.nn.Module, Sam3LiteTextModel]:
    """(transformers Sam3TrackerModel, sam3lite S0 + SAM3 tracker) on the same random weights: full size, or
    the detector / tracker of a ``sam3_video`` config dict (tests use a tiny one)."""
    from transformers import Sam3TrackerConfig, Sam3TrackerModel

    if video_config is None:
        detector, tracker, ref_config = VARIANTS["s0"].config(), TrackerConfig(), Sam3TrackerConfig()
    else:
        detector = Sam3LiteTextConfig.from_dict(video_config["detector_config"])
        tracker = TrackerConfig.from_dict(video_config["tracker_config"])
        parts = ("vision_config", "prompt_encoder_config", "mask_decoder_config")
        ref_config = Sam3TrackerConfig(**{k: tracker.to_dict()[k] for k in parts})
    ref = Sam3TrackerModel(ref_config).eval()
    _randomize(ref)
    with skip_weight_init():
        ours = Sam3LiteTextModel(detector, tracker_config=tracker)
    ours.load_state_dict(tracker_state_from_reference(ours, ref))
    return ref, ours.eval()


def tracker_state_from_reference(ours: torch.nn.Module, ref: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our state dict filled from a transformers tracker model (``Sam3TrackerModel`` or
    ``Sam3TrackerVideoModel``): its ViT, neck and tracker weights under our names; parts it lacks (the
    detector's heads, and for a click model the video memory) get small random values."""
    theirs = ref.state_dict()
    state = {}
    for key, value in ours.state_dict().items():
        if key.startswith("vision_encoder.backbone."):
            source = key
        elif key.startswith("tracker_neck."):
            source = "vision_encoder.neck." + key.removeprefix("tracker_neck.")
        elif key.startswith("tracker_model."):
            source = key.removeprefix("tracker_model.")
        else:
            source = None
        if source in theirs:
            state[key] = theirs[source]
        else:
            state[key] = torch.randn_like(value) * 0.02 if value.is_floating_point() else torch.zeros_like(value)
    return state


def _reference_embeddings(ref: torch.nn.Module, pixels: torch.Tensor) -> list[torch.Tensor]:
    levels = ref.get_image_features(pixels).fpn_hidden_states
    maps = [x.permute(1, 2, 0).reshape(1, -1, *s) for x, s in zip(levels, ref.backbone_feature_sizes, strict=False)]
    maps[-1] = maps[-1] + ref.no_memory_embedding.view(1, -1, 1, 1)
    return maps


def _reference_click(ref: torch.nn.Module, maps: list[torch.Tensor], points: torch.Tensor) -> Any:
    """points [B, 1, 2] in model-input pixels -> the reference's masks at the photo size (bool)."""
    labels = torch.ones(points.shape[:2], dtype=torch.long)
    out = ref(image_embeddings=maps, input_points=points[None], input_labels=labels[None], multimask_output=True)
    return out, upscale_masks(out.pred_masks[0], IMAGE_SIZE)


def run_tracker(
    repeats: int = 3, threads: int | None = None, video_config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """All point-prompt measurements (CPU, float32); a JSON-able report."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cpu")
    ref, ours = build_tracker_pair(video_config)
    size = ours.config.image_size
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    scale = torch.tensor([size / IMAGE_SIZE[1], size / IMAGE_SIZE[0]])
    rows: list[dict[str, Any]] = []

    def pair(name: str, ref_fn: Any, ours_fn: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"name": name}
        with torch.inference_mode():
            for who, fn in (("reference", ref_fn), ("sam3lite", ours_fn)):
                with PeakMemory(device) as peak:
                    row[f"{who}_s"] = median_time(fn, repeats, device)
                row[f"{who}_peak_mib"] = peak.mib
        row["speedup"] = row["reference_s"] / row["sam3lite_s"]
        rows.append(row)
        return row

    predictor = Predictor(ours)

    def encode() -> None:
        predictor.set_pixel_values(pixels, IMAGE_SIZE)
        predictor.tracker_features()  # the tracker neck, which the first click runs

    encoding = pair("encode an image for clicks (ViT + necks)", lambda: _reference_embeddings(ref, pixels), encode)
    with torch.inference_mode():
        maps = _reference_embeddings(ref, pixels)
        encode()
    one = torch.tensor([[CLICK]]) * scale
    click = pair(
        "one click on an encoded image (masks at 480x640)",
        lambda: _reference_click(ref, maps, one),
        lambda: predictor.predict_object(points=[CLICK], point_labels=[1]),
    )
    eight = torch.rand(8, 1, 2, generator=torch.Generator().manual_seed(1)) * torch.tensor([640.0, 480.0])
    pair(
        "8 objects, one click each, one call",
        lambda: _reference_click(ref, maps, eight * scale),
        lambda: predictor.predict_object(points=eight, point_labels=torch.ones(8, 1, dtype=torch.long)),
    )
    with torch.inference_mode():
        ours_out = predictor.predict_object(points=[CLICK], point_labels=[1])
        ref_out, ref_masks = _reference_click(ref, maps, one)
    errors = {
        "low_res_logits": _rel(ours_out.low_res_logits, ref_out.pred_masks[0, 0]),
        "iou_scores": _rel(ours_out.iou_scores, ref_out.iou_scores[0, 0]),
        "mask pixels that differ": float((ours_out.masks != ref_masks[0]).float().mean()),
    }
    return {
        "rows": rows,
        "click_share_of_encoding": click["sam3lite_s"] / encoding["sam3lite_s"],
        "errors": errors,
        "threads": torch.get_num_threads(),
    }


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def format_tracker_markdown(report: dict[str, Any]) -> str:
    lines = [
        "| point prompts (CPU, float32) | reference (s) | sam3lite (s) | speedup | peak MiB (ref / ours) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        peaks = " / ".join(
            "-" if p is None else f"{p:.0f}" for p in (row["reference_peak_mib"], row["sam3lite_peak_mib"])
        )
        lines.append(
            f"| {row['name']} | {row['reference_s']:.4f} | {row['sam3lite_s']:.4f} | {row['speedup']:.2f}x | {peaks} |"
        )
    lines.append("")
    lines.append(f"one click costs {report['click_share_of_encoding']:.2%} of encoding the image; "
                 f"errors vs reference: {report['errors']}; threads {report['threads']}")  # fmt: skip
    return "\n".join(lines)
