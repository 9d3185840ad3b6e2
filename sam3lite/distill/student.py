"""The student: a MobileCLIP text encoder and a Linear to the detector width, built from a variant or a
config file, optionally initialized from existing weights.

``--init`` accepts:

- a LiteText checkpoint (HF directory / safetensors, an original EfficientSAM3 ``.pt``) or a distill run
  (directory with ``checkpoint.pt``): fine-tuning. Its ``text_encoder.*`` and ``text_projection.*`` are used.
- MobileCLIP text weights in Apple's layout (``mobileclip_s0.pt``: ``text_encoder.embedding_layer.weight``,
  ``...transformer.{i}.pre_norm_mha...``) or open_clip's (``text.token_embedding.weight``,
  ``text.transformer.resblocks.{i}...``, the MobileCLIP / MobileCLIP2 ``custom_text`` models), converted.
  They have no Linear to the detector width; that one starts random.

The position table is fitted to the cache's context length T. LiteText weights are resized the way the
encoder resizes its table at run time, so the initialized student computes at length T exactly what the
checkpoint computed at length T. MobileCLIP weights were trained on 77-token sequences whose real tokens
sit at the first positions, so their first T rows are kept.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..checkpoints import CheckpointError, load_state_dict_strict
from ..checkpoints.convert import (  # the project's rename machinery for original checkpoints
    MOBILECLIP_RULES,
    convert_original_state_dict,
    is_original_checkpoint,
    mha_rules,
    rename_keys,
    transpose_projection,
    unwrap_checkpoint,
)
from ..checkpoints.variants import VARIANTS
from ..modeling.config import Sam3LiteTextConfig, TextConfig
from .tower import TEXT_PREFIXES, TextTower, text_state

STUDENT_VARIANTS = ("s0", "s1", "l")
POSITION_KEY = "text_encoder.embeddings.position_embedding.position_embedding"  # [1, 1, P, H]
RUN_CHECKPOINT = "checkpoint.pt"


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def student_config(spec: str | Path, context_length: int) -> TextConfig:
    """``TextConfig`` of ``s0`` / ``s1`` / ``l`` or of a JSON file, with one position per context token.

    The JSON file holds a MobileCLIP text config (``TextConfig`` fields) or a whole LiteText config (its
    ``text_config`` is used). An explicit ``max_position_embeddings`` other than ``context_length`` is an
    error: the table must have one row per position (the released files' 77-row table is a known bug).
    """
    name = str(spec)
    if name in STUDENT_VARIANTS:
        data = dict(VARIANTS[name].text_config)
        data["max_position_embeddings"] = context_length
        return TextConfig.from_dict(data)
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"--student {name!r} is neither s0, s1, l nor a JSON config file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--student {path}: not a readable JSON file ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"--student {path}: expected a JSON object (a text config)")
    if "text_config" in data:
        data = dict(data["text_config"])
    if data.get("model_type", TextConfig.model_type) != TextConfig.model_type:
        raise ValueError(
            f"--student {path}: model_type {data['model_type']!r} is not a MobileCLIP text config "
            f"({TextConfig.model_type!r})"
        )
    positions = data.get("max_position_embeddings", context_length)
    if positions != context_length:
        raise ValueError(
            f"--student {path} sets max_position_embeddings={positions}, but the cache's context length is "
            f"{context_length}; the position table needs one row per position: set it to {context_length} or drop it"
        )
    data["max_position_embeddings"] = context_length
    return TextConfig.from_dict(data)


def recipe_variant(spec: str | Path, config: TextConfig) -> str:
    """Whose recipe defaults (loss weights) a student takes: its name, or for a config file the variant it
    resembles (RepMixer blocks: s0; width 768 or more: l; else s1)."""
    if str(spec) in STUDENT_VARIANTS:
        return str(spec)
    if config.use_repmixer_blocks:
        return "s0"
    return "l" if config.hidden_size >= 768 else "s1"


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


def build_student(config: TextConfig, out_dim: int, init: str | Path | None = None) -> TextTower:
    """A student tower, random (seeded by the caller) or initialized from ``init``.

    The encoder's own CLIP projection (``text_encoder.projection``, pooled EOT -> 512) is not part of the
    distillation target; it is frozen so that every trained parameter receives a gradient (DDP needs that).
    """
    student = TextTower(config, out_dim)
    if init is not None:
        state, kind = read_init(init)
        _check_compatible(state, config, out_dim, init)
        state = fit_positions(state, config.max_position_embeddings, kind)
        if "text_projection.weight" not in state:  # MobileCLIP weights: keep the random Linear
            state.update({f"text_projection.{k}": v for k, v in student.text_projection.state_dict().items()})
        load_state_dict_strict(student, state, source=f"--init {init}")
    student.text_encoder.projection.requires_grad_(False)
    return student


def read_init(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Text weights of an ``--init`` file in the tower layout, and their kind (``litetext`` or ``mobileclip``)."""
    state = _load_any(Path(path))
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from a DDP wrapper
    if "text_encoder.embeddings.token_embedding.weight" in state:
        return text_state(state), "litetext"
    if "text_encoder.text_model.embeddings.token_embedding.weight" in state:
        raise ValueError(f"--init {path} is a SAM3 (CLIP) text encoder, the teacher's kind; it cannot start a student")
    if is_original_checkpoint(state):
        converted = convert_original_state_dict(state)
        if "text_encoder.embeddings.token_embedding.weight" not in converted:
            raise ValueError(f"--init {path} is an original SAM3 checkpoint (CLIP text), not a LiteText one")
        return text_state(converted), "litetext"
    for prefix in ("text_encoder.", ""):
        if prefix + "embedding_layer.weight" in state:
            return convert_apple_text(state, prefix), "mobileclip"
    for prefix in ("text.", ""):
        if prefix + "token_embedding.weight" in state and prefix + "transformer.resblocks.0.ln_1.weight" in state:
            return convert_open_clip_text(state, prefix), "mobileclip"
    shown = ", ".join(sorted(state)[:8])
    raise ValueError(
        f"--init {path}: not a LiteText checkpoint, a distill run, or MobileCLIP text weights (Apple or open_clip "
        f"layout); first keys: {shown}"
    )


def _load_any(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a run directory, an HF directory, a safetensors file or a torch file."""
    if path.is_dir():
        if (path / RUN_CHECKPOINT).is_file():
            return _load_any(path / RUN_CHECKPOINT)
        if (path / "config.json").is_file():
            from ..checkpoints import read_checkpoint

            config, state = read_checkpoint(path)
            _check_litetext(config, path)
            return state
        files = [f for ext in ("*.safetensors", "*.pt", "*.pth", "*.bin") for f in sorted(path.glob(ext))]
        if len(files) != 1:
            raise ValueError(f"--init {path}: expected one weights file in the directory, found {len(files)}")
        return _load_any(files[0])
    if not path.is_file():
        raise FileNotFoundError(f"--init {path}: no such file or directory")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise ValueError(f"--init {path}: not a readable safetensors file ({err})") from err
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"--init {path}: not a readable PyTorch file ({type(err).__name__}: {err})") from err
    return unwrap_checkpoint(raw)


def _check_litetext(config: Sam3LiteTextConfig, path: Path) -> None:
    if config.is_sam3:
        raise ValueError(f"--init {path} is a SAM3 checkpoint (CLIP text encoder); a student starts from LiteText")


def _check_compatible(state: dict[str, torch.Tensor], config: TextConfig, out_dim: int, init: str | Path) -> None:
    """Clear errors for an ``--init`` whose shapes are not the student config's."""
    vocab, width = state["text_encoder.embeddings.token_embedding.weight"].shape
    found = {
        "hidden_size (width)": width,
        "vocab_size": vocab,
        "num_hidden_layers": _count_layers(state),
        "use_repmixer_blocks": "text_encoder.layers.0.token_mixer.mixer.conv.weight" in state,
    }
    wanted = {
        "hidden_size (width)": config.hidden_size,
        "vocab_size": config.vocab_size,
        "num_hidden_layers": config.num_hidden_layers,
        "use_repmixer_blocks": config.use_repmixer_blocks,
    }
    if "text_projection.weight" in state:
        found["output width"] = state["text_projection.weight"].shape[0]
        wanted["output width"] = out_dim
    bad = [f"{k}: --init {found[k]}, student {wanted[k]}" for k in wanted if found[k] != wanted[k]]
    if bad:
        raise ValueError(
            f"--init {init} does not fit the student config ({'; '.join(bad)}). Pick the matching --student "
            f"(s0: RepMixer + 4 layers, width 512; s1: 12 layers, 512; l: 12 layers, 768) or a config file"
        )


def _count_layers(state: dict[str, torch.Tensor]) -> int:
    pattern = re.compile(r"text_encoder\.layers\.(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


def fit_positions(state: dict[str, torch.Tensor], context_length: int, kind: str) -> dict[str, torch.Tensor]:
    """The position table resized to ``context_length`` rows (see the module docstring for the rule)."""
    table = state[POSITION_KEY]
    rows = table.shape[2]
    if rows == context_length:
        return state
    if kind == "mobileclip" and rows > context_length:
        fitted = table[:, :, :context_length].clone()
    else:  # exactly what PositionEmbedding.forward does for a sequence of this length
        fitted = F.interpolate(
            table.float(), size=(context_length, table.shape[3]), mode="bilinear", align_corners=False
        )
    return {**state, POSITION_KEY: fitted.to(table.dtype)}


# ---------------------------------------------------------------------------------------------
# MobileCLIP conversions (one function per source)
# ---------------------------------------------------------------------------------------------


def convert_apple_text(state: dict[str, torch.Tensor], prefix: str = "text_encoder.") -> dict[str, torch.Tensor]:
    """Apple ml-mobileclip ``TextTransformer`` weights (under ``prefix``) -> ``text_encoder.*``.

    Same module layout as EfficientSAM3's student (it copies Apple's code), so the original-checkpoint
    rename table applies; ``projection_layer`` ([in, out], used as ``x @ P``) is transposed.
    """
    source = {k: v for k, v in state.items() if k.startswith(prefix)} if prefix else dict(_apple_keys(state))
    out = rename_keys(source, prefix, "text_encoder.", MOBILECLIP_RULES)
    _refuse_leftovers(source, "Apple MobileCLIP")
    transpose_projection(out, "text_encoder.projection.weight")
    return out


def _apple_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A bare Apple text encoder: its own keys, not an image encoder's or ``logit_scale``."""
    roots = ("embedding_layer.", "positional_embedding.", "transformer.", "final_layer_norm.", "projection_layer")
    return {k: v for k, v in state.items() if k.startswith(roots)}


_OC = r"transformer\.resblocks\.(?P<i>\d+)"
_P = r"(?P<p>weight|bias)"
_OPEN_CLIP_RULES = [  # open_clip TextTransformer -> text_encoder.
    (r"token_embedding\.weight", "embeddings.token_embedding.weight"),
    (r"positional_embedding", "embeddings.position_embedding.position_embedding"),  # [P, H]; reshaped below
    (rf"ln_final\.{_P}", r"final_layer_norm.\g<p>"),
    (r"text_projection", "projection.weight"),  # a [H, E] parameter used as x @ P; transposed below
    (r"text_projection\.weight", "projection.weight"),  # newer open_clip: a Linear, already [E, H]
    (rf"{_OC}\.ln_(?P<n>[12])\.{_P}", r"layers.\g<i>.layer_norm\g<n>.\g<p>"),
    *mha_rules(rf"{_OC}\.attn", r"layers.\g<i>.self_attn", out="out_proj"),
    (rf"{_OC}\.mlp\.c_fc\.{_P}", r"layers.\g<i>.mlp.fc1.\g<p>"),
    (rf"{_OC}\.mlp\.c_proj\.{_P}", r"layers.\g<i>.mlp.fc2.\g<p>"),
]


def convert_open_clip_text(state: dict[str, torch.Tensor], prefix: str = "text.") -> dict[str, torch.Tensor]:
    """open_clip text tower weights (MobileCLIP's ``custom_text`` models: under ``text.``) -> ``text_encoder.*``.

    The tower must be a plain pre-norm transformer (no layer scale, no attention pooling).
    """
    roots = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
    source = {k: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix) :].startswith(roots)}
    source.pop(prefix + "attn_mask", None)  # a causal-mask buffer in some versions; recomputed, not a weight
    linear_projection = prefix + "text_projection.weight" in source
    out = rename_keys(source, prefix, "text_encoder.", _OPEN_CLIP_RULES)
    _refuse_leftovers(source, "open_clip")
    table = out["text_encoder.embeddings.position_embedding.position_embedding"]
    out["text_encoder.embeddings.position_embedding.position_embedding"] = table.reshape(1, 1, *table.shape)
    if not linear_projection:
        transpose_projection(out, "text_encoder.projection.weight")
    return out


def _refuse_leftovers(source: dict[str, Any], layout: str) -> None:
    """``rename_keys`` pops what it converts; anything left has no place in the student."""
    if source:
        keys = ", ".join(sorted(source)[:10])
        raise CheckpointError(f"{len(source)} {layout} text keys have no place in the student: {keys}")


__all__ = [
    "POSITION_KEY",
    "STUDENT_VARIANTS",
    "TEXT_PREFIXES",
    "build_student",
    "convert_apple_text",
    "convert_open_clip_text",
    "fit_positions",
    "read_init",
    "student_config",
    "recipe_variant",
]
