"""Building blocks shared by the DETR-style parts: attention, MLPs, activations.

Module attribute names equal the checkpoint keys (``q_proj``, ``fc1``, ``layer1`` ...), so a
state dict loads without renaming.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

# Every LayerNorm of the prompt/DETR/mask parts was trained with eps 1e-5 (PyTorch's default); the
# configs' layer_norm_eps (1e-6) is stored for round trips but unused, as in the reference.
HEAD_LAYER_NORM_EPS = 1e-5

_ACTIVATIONS = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "quick_gelu": None,  # filled below; CLIP's sigmoid approximation
}


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the activation of OpenAI CLIP."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


_ACTIVATIONS["quick_gelu"] = QuickGELU


def activation(name: str) -> nn.Module:
    """Activation module for a config's ``hidden_act`` string."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"hidden_act={name!r} is not supported; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/o projections, on ``scaled_dot_product_attention``.

    Args:
        dim: model width C; ``num_heads`` must divide it.
    """

    # Name of the output projection in checkpoints: SAM3's parts say o_proj, CLIP-style text towers out_proj.
    out_name = "o_proj"

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_size={dim} is not divisible by num_attention_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        setattr(self, self.out_name, nn.Linear(dim, dim))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """query [B, Nq, C], key/value [B, Nk, C]; attn_mask is a bool (True = attend) or additive
        float mask broadcastable to [B, heads, Nq, Nk]; ``is_causal`` masks future keys. Returns [B, Nq, C]."""
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(key))
        v = self._split(self.v_proj(value))
        if exporting() and attn_mask is not None and attn_mask.is_floating_point():
            # torch.export's decomposition of SDPA with an additive mask reports the output's strides
            # wrongly, and the reshape below then fails; the same product written out exports cleanly.
            weights = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5 + attn_mask
            out = weights.softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        b, _, nq, _ = out.shape
        return getattr(self, self.out_name)(out.transpose(1, 2).reshape(b, nq, -1))


def exporting() -> bool:
    """True while ``torch.export`` (and so ``torch.onnx.export``) traces the model.

    Input checks that read tensor values (``bool(t.all())``, ``int(t.min())``) cannot be traced: they
    are skipped then, and the exported graph trusts its inputs (its caller checks them instead).
    """
    return torch.compiler.is_exporting()


_Table = TypeVar("_Table", bound=Callable[..., torch.Tensor])


def table_cache(maxsize: int) -> Callable[[_Table], _Table]:
    """``functools.lru_cache`` for tables that depend only on shapes (RoPE, sine positions).

    Bypassed while exporting: a table made while ``torch.export`` traces is a fake tensor, and
    keeping it would hand fake tensors to every later eager call of the same shape.
    """

    def decorate(fn: _Table) -> _Table:
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def table(*args: object) -> torch.Tensor:
            return fn(*args) if exporting() else cached(*args)

        table.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return table  # type: ignore[return-value]

    return decorate


def key_padding_mask(valid: torch.Tensor | None) -> torch.Tensor | None:
    """[B, Nk] bool (True = real token) -> [B, 1, 1, Nk] bool mask for ``Attention``."""
    if valid is None:
        return None
    return valid[:, None, None, :].bool()


class MLP(nn.Module):
    """fc1 -> activation -> fc2 (the transformer feed-forward block)."""

    def __init__(self, dim: int, hidden_dim: int, act: str = "relu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class HeadMLP(nn.Module):
    """Two- or three-layer ReLU MLP with keys ``layer1``..``layer3`` (box, presence and scoring heads)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2) -> None:
        super().__init__()
        if num_layers not in (2, 3):
            raise ValueError(f"num_layers must be 2 or 3, got {num_layers}")
        self.layer1 = nn.Linear(in_dim, hidden_dim)
        if num_layers == 2:
            self.layer2 = nn.Linear(hidden_dim, out_dim)
            self.layer3 = None
        else:
            self.layer2 = nn.Linear(hidden_dim, hidden_dim)
            self.layer3 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.layer1(x))
        if self.layer3 is None:
            return self.layer2(x)
        return self.layer3(F.relu(self.layer2(x)))


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """log(x / (1 - x)) with both terms clamped at ``eps`` (DETR's box-refinement convention)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] (cx, cy, w, h) -> [..., 4] (x1, y1, x2, y2)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] (x1, y1, x2, y2) -> [..., 4] (cx, cy, w, h)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


TWO_PI = 2 * math.pi
