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

import torch
from torch import nn

from ..modeling.config import Sam3LiteTextConfig
from ..modeling.quantize import is_quantized
from .convert import convert_original_state_dict, infer_config_dict, is_original_checkpoint, unwrap_checkpoint

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_OPTIONAL_BUFFER_SUFFIXES = ("num_batches_tracked",)  # BatchNorm counters: absent in many files, unused in eval


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model (missing, unexpected or mis-shaped keys) or is unreadable."""


# ----------------------------------------------------------------------------------------------
# Reading state dicts
# ----------------------------------------------------------------------------------------------


def read_checkpoint(path: Path) -> tuple[Sam3LiteTextConfig, dict[str, torch.Tensor]]:
    """Config and HF-layout state dict from a directory, a safetensors file or an original ``.pt``."""
    if path.is_dir():
        config = _read_config(path / CONFIG_NAME)
        return config, _read_directory_weights(path)
    if path.suffix == ".safetensors":
        config = _read_config(path.parent / CONFIG_NAME)
        return config, _read_safetensors(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        return _read_original(path)
    raise CheckpointError(f"{path}: unsupported checkpoint file (expected a directory, .safetensors or .pt)")


def _read_config(path: Path) -> Sam3LiteTextConfig:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: no {CONFIG_NAME} found; a checkpoint directory needs one")
    try:
        return Sam3LiteTextConfig.from_json_file(path)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err


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


def _read_original(path: Path) -> tuple[Sam3LiteTextConfig, dict[str, torch.Tensor]]:
    """An original EfficientSAM3 / SAM3 ``.pt``: convert keys; config from a sibling config.json or shapes."""
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
        sibling = path.parent / CONFIG_NAME
        config = _read_config(sibling) if sibling.is_file() else None
        # A sibling config fixes the text context; older files store a 77-entry table.
        context = config.text_config.max_position_embeddings if config is not None else None
        state = convert_original_state_dict(state, text_context_length=context)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
    if config is None:
        config = Sam3LiteTextConfig.from_dict(infer_config_dict(state))
    return config, state


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
    model.config.to_json_file(directory / CONFIG_NAME)
    save_torch_state_dict(
        {k: v.detach().cpu().contiguous() for k, v in state.items()},
        directory,
        max_shard_size=max_shard_size,
    )
