"""MobileCLIP student text encoder of SAM3-LiteText, and RepMixer folding for inference.

Layout (S0): token embedding + position table -> [RepMixer block, standard layers..., RepMixer block]
-> final LayerNorm. S1 / L use standard layers only. Standard layers are pre-norm bidirectional
transformer layers with padded keys masked out. RepMixer blocks are depthwise-conv token mixers that
**ignore the attention mask**: pad tokens (id 49407) leak into real tokens, so the pad id matters.

The position table has ``max_position_embeddings`` (P) rows; a sequence of length T != P gets the table
resized to T rows by bilinear interpolation (``align_corners=False``). The hub checkpoints have P=16 while
the processor pads to T=32, so the resize always happens there.

Module attribute names equal the checkpoint keys of ``text_encoder.*`` in the HF ``Sam3LiteTextModel``.
``TransformerLayer`` / ``TextAttention`` are shared with the CLIP encoder in ``clip_text.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP, Attention, activation, exporting
from .config import TextConfig


@dataclass
class TextEncoderOutput:
    """What both text encoders return.

    last_hidden_state: [B, T, H] after the final LayerNorm (what the detector uses).
    pooler_output: [B, projection_dim], the end-of-text token's state through the encoder's own
        projection (CLIP-style sentence embedding; unused downstream).
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor


# ---------------------------------------------------------------------------------------------
# Input checks and the standard transformer layer (shared with clip_text.py)
# ---------------------------------------------------------------------------------------------


def check_text_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, vocab_size: int, max_length: int | None = None
) -> None:
    """Raise ValueError (naming the argument) unless input_ids is [B, T] integer ids in [0, vocab_size)
    and attention_mask is None or of the same shape. ``max_length`` bounds T when given."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a 2-D [batch, length] tensor, got {shape}")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be an integer tensor, got dtype {input_ids.dtype}")
    if input_ids.numel() == 0:
        raise ValueError(f"input_ids must not be empty, got shape {tuple(input_ids.shape)}")
    if max_length is not None and input_ids.shape[1] > max_length:
        raise ValueError(f"input_ids has length {input_ids.shape[1]}, longer than max_position_embeddings={max_length}")
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
            shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else attention_mask
            raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {shape}")
    if exporting():
        return  # a traced graph cannot read values; its caller checks the ids
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"input_ids must lie in [0, vocab_size={vocab_size}), got values in [{low}, {high}]")


class TextAttention(Attention):
    """Self-attention with CLIP's key names (``out_proj``), on SDPA."""

    out_name = "out_proj"

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """x [B, T, C]; attn_mask bool (True = attend) broadcastable to [B, heads, T, T]. Returns [B, T, C]."""
        return super().forward(x, x, x, attn_mask, is_causal)


