"""Checkpoint files: reading HF directories, sharded safetensors and original ``.pt`` files into a
config and an HF-layout state dict; writing them back; filling a model strictly.

Loading is strict: every checkpoint tensor must find a parameter or buffer of the same shape and
every parameter must be filled, or a ``CheckpointError`` lists the offending keys.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..modeling.config import Sam3LiteTextConfig
from ..modeling.quantize import is_quantized
from .contents import CheckpointContents, is_video_config, split_video_state
from .convert import (
    TRACKER_NECK_PART,
    TRACKER_PART,
    convert_original_state_dict,
    fit_text_positions,
    infer_config_dict,
    is_original_checkpoint,
    split_original_extras,
    unwrap_checkpoint,
)
from .convert_tracker import convert_original_tracker

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
VIDEO_OWN_PREFIXES = ("tracker_model.", "tracker_neck.")  # model keys already in the sam3_video layout
_OPTIONAL_BUFFER_SUFFIXES = ("num_batches_tracked",)  # BatchNorm counters: absent in many files, unused in eval


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model (missing, unexpected or mis-shaped keys) or is unreadable."""


# ----------------------------------------------------------------------------------------------
# Reading state dicts
# ----------------------------------------------------------------------------------------------


def read_checkpoint(path: Path) -> tuple[Sam3LiteTextConfig, dict[str, torch.Tensor]]:
    """The detector's config and HF-layout state dict from any supported file (see ``read_contents``)."""
    contents = read_contents(path)
    return contents.config, contents.detector


def read_contents(
    path: Path, *, context_length: int | None = None, position_table: str = "slice"
) -> CheckpointContents:
    """Every part of a checkpoint: a directory (``config.json`` + safetensors, detector or ``sam3_video``
    layout), a ``.safetensors`` file beside a ``config.json``, or an original ``.pt``.

    ``context_length`` / ``position_table`` apply to original files whose MobileCLIP position table is
    longer than the context the model was trained with (see ``_read_original``).
    """
    if path.is_dir() or path.suffix == ".safetensors":
        if context_length is not None:
            raise CheckpointError(f"{path}: context_length applies to original .pt files only")
        directory = path if path.is_dir() else path.parent
        data = _read_config_dict(directory / CONFIG_NAME)
        config = _detector_config(directory / CONFIG_NAME, data)  # a bad config is named before reading weights
        state = _read_directory_weights(path) if path.is_dir() else _read_safetensors(path)
        return _split_hf(path, data, config, state)
    if path.suffix in (".pt", ".pth", ".bin"):
        return _read_original(path, context_length, position_table)
    raise CheckpointError(f"{path}: unsupported checkpoint file (expected a directory, .safetensors or .pt)")


