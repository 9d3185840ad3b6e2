"""Test helpers: tiny configs and transformers reference models with random weights.

transformers is a test-only dependency: it is the numerical oracle, never imported by sam3lite.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

# Tiny but structurally complete: windowed + global ViT layers, 3 FPN levels, RepMixer text layers.
TINY_VISION = {
    "model_type": "sam3_vision_model",
    "backbone_config": {
        "model_type": "sam3_vit_model",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "image_size": 112,
        "patch_size": 14,
        "window_size": 4,
        "global_attn_indexes": [1, 3],
        "pretrain_image_size": 56,
    },
    "fpn_hidden_size": 32,
    "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]],
}
_HEAD = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64}

TEXT_S0 = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "max_position_embeddings": 16,
    "use_repmixer_blocks": True,
}
TEXT_S1 = {**TEXT_S0, "num_hidden_layers": 3, "use_repmixer_blocks": False}
TEXT_L = {
    **TEXT_S1,
    "hidden_size": 96,
    "intermediate_size": 192,
    "num_attention_heads": 6,
    "max_position_embeddings": 77,
}
TEXT_CLIP = {
    "model_type": "clip_text_model",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 32,
    "projection_dim": 32,
    "hidden_act": "gelu",
}
TEXT_VARIANTS = {"s0": TEXT_S0, "s1": TEXT_S1, "l": TEXT_L, "sam3": TEXT_CLIP}


def tiny_config_dict(text: str = "s0", num_queries: int = 10) -> dict[str, Any]:
    """HF-layout config dict of a tiny detector; ``text`` picks the text encoder shape."""
    return {
        "model_type": "sam3" if text == "sam3" else "sam3_lite_text",
        "vision_config": copy.deepcopy(TINY_VISION),
        "text_config": dict(TEXT_VARIANTS[text]),
        "geometry_encoder_config": {**_HEAD, "num_layers": 2},
        "detr_encoder_config": {**_HEAD, "num_layers": 2},
        "detr_decoder_config": {**_HEAD, "num_layers": 2, "num_queries": num_queries},
        "mask_decoder_config": {"hidden_size": 32, "num_attention_heads": 4},
    }


# Tracker-sized tiny detector: the tracker needs an FPN width that is a multiple of 64 and above 64
# (memory is 64 wide, object pointers split into 64-wide tokens) and a 16x16 patch grid.
_VIDEO_HEAD = {"hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 256}


def tiny_video_config_dict(text: str = "s0", num_queries: int = 10) -> dict[str, Any]:
    """HF-layout ``sam3_video`` config dict (facebook/sam3's layout): a tiny detector (``text`` picks
    the text encoder: ``sam3`` for plain SAM3's CLIP, else a LiteText student) and a tiny tracker."""
    vision = copy.deepcopy(TINY_VISION)
    vision["backbone_config"].update(image_size=224, pretrain_image_size=112, window_size=8)
    vision["fpn_hidden_size"] = 128
    vision["backbone_feature_sizes"] = [[64, 64], [32, 32], [16, 16]]
    detector = {
        "model_type": "sam3" if text == "sam3" else "sam3_lite_text",
        "vision_config": vision,
        "text_config": dict(TEXT_VARIANTS[text]),
        "geometry_encoder_config": {**_VIDEO_HEAD, "num_layers": 2},
        "detr_encoder_config": {**_VIDEO_HEAD, "num_layers": 2},
        "detr_decoder_config": {**_VIDEO_HEAD, "num_layers": 2, "num_queries": num_queries},
        "mask_decoder_config": {"hidden_size": 128, "num_attention_heads": 4},
    }
    tracker = {
        "model_type": "sam3_tracker_video",
        "vision_config": copy.deepcopy(vision),
        "image_size": 224,
        "prompt_encoder_config": {"hidden_size": 128, "image_size": 224, "patch_size": 14},
        "mask_decoder_config": {
            "hidden_size": 128,
            "num_attention_heads": 4,
            "mlp_dim": 256,
            "iou_head_hidden_dim": 64,
        },
        "memory_attention_hidden_size": 128,
        "memory_attention_num_layers": 2,
        "memory_attention_feed_forward_hidden_size": 256,
        "memory_attention_rope_feat_sizes": [16, 16],
        "memory_encoder_hidden_size": 128,
        "memory_encoder_output_channels": 64,
        "mask_downsampler_embed_dim": 128,
        "memory_fuser_embed_dim": 128,
        "memory_fuser_intermediate_dim": 256,
    }
    return {"model_type": "sam3_video", "detector_config": detector, "tracker_config": tracker, "low_res_mask_size": 64}


def hf_video_config(config: dict[str, Any]):
    """transformers ``Sam3VideoConfig`` for a dict from ``tiny_video_config_dict``."""
    from transformers import Sam3TrackerVideoConfig, Sam3VideoConfig

    data = copy.deepcopy(config)
    data.pop("model_type")
    detector = hf_config(data.pop("detector_config")).to_dict()
    tracker_dict = data.pop("tracker_config")
    tracker_dict.pop("model_type")
    tracker = Sam3TrackerVideoConfig(**tracker_dict).to_dict()
    return Sam3VideoConfig(detector_config=detector, tracker_config=tracker, **data)


def hf_video_model(config: dict[str, Any], seed: int = 0):
    """A transformers ``Sam3VideoModel`` (eval, float32) with randomized weights (``randomize_``;
    tracker tests may rescale further so that masks are not degenerate)."""
    from transformers import Sam3VideoModel

    torch.manual_seed(seed)
    return randomize_(Sam3VideoModel(hf_video_config(config)), seed).eval()


def save_video_reference(config: dict[str, Any], directory: Path, seed: int = 0, hub_layout: bool = True):
    """Build a reference ``Sam3VideoModel`` and ``save_pretrained`` it; return the model.

    transformers 5.23 writes the tracker under ``tracker_model.tracker_model.*``; the hub file of
    facebook/sam3 has ``tracker_model.*``. ``hub_layout`` rewrites the file to the hub's names (which
    transformers' own ``Sam3TrackerModel.from_pretrained`` needs to find the tracker weights).
    """
    from safetensors.torch import load_file, save_file

    model = hf_video_model(config, seed)
    model.save_pretrained(directory)
    if hub_layout:
        path = Path(directory) / "model.safetensors"
        state = load_file(str(path))
        state = {k.replace("tracker_model.tracker_model.", "tracker_model.", 1): v for k, v in state.items()}
        save_file(state, str(path), metadata={"format": "pt"})
    return model


def hf_config(config: dict[str, Any]):
    """transformers config object for a dict from ``tiny_config_dict`` (or a full-size one)."""
    from transformers import Sam3Config, Sam3LiteTextConfig

    data = copy.deepcopy(config)
    model_type = data.pop("model_type")
    if model_type == "sam3":
        return Sam3Config(**data)
    return Sam3LiteTextConfig(**data)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and buffer non-trivial random values.

    Default inits hide bugs: BatchNorm stats at 0/1, layer scales at 1e-5, zero biases and
    LayerNorm weights at 1 make whole branches vanish. Scales stay small enough that 12-layer
    stacks do not blow up.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim <= 1 or "layer_scale" in name:
                if name.endswith("weight") and "norm" in name.lower():
                    p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / max(fan_in, 1) ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.3 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
    return model


def hf_model(config: dict[str, Any], seed: int = 0):
    """A transformers reference detector (eval mode, float32) with randomized weights."""
    from transformers import Sam3LiteTextModel, Sam3Model

    torch.manual_seed(seed)
    cfg = hf_config(config)
    cls = Sam3Model if config["model_type"] == "sam3" else Sam3LiteTextModel
    return randomize_(cls(cfg), seed).eval()


def save_reference(config: dict[str, Any], directory: Path, seed: int = 0, **save_kwargs: Any):
    """Build a reference model, ``save_pretrained`` it to ``directory``; return the model."""
    model = hf_model(config, seed)
    model.save_pretrained(directory, **save_kwargs)
    return model


def text_inputs(batch: int = 2, length: int = 32, seed: int = 0, lengths: list[int] | None = None):
    """Random CLIP-like ids/attention mask: BOS, words, EOS, then pad (49407) up to ``length``."""
    gen = torch.Generator().manual_seed(seed)
    lengths = lengths or [5 + 3 * i for i in range(batch)]
    ids = torch.full((batch, length), 49407, dtype=torch.long)
    mask = torch.zeros(batch, length, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, 0] = 49406
        ids[i, 1 : n - 1] = torch.randint(0, 49406, (n - 2,), generator=gen)
        mask[i, :n] = 1
    return ids, mask


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref| (the parity metric; 1e-4 in float32)."""
    ours, ref = ours.double(), ref.double()
    return ((ours - ref).abs().max() / ref.abs().max().clamp(min=1e-12)).item()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels but holds no pixel data: what a
    decompression-bomb check sees, without the memory of a real image that size."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