class TransformerLayer(nn.Module):
    """Pre-norm layer: x + attn(LN1(x)), then x + MLP(LN2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, act: str, eps: float) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(dim, eps=eps)
        self.self_attn = TextAttention(dim, num_heads)
        self.layer_norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp_dim, act)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), attn_mask, is_causal)
        return x + self.mlp(self.layer_norm2(x))


# ---------------------------------------------------------------------------------------------
# RepMixer parts (work on [B, C, 1, T] like the reference, so conv weights load as they are)
# ---------------------------------------------------------------------------------------------


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that loads state dicts without ``num_batches_tracked``.

    Checkpoints written by some tools drop that counter. torch only fills it in for state dicts
    without version metadata; we always do, so strict loading works with or without it (the counter
    only matters for training with ``momentum=None``).
    """

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        key = prefix + "num_batches_tracked"
        if self.track_running_stats and key not in state_dict:
            state_dict[key] = torch.zeros((), dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = scale * x + shift (per channel, float64)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return scale, bn.bias.double() - bn.running_mean.double() * scale


def _depthwise_conv(dim: int, kernel_size: int, bias: bool) -> nn.Conv2d:
    """Depthwise (1, k) conv along the sequence with zero 'same' padding."""
    return nn.Conv2d(dim, dim, (1, kernel_size), padding=(0, kernel_size // 2), groups=dim, bias=bias)


class MobileOneBlock(nn.Module):
    """BN(dwconv(x)) + BN_skip(x)."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.batchnorm_skip = BatchNorm2d(dim)
        self.conv = _depthwise_conv(dim, kernel_size, bias=False)
        self.batchnorm_conv = BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.batchnorm_conv(self.conv(x)) + self.batchnorm_skip(x)


class RepMixer(nn.Module):
    """Token mixer x + γ·(BN_conv(dw(x)) + BN_skip(x) − BN_ref(x)), foldable into one depthwise conv.

    After ``reparameterize()`` only ``reparam_conv`` (a biased depthwise conv that includes the
    residual) is left.
    """

    def __init__(self, dim: int, kernel_size: int, layer_scale_init: float) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), layer_scale_init))
        self.reference_batchnorm = BatchNorm2d(dim)
        self.mixer = MobileOneBlock(dim, kernel_size)
        self.reparam_conv: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.layer_scale * (self.mixer(x) - self.reference_batchnorm(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the branches (with BN running statistics) into ``reparam_conv``; no-op when done."""
        if self.reparam_conv is not None:
            return
        gamma = self.layer_scale.double().view(-1, 1, 1, 1)
        conv_scale, conv_shift = _bn_affine(self.mixer.batchnorm_conv)
        skip_scale, skip_shift = _bn_affine(self.mixer.batchnorm_skip)
        ref_scale, ref_shift = _bn_affine(self.reference_batchnorm)
        weight = self.mixer.conv.weight.double() * conv_scale.view(-1, 1, 1, 1)  # (C, 1, 1, k)
        weight[..., self.kernel_size // 2] += (skip_scale - ref_scale).view(-1, 1, 1)
        weight = gamma * weight
        weight[..., self.kernel_size // 2] += 1.0  # the residual x
        bias = gamma.flatten() * (conv_shift + skip_shift - ref_shift)

        ref = self.mixer.conv.weight
        conv = _depthwise_conv(ref.shape[0], self.kernel_size, bias=True).to(device=ref.device, dtype=ref.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        del self.layer_scale, self.reference_batchnorm, self.mixer
        self.reparam_conv = conv


class ConvMLP(nn.Module):
    """fc1 -> act -> fc2 with weights stored as 1×1 convs [out, in, 1, 1] (checkpoint layout), run as matmuls."""

    def __init__(self, dim: int, hidden_dim: int, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., C] channels-last -> [..., C]."""
        x = self.act(F.linear(x, self.fc1.weight.flatten(1), self.fc1.bias))
        return F.linear(x, self.fc2.weight.flatten(1), self.fc2.bias)


class ConvFeedForward(nn.Module):
    """BN(dwconv(x)) then the MLP fc1 -> act -> fc2."""

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int, act: str) -> None:
        super().__init__()
        self.depthwise_conv = _depthwise_conv(dim, kernel_size, bias=False)
        self.depthwise_batchnorm: nn.Module = BatchNorm2d(dim)
        self.mlp = ConvMLP(dim, hidden_dim, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, 1, T] -> [B, T, C]."""
        return self.mlp(self.depthwise_batchnorm(self.depthwise_conv(x)).squeeze(2).transpose(1, 2))

    @torch.no_grad()
    def reparameterize(self, layer_scale: torch.Tensor | None = None) -> None:
        """Fold the BatchNorm into the depthwise conv (which gains a bias) and ``layer_scale`` [C] into fc2."""
        if isinstance(self.depthwise_batchnorm, BatchNorm2d):
            scale, shift = _bn_affine(self.depthwise_batchnorm)
            ref = self.depthwise_conv.weight
            conv = _depthwise_conv(ref.shape[0], ref.shape[-1], bias=True).to(device=ref.device, dtype=ref.dtype)
            conv.weight.copy_(ref.double() * scale.view(-1, 1, 1, 1))
            conv.bias.copy_(shift)
            self.depthwise_conv = conv
            self.depthwise_batchnorm = nn.Identity()
        if layer_scale is not None:
            gamma = layer_scale.double().flatten()
            fc2 = self.mlp.fc2
            fc2.weight.copy_(fc2.weight.double() * gamma.view(-1, 1, 1, 1))
            fc2.bias.copy_(fc2.bias.double() * gamma)


class RepMixerBlock(nn.Module):
    """RepMixer token mixer, then x + γ·ConvFeedForward(x). Takes and returns [B, T, C].

    The attention mask is accepted and ignored, as in the reference: pad tokens are mixed in.
    """

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        dim, k = config.hidden_size, config.repmixer_kernel_size
        self.layer_scale: nn.Parameter | None = nn.Parameter(torch.full((dim, 1, 1), config.layer_scale_init_value))
        self.token_mixer = RepMixer(dim, k, config.layer_scale_init_value)
        self.conv_feed_forward = ConvFeedForward(dim, config.intermediate_size, k, config.hidden_act)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.token_mixer(x.transpose(1, 2).unsqueeze(2))  # (B, C, 1, T)
        update = self.conv_feed_forward(x)  # (B, T, C)
        x = x.squeeze(2).transpose(1, 2)
        if self.layer_scale is None:  # folded into fc2
            return x + update
        return x + self.layer_scale.flatten() * update

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold both branches; the block's ``layer_scale`` moves into ``conv_feed_forward.mlp.fc2``."""
        self.token_mixer.reparameterize()
        self.conv_feed_forward.reparameterize(self.layer_scale)
        if self.layer_scale is not None:
            del self.layer_scale
            self.layer_scale = None


# ---------------------------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------------------------


class PositionEmbedding(nn.Module):
    """Learned table [1, 1, P, C], resized bilinearly to the sequence length when T != P."""

    def __init__(self, num_positions: int, dim: int) -> None:
        super().__init__()
        self.position_embedding = nn.Parameter(torch.randn(1, 1, num_positions, dim) * dim**-0.5)

    def forward(self, length: int) -> torch.Tensor:
        """-> [1, T, C]."""
        table = self.position_embedding
        if length != table.shape[2]:
            # Width is unchanged, so this is linear interpolation along the sequence (align_corners=False).
            table = F.interpolate(table, size=(length, table.shape[3]), mode="bilinear", align_corners=False)
        return table[0]


class TextEmbeddings(nn.Module):
    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = PositionEmbedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(input_ids)
        return x + self.position_embedding(input_ids.shape[1]).to(x.dtype)


class MobileClipTextEncoder(nn.Module):
    """MobileCLIP student text encoder (``text_encoder`` of ``Sam3LiteTextModel``).

    With ``config.use_repmixer_blocks`` the first and last layers are RepMixer blocks, the rest
    standard transformer layers. ``reparameterize()`` folds the RepMixer blocks for inference; that
    changes the state dict (BatchNorm and layer-scale keys disappear, ``token_mixer.reparam_conv.*``
    and ``depthwise_conv.bias`` appear), so load checkpoints before folding.
    """

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = TextEmbeddings(config)
        repmixer_at = {0, config.num_hidden_layers - 1} if config.use_repmixer_blocks else set()
        self.layers = nn.ModuleList(
            RepMixerBlock(config)
            if i in repmixer_at
            else TransformerLayer(
                config.hidden_size,
                config.num_attention_heads,
                config.intermediate_size,
                config.hidden_act,
                config.layer_norm_eps,
            )
            for i in range(config.num_hidden_layers)
        )
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, original: bool = False
    ) -> TextEncoderOutput:
        """input_ids [B, T] token ids; attention_mask [B, T] (nonzero = real token) or None (all real).

        Standard layers are bidirectional with padded keys masked; RepMixer blocks see every token.
        ``pooler_output`` takes the token at ``input_ids.argmax(-1)`` (the first EOT, id 49407, the
        largest id in the CLIP vocabulary), as the reference does, then the projection: ``x @ W.T``
        as transformers computes it, or with ``original`` the EfficientSAM3 product ``x @ P`` (see
        ``original_projection``).
        """
        check_text_inputs(input_ids, attention_mask, self.config.vocab_size)
        x = self.embeddings(input_ids)
        mask = None if attention_mask is None else attention_mask[:, None, None, :].bool()  # (B, 1, 1, T) keys
        for layer in self.layers:
            x = layer(x, mask)
        x = self.final_layer_norm(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), input_ids.argmax(dim=-1)]
        pooled = pooled @ self.original_projection() if original else self.projection(pooled)
        return TextEncoderOutput(last_hidden_state=x, pooler_output=pooled)

    def original_projection(self) -> torch.Tensor:
        """MobileCLIP's ``projection_layer`` P [H, D], used by EfficientSAM3 as ``x @ P``.

        The released files hold P as stored by the original (``[H, D]``, square for every variant) in
        ``projection.weight``: transformers' converter copies it without a transpose, and so does
        ``sam3lite.checkpoints.convert`` where the shape allows, so that the hub file and the ``.pt`` hold
        the same tensor. A non-square P could only be stored transposed (the Linear shape ``[D, H]``).
        """
        weight = self.projection.weight
        return weight if weight.shape[0] == weight.shape[1] else weight.t()

    def reparameterize(self) -> None:
        """Fold every RepMixer block (uses BN running stats, i.e. eval behaviour). Idempotent."""
        for layer in self.layers:
            if isinstance(layer, RepMixerBlock):
                layer.reparameterize()


def reparameterize_model(model: nn.Module) -> nn.Module:
    """Call ``reparameterize()`` on every submodule that has one (in place); returns ``model``.

    As apple/ml-mobileclip's helper, but in place (no copy). Meant for inference: outputs stay equal
    to the eval-mode model's, training-mode BatchNorm behaviour is gone.
    """
    for module in list(model.modules()):
        fold = getattr(module, "reparameterize", None)
        if callable(fold):
            fold()
    return model


Sam3LiteTextTextModel = MobileClipTextEncoder

__all__ = [
    "TextEncoderOutput",
    "MobileClipTextEncoder",
    "Sam3LiteTextTextModel",
    "reparameterize_model",
    "TransformerLayer",
    "TextAttention",
    "check_text_inputs",
]