def _read_config_dict(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: no {CONFIG_NAME} found; a checkpoint directory needs one")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable JSON config ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _detector_config(path: Path, data: dict[str, Any]) -> Sam3LiteTextConfig:
    try:
        return Sam3LiteTextConfig.from_dict(data)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err


def _split_hf(
    path: Path, data: dict[str, Any], config: Sam3LiteTextConfig, state: dict[str, torch.Tensor]
) -> CheckpointContents:
    """An HF-layout file: the detector alone, or transformers' ``sam3_video`` (facebook/sam3) layout."""
    if not is_video_config(data):
        return CheckpointContents(source=path, layout="detector", config=config, detector=state)
    parts, stray = split_video_state(state)
    if stray:
        raise CheckpointError(
            f"{path}: a sam3_video checkpoint holds tensors outside detector_model./tracker_model./tracker_neck.: "
            f"{', '.join(sorted(stray)[:10])}" + (f", ... ({len(stray) - 10} more)" if len(stray) > 10 else "")
        )
    video = {k: v for k, v in data.items() if k not in ("detector_config", "tracker_config")}
    tracker_config = data.get("tracker_config") if isinstance(data.get("tracker_config"), dict) else None
    return CheckpointContents(
        source=path,
        layout="sam3_video",
        config=config,
        detector=parts["detector"],
        tracker=parts["tracker"],
        tracker_neck=parts["tracker_neck"],
        tracker_config=tracker_config,
        video_config=video,
    )


def _read_directory_weights(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / INDEX_NAME
    if index.is_file():
        return _read_sharded(index)
    single = directory / WEIGHTS_NAME
    if single.is_file():
        return _read_safetensors(single)
    others = sorted(directory.glob("*.safetensors"))
    if len(others) == 1:
        return _read_safetensors(others[0])
    raise CheckpointError(f"{directory}: no {WEIGHTS_NAME} or {INDEX_NAME} found")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err


def _read_sharded(index_path: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index_path}: not a valid safetensors index ({err})") from err
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(f"{index_path}: shard {shard} is missing")
        state.update(_read_safetensors(shard_path))
    listed, found = set(weight_map), set(state)
    if listed != found:
        raise CheckpointError(
            f"{index_path}: index and shards disagree; only in index: {sorted(listed - found)[:10]}, "
            f"only in shards: {sorted(found - listed)[:10]}"
        )
    return state


def _read_original(path: Path, context_length: int | None, position_table: str) -> CheckpointContents:
    """An original EfficientSAM3 / SAM3 ``.pt``: convert keys; config from a sibling config.json or shapes.

    A MobileCLIP position table longer than the context (older files hold 77 rows) is fitted to
    ``context_length`` (default: the sibling config's table length, else 16) by ``position_table``:
    ``slice`` (what EfficientSAM3 does) or ``interpolate`` (for files trained with a stretched table).
    The choice is recorded in the config (``text_config.position_table``).

    The tracker (``tracker.*`` and its ``sam2_convs`` neck) is converted as well (see ``_add_tracker``).
    """
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notes are not the user's business
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(_unreadable_pt(path, err)) from None
    try:
        state = unwrap_checkpoint(raw)
        if not is_original_checkpoint(state):
            raise ValueError("not an original EfficientSAM3/SAM3 checkpoint (no detector keys found)")
        state, extras, reasons = split_original_extras(state)
        sibling = path.parent / CONFIG_NAME
        data = _read_config_dict(sibling) if sibling.is_file() else None
        config = _detector_config(sibling, data) if data is not None else None
        state = convert_original_state_dict(state)
        if config is not None and context_length is None:
            context_length = config.text_config.max_position_embeddings
        fitted = fit_text_positions(state, context_length, position_table)
        if config is None:
            config = Sam3LiteTextConfig.from_dict(infer_config_dict(state))
        elif context_length is not None:
            _fit_clip_positions(state, context_length)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
    if fitted is not None:
        config.text_config.extra["position_table"] = fitted
    tracker, neck = extras.pop(TRACKER_PART, {}), extras.pop(TRACKER_NECK_PART, {})
    contents = CheckpointContents(
        source=path,
        layout="original",
        config=config,
        detector=state,
        unused={part: (len(tensors), reasons[part]) for part, tensors in extras.items()},
    )
    if tracker or neck:
        _add_tracker(contents, tracker, neck, data)
    return contents


def _add_tracker(
    contents: CheckpointContents,
    tracker: dict[str, torch.Tensor],
    neck: dict[str, torch.Tensor],
    sibling: dict[str, Any] | None,
) -> None:
    """Convert an original file's tracker into ``contents`` (``tracker``, ``tracker_neck``, ``tracker_config``).

    The tracker config is the sibling config.json's ``tracker_config`` when that is a ``sam3_video`` config
    (its detect-and-track settings are kept too), else inferred from shapes. A tracker that cannot be
    converted is not dropped: its tensors are listed in ``unused`` and the reason kept in ``tracker_error``
    (loading the file with its tracker raises it; ``tracker=False`` loads the detector alone).
    """
    tracker_config = sibling.get("tracker_config") if sibling is not None else None
    try:
        converted = convert_original_tracker(
            tracker, neck, contents.config, tracker_config if isinstance(tracker_config, dict) else None
        )
    except ValueError as err:
        contents.tracker_error = str(err)
        contents.unused[TRACKER_PART] = (len(tracker) + len(neck), f"not converted: {err}")
        return
    contents.tracker, contents.tracker_neck, contents.tracker_config = (
        converted.tracker,
        converted.neck,
        converted.config,
    )
    if sibling is not None and is_video_config(sibling):
        contents.video_config = {k: v for k, v in sibling.items() if k not in ("detector_config", "tracker_config")}


def _fit_clip_positions(state: dict[str, torch.Tensor], length: int) -> None:
    """SAM3's CLIP table is indexed (not resized): keep the first ``length`` rows when a sibling config
    says the model uses fewer positions than the file stores."""
    key = "text_encoder.text_model.embeddings.position_embedding.weight"
    table = state.get(key)
    if table is not None and table.shape[0] > length:
        state[key] = table[:length].clone()


def _unreadable_pt(path: Path, err: Exception) -> str:
    """One line for a ``.pt`` that ``torch.load(weights_only=True)`` refused. torch's own text runs to
    several lines and advises ``weights_only=False``, i.e. running the file's code: never passed on."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:  # the pickle names a function or class to call: code or arbitrary objects
        return (
            f"{path}: the file holds code or Python objects that are not plain tensors ({found.group(1)}); "
            "refused for safety (sam3lite reads only tensors from .pt files)"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    if "weights only" in first.lower():
        first = "corrupt, or not written by torch.save"
    return f"{path}: not a readable PyTorch checkpoint ({first[:200]})"


# ----------------------------------------------------------------------------------------------
# Building and filling the model
# ----------------------------------------------------------------------------------------------

_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "xavier_uniform_",
    "xavier_normal_",
)


@contextlib.contextmanager
def skip_weight_init() -> Iterator[None]:
    """Make ``torch.nn.init`` a no-op while building a model whose weights a checkpoint will fill.

    Random init of the 0.5B-parameter full model costs many seconds on CPU for nothing. Buffers
    computed in constructors (RoPE tables) are unaffected: they do not go through ``nn.init``.
    """
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    try:
        for name in _INIT_FUNCTIONS:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def load_state_dict_strict(
    model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint", assign: bool = False
) -> None:
    """Copy ``state`` into ``model`` (or, with ``assign``, make its tensors the model's own, as for a
    model built on the meta device); raise ``CheckpointError`` naming every missing, unexpected or
    mis-shaped key. Only BatchNorm ``num_batches_tracked`` counters may be absent."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(_OPTIONAL_BUFFER_SUFFIXES)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(_describe_mismatch(source, missing, unexpected, mismatched))
    # Absent optional counters keep the model's value (zero when the model was built on meta).
    absent = {k: torch.zeros_like(v, device="cpu") if v.is_meta else v for k, v in expected.items() if k not in state}
    model.load_state_dict({**absent, **state}, strict=True, assign=assign)


def _describe_mismatch(source: str, missing: list[str], unexpected: list[str], mismatched: list[str]) -> str:
    parts = [f"{source} does not fit the model"]
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if keys:
            shown = ", ".join(keys[:20]) + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else "")
            parts.append(f"{len(keys)} {label}: {shown}")
    return "; ".join(parts)


def write_checkpoint(model: nn.Module, directory: str | Path, max_shard_size: int | str = "5GB") -> None:
    """Write ``config.json`` and safetensors (sharded with an index above ``max_shard_size``)."""
    from huggingface_hub import save_torch_state_dict

    if is_quantized(model):
        raise CheckpointError("this model's image encoder is int8-quantized; save the model before quantizing it")
    # torch.compile wraps parts as `<name>._orig_mod`; the checkpoint layout has no such level.
    state = {key.replace("._orig_mod", ""): value for key, value in model.state_dict().items()}
    if any(".reparam_conv." in key for key in state):
        # Folding drops the BatchNorm branches the checkpoint layout stores; it cannot be undone.
        raise CheckpointError("this model's RepMixer branches are folded; save the model before reparameterize()")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    video_config = getattr(model, "video_config", None)
    if video_config is not None:
        # With a tracker: facebook/sam3's hub layout (transformers' Sam3VideoModel reads it).
        state = {k if k.startswith(VIDEO_OWN_PREFIXES) else "detector_model." + k: v for k, v in state.items()}
        video_config.to_json_file(directory / CONFIG_NAME)
    else:
        model.config.to_json_file(directory / CONFIG_NAME)
    save_torch_state_dict(
        {k: v.detach().cpu().contiguous() for k, v in state.items()},
        directory,
        max_shard_size=max_shard_size,
    )
