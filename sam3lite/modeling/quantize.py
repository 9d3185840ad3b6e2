"""Optional int8 image encoder for x86 CPUs (opt-in; float32 stays the default).

The ViT's linear layers (fused q/k/v, o_proj, MLP fc1/fc2) are about 85% of the image encoder's
arithmetic (4.6 of 5.4 TFLOP at 1008²). Here their weights become int8 per output channel and their
inputs are quantized per token at run time, through PyTorch's x86 quantized kernels (fbgemm /
oneDNN, AVX2 and up), which run these products about twice as fast as float32 on CPUs without
bfloat16 hardware (numbers in BENCHMARKS.md).
Everything else (RoPE, attention, LayerNorm, the FPN neck, text encoder and heads) stays float32.

Accuracy depends on the weights: measure it on yours before relying on it
(``sam3lite bench --checkpoint DIR --quantize int8`` prints the error of every output against the
float32 reference). A quantized model is for inference only and cannot be saved.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def int8_supported() -> bool:
    """True where PyTorch has the x86 quantized linear kernels this module uses."""
    engines = torch.backends.quantized.supported_engines
    try:
        kernels = (torch.ops.quantized.linear_prepack, torch.ops.quantized.linear_dynamic)
    except (AttributeError, RuntimeError):
        return False
    return all(kernels) and hasattr(torch, "quantize_per_channel") and ("fbgemm" in engines or "x86" in engines)


class Int8Linear(nn.Module):
    """y = x Wᵀ + b with W stored int8 (one scale per output row) and x quantized per token on the fly.

    Per-token scaling: each row of x is divided by its max |x| before the kernel's per-tensor
    quantization and multiplied back after, so one large token does not coarsen all the others.

    Args:
        weight: [N, K] float weight; bias: [N] or None.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        weight = weight.detach().float().cpu()
        scale = (weight.abs().amax(dim=1).clamp(min=1e-12) / 127).double()
        zero = torch.zeros_like(scale, dtype=torch.long)
        with warnings.catch_warnings():
            # PyTorch 2.14 marks quantized-tensor constructors deprecated; the packed kernels still
            # take one. int8_supported() reports False once they are gone.
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
            qweight = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
        # Bias is added after the per-token rescale, so the kernel gets none.
        self._packed = torch.ops.quantized.linear_prepack(qweight, None)
        self.out_features, self.in_features = weight.shape
        self.register_buffer("bias", None if bias is None else bias.detach().float().cpu().clone(), persistent=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        return cls(linear.weight, linear.bias)

    # Rows per kernel call: the normalized copy and the kernel's uint8 buffer then stay small
    # (a 5184 x 4736 input would need 120 MB more at once) and cache-resident, which also made the
    # product about 25% faster on a 2-core AVX2 machine.
    ROWS_PER_CALL = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] float32 -> [..., N] float32."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        y = x.new_empty(x.shape[0], self.out_features)
        for start in range(0, x.shape[0], self.ROWS_PER_CALL):
            rows = x[start : start + self.ROWS_PER_CALL]
            row_max = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
            # reduce_range=True: 7-bit activations, which the x86 kernels need to avoid int16 overflow.
            product = torch.ops.quantized.linear_dynamic(rows / row_max, self._packed, True)
            torch.mul(product, row_max, out=y[start : start + self.ROWS_PER_CALL])
        if self.bias is not None:
            y.add_(self.bias)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights, per-token inputs"


def quantize_image_encoder(model: nn.Module) -> nn.Module:
    """Replace the ViT's linear layers of a float32 CPU ``Sam3LiteTextModel`` by ``Int8Linear`` in place.

    Raises:
        ValueError: the model is not float32 on the CPU, or this PyTorch build lacks x86 int8 kernels.
    """
    if model.device.type != "cpu" or model.dtype != torch.float32:
        raise ValueError(
            f"int8 quantization needs a float32 model on the CPU, got {model.dtype} on {model.device}; "
            'load with device="cpu", dtype="float32"'
        )
    if not int8_supported():
        raise ValueError(
            "int8 quantization needs PyTorch's x86 quantized kernels (fbgemm/oneDNN), which this build lacks: "
            f"supported engines are {torch.backends.quantized.supported_engines}"
        )
    for layer in model.vision_encoder.backbone.layers:
        attention = layer.attention
        if attention.qkv is None:
            attention.qkv = Int8Linear(*attention.fused_qkv())
            # The float32 q/k/v weights are no longer read: drop them (and their memory).
            attention.q_proj = attention.k_proj = attention.v_proj = None
        for parent, name in ((attention, "o_proj"), (layer.mlp, "fc1"), (layer.mlp, "fc2")):
            module = getattr(parent, name)
            if isinstance(module, nn.Linear):
                setattr(parent, name, Int8Linear.from_linear(module))
    return model


def is_quantized(model: nn.Module) -> bool:
    """True when any part of ``model`` was replaced by ``Int8Linear``."""
    return any(isinstance(m, Int8Linear) for m in model.modules())
