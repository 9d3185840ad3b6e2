"""How far apart the two text modes are: relative difference of the detector's prompt tokens.

For each variant's full-size text encoder (random weights: no trained checkpoint can be downloaded
here) and a list of prompts, the prompt tokens [T, 256] are computed in ``transformers`` mode (pad to
32 with EOS, padding masked, table stretched 16 -> 32) and in ``original`` mode (pad to 16 with 0, no
mask, table as stored). Reported: median and max over prompts of ||orig - tf|| / ||tf|| on the real
tokens (BOS..EOS), which are the only tokens the detector reads in both modes.

    python benchmarks/text_modes.py [--prompts FILE] [--limit 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import torch

from sam3lite.checkpoints import VARIANTS
from sam3lite.modeling.config import VisionConfig
from sam3lite.modeling.detector import Sam3Detector
from sam3lite.processing.tokenizer import Tokenizer

DEFAULT_PROMPTS = [
    "ear", "dog", "yellow school bus", "person", "red car", "traffic light", "a man riding a horse",
    "the cup on the left", "striped cat sleeping on a sofa", "fire hydrant", "tennis racket",
    "two people holding umbrellas in the rain", "broccoli", "the tallest building", "wine glass",
]  # fmt: skip


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial random weights: default inits leave RepMixer's layer scales at 1e-5 and BatchNorm
    statistics at 0/1, which would hide how much the pads leak into real tokens."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim <= 1 or "layer_scale" in name:
                base = 1.0 if name.endswith("weight") and "norm" in name.lower() else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.3 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))


def text_model(variant: str, mode: str) -> Sam3Detector:
    config = VARIANTS[variant].config()
    # Only the text path runs: a small image encoder keeps memory low.
    vision = VisionConfig.from_dict(
        {"backbone_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                             "num_attention_heads": 1, "global_attn_indexes": [0]}}
    )  # fmt: skip
    config = dataclasses.replace(config, vision_config=vision, text_mode=mode)
    model = Sam3Detector(config).eval()
    randomize(model, seed=0)
    return model


def measure(variant: str, prompts: list[str]) -> list[float]:
    tf, orig = text_model(variant, "transformers"), text_model(variant, "original")
    orig.load_state_dict(tf.state_dict())
    ids_t, mask_t = Tokenizer(32)(prompts)
    ids_o, mask_o = Tokenizer(orig.config.text_context_length, "original")(prompts)
    with torch.no_grad():
        a = tf.get_text_features(ids_t, mask_t).pooler_output
        b = orig.get_text_features(ids_o, mask_o).pooler_output
    out = []
    for i in range(len(prompts)):
        n = int(min(mask_t[i].sum(), mask_o[i].sum()))
        out.append(float((b[i, :n] - a[i, :n]).norm() / a[i, :n].norm()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", help="a text file, one prompt per line (default: 15 built-in prompts)")
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    prompts = DEFAULT_PROMPTS
    if args.prompts:
        with open(args.prompts, encoding="utf-8") as fh:
            prompts = [line.strip() for line in fh if line.strip()][: args.limit]
    print(f"{len(prompts)} prompts; relative difference of real-token features, original vs transformers mode")
    print("| variant | median | max |")
    print("|---|---|---|")
    for variant in ("s0", "s1", "l"):
        diffs = measure(variant, prompts)
        print(f"| {variant} | {statistics.median(diffs):.1%} | {max(diffs):.1%} |")


if __name__ == "__main__":
    main()
