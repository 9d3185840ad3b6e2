"""The text path of a detector on its own: ``text_encoder`` then ``text_projection``.

The teacher (SAM3's CLIP tower + its Linear to 256) and the student (a MobileCLIP encoder + its Linear
to 256) are both a ``TextTower``. Module names equal those of ``Sam3LiteTextModel``, so state-dict keys
(``text_encoder.*``, ``text_projection.*``) move between a tower and a detector checkpoint unchanged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import CONFIG_NAME, INDEX_NAME, WEIGHTS_NAME, load_state_dict_strict, read_checkpoint, resolve
from ..modeling.clip_text import ClipTextEncoder
from ..modeling.config import ClipTextConfig, Sam3LiteTextConfig, TextConfig
from ..modeling.text import MobileClipTextEncoder

TEXT_PREFIXES = ("text_encoder.", "text_projection.")


class TextTower(nn.Module):
    """Prompt tokens -> the detector's prompt features.

    Args:
        text_config: ``TextConfig`` (MobileCLIP student) or ``ClipTextConfig`` (SAM3's CLIP tower).
        out_dim: D, the detector width (256 in SAM3).
    """

    def __init__(self, text_config: TextConfig | ClipTextConfig, out_dim: int) -> None:
        super().__init__()
        self.text_config = text_config
        if isinstance(text_config, ClipTextConfig):
            self.text_encoder: nn.Module = ClipTextEncoder(text_config)
        else:
            self.text_encoder = MobileClipTextEncoder(text_config)
        self.text_projection = nn.Linear(text_config.hidden_size, out_dim)

    @property
    def out_dim(self) -> int:
        return self.text_projection.out_features

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B, T], attention_mask [B, T] (1 = real token) -> [B, T, D].

        Equals ``Sam3LiteTextModel.get_text_features(input_ids, attention_mask).pooler_output``.
        """
        encoded = self.text_encoder(input_ids, attention_mask)
        return self.text_projection(encoded.last_hidden_state)

    def fingerprint(self) -> str:
        """sha256 of every weight (as float32, BatchNorm counters excluded): the identity of a teacher."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            if name.endswith("num_batches_tracked"):
                continue
            data = tensor.detach().to("cpu", torch.float32).contiguous()
            digest.update(f"{name}:{tuple(data.shape)};".encode())
            digest.update(data.view(torch.uint8).numpy())
        return digest.hexdigest()


def text_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``text_encoder.*`` / ``text_projection.*`` entries of a detector state dict."""
    return {k: v for k, v in state.items() if k.startswith(TEXT_PREFIXES)}


def load_tower(name_or_path: str | Path) -> tuple[TextTower, Sam3LiteTextConfig, Path]:
    """The text tower of a SAM3 / LiteText checkpoint (short name, hub id, directory or ``.pt``), in eval mode.

    From a safetensors directory only the text tensors are read, so SAM3's 3.4 GB file is not loaded whole.
    Returns (tower, the detector config, the resolved local path).
    """
    path = resolve(name_or_path)
    config, state = _read_text_checkpoint(path)
    tower = TextTower(config.text_config, config.detr_encoder_config.hidden_size)
    load_state_dict_strict(tower, state, source=f"{path} (text encoder)")
    return tower.eval(), config, path


def _read_text_checkpoint(path: Path) -> tuple[Sam3LiteTextConfig, dict[str, torch.Tensor]]:
    files = _safetensors_files(path) if path.is_dir() else None
    if not files:
        config, state = read_checkpoint(path)
        return config, text_state(state)
    from safetensors import safe_open

    config = Sam3LiteTextConfig.from_json_file(path / CONFIG_NAME)
    state: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                if key.startswith(TEXT_PREFIXES):
                    state[key] = handle.get_tensor(key)
    return config, state


def _safetensors_files(directory: Path) -> list[Path]:
    """The weight files of an HF directory with a config.json (empty when it is not one)."""
    if not (directory / CONFIG_NAME).is_file():
        return []
    index = directory / INDEX_NAME
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        return [directory / f for f in sorted({f for k, f in weight_map.items() if k.startswith(TEXT_PREFIXES)})]
    single = directory / WEIGHTS_NAME
    if single.is_file():
        return [single]
    others = sorted(directory.glob("*.safetensors"))
    return others if len(others) == 1 else []
