"""``sam3lite info MODEL``: what a checkpoint holds: its layout and parts (detector, tracker, unused
parts), config summary, text encoder, context length and text mode, parameters per component, dtype.

Parameters are counted on a model built on the ``meta`` device (shapes only, no memory), so buffers
such as BatchNorm statistics are not counted; the dtype is that of the stored tensors.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

# Top-level modules of the detector, grouped as the paper reports them.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "vision": ("vision_encoder",),
    "text": ("text_encoder", "text_projection"),
    "heads": ("geometry_encoder", "detr_encoder", "detr_decoder", "mask_decoder", "dot_product_scoring"),
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "info",
        help="describe a model: config, parameters per component, dtype",
        description="Summarize a checkpoint: config, parameters per component (vision, text, heads), dtype.",
    )
    parser.add_argument("model", metavar="MODEL", help="s0, s1, l, sam3, a hub id or a local checkpoint")
    parser.add_argument("--json", action="store_true", help="print the summary as json")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import read_contents, resolve

    path = resolve(args.model)
    contents = read_contents(path)
    summary = describe(contents.config, contents.detector)
    summary["model"] = {"name": str(args.model), "path": str(path)}
    summary["checkpoint"] = describe_parts(contents)
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0


def count_parameters(config: Any) -> dict[str, int]:
    """Parameters per top-level module of the detector, without allocating any weights."""
    import torch

    from ..checkpoints import Sam3LiteTextModel

    with torch.device("meta"):
        model = Sam3LiteTextModel(config)
    return {name: sum(p.numel() for p in module.parameters()) for name, module in model.named_children()}


def describe(config: Any, state: dict[str, Any]) -> dict[str, Any]:
    """A json-ready summary of a config and its state dict."""
    modules = count_parameters(config)
    components = {group: {m: modules.get(m, 0) for m in names} for group, names in COMPONENTS.items()}
    dtypes = Counter(str(t.dtype).removeprefix("torch.") for t in state.values() if t.is_floating_point())
    vit, text = config.vision_config.backbone_config, config.text_config
    return {
        "model_type": config.model_type,
        "architecture": config.architecture,
        "image_size": config.image_size,
        "vision": {
            "patch_size": vit.patch_size,
            "layers": vit.num_hidden_layers,
            "width": vit.hidden_size,
            "heads": vit.num_attention_heads,
            "window_size": vit.window_size,
            "global_attention_layers": list(vit.global_attn_indexes),
        },
        "text": {
            "encoder": "CLIP" if config.is_sam3 else "MobileCLIP",
            "layers": text.num_hidden_layers,
            "width": text.hidden_size,
            "heads": text.num_attention_heads,
            "context_length": text.max_position_embeddings,
            "prompt_length": config.text_context_length,
            "text_mode": config.text_mode,
            "repmixer": bool(getattr(text, "use_repmixer_blocks", False)),
        },
        "heads": {
            "width": config.detr_encoder_config.hidden_size,
            "queries": config.detr_decoder_config.num_queries,
        },
        "parameters": {
            **{group: sum(parts.values()) for group, parts in components.items()},
            "total": sum(modules.values()),
            "per_module": {m: n for parts in components.values() for m, n in parts.items()},
        },
        "dtype": dtypes.most_common(1)[0][0] if dtypes else "none",
        "dtypes": dict(dtypes),
    }


def describe_parts(contents: Any) -> dict[str, Any]:
    """Layout, variant and the parts of the file beside the detector (``CheckpointContents``)."""
    from ..checkpoints import variant_of

    tracker: dict[str, Any] = {"present": contents.has_tracker}
    if contents.tracker:
        parts: Counter[str] = Counter()
        for key, tensor in contents.tracker.items():
            parts[key.split(".")[0]] += tensor.numel()
        parts["tracker_neck"] = contents.parameter_count("tracker_neck")
        tracker.update(
            used=True,
            tensors=len(contents.tracker) + len(contents.tracker_neck),
            parameters=sum(parts.values()),
            per_part=dict(sorted(parts.items(), key=lambda kv: -kv[1])),
        )
    elif contents.tracker_error is not None:
        # An original file's tracker that could not be converted (its tensors are listed under "unused").
        tracker.update(used=False, error=contents.tracker_error)
    return {
        "layout": contents.layout,
        "variant": variant_of(contents.config),
        "text_mode": contents.config.text_mode,
        "detector_tensors": len(contents.detector),
        "tracker": tracker,
        "unused": {part: {"tensors": n, "why": why} for part, (n, why) in contents.unused.items()},
    }


def _millions(n: int) -> str:
    return f"{n / 1e6:9.2f}M" if n >= 10_000 else f"{n:10d}"


def render(summary: dict[str, Any]) -> str:
    """The human-readable summary."""
    v, t, h, p = summary["vision"], summary["text"], summary["heads"], summary["parameters"]
    text_kind = t["encoder"] + (" with RepMixer" if t["repmixer"] else "")
    mixed = "" if len(summary["dtypes"]) <= 1 else f" (mixed: {summary['dtypes']})"
    c = summary.get("checkpoint") or {}
    lines = [
        f"model       {summary['model']['name']}  ({summary['model']['path']})",
        f"type        {summary['model_type']} ({summary['architecture']})"
        + (f", variant {c['variant']}, {c['layout']} layout" if c else ""),
        f"image       {summary['image_size']} px, patch {v['patch_size']}",
        f"vision      ViT {v['layers']} layers x {v['width']}, {v['heads']} heads, window {v['window_size']}, "
        f"global attention in layers {v['global_attention_layers']}",
        f"text        {text_kind}: {t['layers']} layers x {t['width']}, {t['heads']} heads, "
        f"{t['context_length']} positions; text mode {t['text_mode']}, prompts padded to {t['prompt_length']}",
        f"heads       width {h['width']}, {h['queries']} queries",
        f"dtype       {summary['dtype']}{mixed}",
        "parameters",
    ]
    for group, modules in COMPONENTS.items():
        lines.append(f"  {group:<22}{_millions(p[group])}")
        lines.extend(f"    {m:<20}{_millions(p['per_module'][m])}" for m in modules if len(modules) > 1)
    lines.append(f"  {'total':<22}{_millions(p['total'])}")
    tracker = c.get("tracker", {})
    if tracker.get("used"):
        lines.append(f"  {'tracker (SAM3)':<22}{_millions(tracker['parameters'])}")
        big = {part: n for part, n in tracker["per_part"].items() if n >= tracker["parameters"] / 100}
        small = tracker["parameters"] - sum(big.values())
        lines.extend(f"    {part:<20}{_millions(n)}" for part, n in {**big, "other": small}.items() if n)
    elif tracker.get("present"):
        lines.append("tracker     present but not loadable: could not be converted (see 'not loaded' below)")
    elif c:
        lines.append("tracker     none (add one with --tracker sam3 / sam3lite.load(..., tracker='sam3'))")
    for part, info in c.get("unused", {}).items():
        lines.append(f"not loaded  {part}: {info['tensors']} tensors, {info['why']}")
    return "\n".join(lines)
