"""Loading and saving checkpoints: hub names, HF directories, sharded safetensors, original ``.pt``.

Loading is strict: every checkpoint tensor must find a parameter or buffer of the same shape and
every parameter must be filled, or a ``CheckpointError`` lists the offending keys.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Sam3LiteTextConfig
from .variants import VARIANTS

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_HUB_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json", "*.json", "*.txt"]
_OPTIONAL_BUFFER_SUFFIXES = ("num_batches_tracked",)  # BatchNorm counters: absent in many files, unused in eval


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model (missing, unexpected or mis-shaped keys) or is unreadable."""


# ----------------------------------------------------------------------------------------------
# Resolving a name to files
# ----------------------------------------------------------------------------------------------


def resolve(name_or_path: str | Path) -> Path:
    """Local path for a short name (``s0``), hub id (``vil-uob/sam3-litetext-s0``), directory or file.

    Hub downloads go through huggingface_hub into its usual cache (``HF_HOME``); offline, a cached
    copy is used, and with none a clear error says how to pass a local path.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return path
    repo_id = VARIANTS[text].hub_id if text in VARIANTS else text
    if text.startswith((".", "/", "~")) or text.endswith((".pt", ".pth", ".safetensors", ".json")):
        raise CheckpointError(f"no such file or directory: {text}")
    if repo_id.count("/") != 1:
        known = ", ".join(sorted(VARIANTS))
        raise CheckpointError(
            f"unknown model {text!r}: not a local path, not a short name ({known}) and not a hub id (owner/name)"
        )
    return _download(repo_id, text)


def _download(repo_id: str, asked: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
    except Exception as err:  # network, auth, missing repo: all end the same way for the user
        # One line: the hub's own messages span several lines and would bury the advice below.
        detail = " ".join(str(err).split())
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        raise CheckpointError(
            f"could not get model {asked!r} (hub repo {repo_id!r}): {type(err).__name__}: {detail} "
            f"Without network access, download the repo elsewhere and pass its local directory, e.g. "
            f"sam3lite.load('/path/to/{repo_id.split('/')[-1]}') or --model /path/to/dir."
        ) from err


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
    from .convert import convert_original_state_dict, infer_config_dict, is_original_checkpoint, unwrap_checkpoint

    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
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


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CPU; ``"auto"`` -> CUDA (this rank's GPU), else MPS, else CPU; anything else as given."""
    if device is None:
        return torch.device("cpu")
    if str(device) == "auto":
        from .runtime import select_device  # one definition of "auto" (cuda:LOCAL_RANK, MPS, CPU)

        return select_device("auto")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a valid torch device") from err


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``None`` / ``"float32"`` / ``"bfloat16"`` / ``"float16"`` / a torch dtype -> torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
        "half": torch.float16,
    }
    if dtype not in names:
        raise ValueError(f"dtype={dtype!r} is not supported; expected one of {sorted(names)}")
    return names[dtype]


def load(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
) -> Any:
    """Load a SAM3-LiteText (or SAM3) model in eval mode.

    Args:
        name_or_path: ``s0`` / ``s1`` / ``l`` / ``sam3``, a hub id, a local HF directory (config.json +
            model.safetensors or a sharded index), a ``.safetensors`` file beside a config.json, or an
            original EfficientSAM3 ``.pt`` (converted on load).
        device: ``None`` (CPU), ``"auto"``, or any torch device.
        dtype: ``None`` (float32), ``"auto"`` (bfloat16 where the hardware runs it fast, else
            float32), ``"bfloat16"``, ``"float16"`` or a torch dtype.
    """
    from .model import Sam3LiteTextModel
    from .runtime import select_dtype  # "auto": bfloat16 on AMX/AVX512-BF16 CPUs, CUDA sm80+, MPS (macOS 14+)

    target_device = resolve_device(device)
    target_dtype = select_dtype(dtype, target_device)
    path = resolve(name_or_path)
    config, state = read_checkpoint(path)
    # Built on the meta device, the model allocates nothing; the checkpoint's tensors, each moved to
    # the target device and dtype one at a time, become its parameters. Peak memory is one copy of
    # the weights (plus one tensor), not two.
    with skip_weight_init(), torch.device("meta"):
        model = Sam3LiteTextModel(config)
    for key, value in state.items():
        state[key] = value.to(target_device, target_dtype if value.is_floating_point() else value.dtype)
    load_state_dict_strict(model, state, source=str(path), assign=True)
    # Moves only what the loop did not: BatchNorm counters filled in for files that lack them.
    return model.to(device=target_device, dtype=target_dtype).eval()


def save_pretrained(model: nn.Module, directory: str | Path, max_shard_size: int | str = "5GB") -> None:
    """Write ``config.json`` and safetensors (sharded with an index above ``max_shard_size``)."""
    from huggingface_hub import save_torch_state_dict

    from .quantize import is_quantized

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
