"""SAM3's own CLIP text encoder (``text_encoder`` of the HF ``Sam3Model``), so ``facebook/sam3`` loads too.

A causal CLIP text transformer (24 layers, width 1024 in the full model) with a learned position table
of ``max_position_embeddings`` rows (no interpolation: T must not exceed it). Attribute names follow
``CLIPTextModelWithProjection``: ``text_model.{embeddings,encoder.layers.N,final_layer_norm}`` and
``text_projection``.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ClipTextConfig
from .text import TextEncoderOutput, TransformerLayer, check_text_inputs


class ClipTextEmbeddings(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(input_ids) + self.position_embedding.weight[: input_ids.shape[1]]


class ClipEncoder(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(
                config.hidden_size,
                config.num_attention_heads,
                config.intermediate_size,
                config.hidden_act,
                config.layer_norm_eps,
            )
            for _ in range(config.num_hidden_layers)
        )

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, C]; attention_mask [B, T] bool (True = real token) or None. Causal attention,
        with padded keys also masked when a mask is given."""
        if attention_mask is None:
            mask, is_causal = None, True
        else:
            t = x.shape[1]
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            mask, is_causal = causal & attention_mask[:, None, None, :], False  # (B, 1, T, T)
        for layer in self.layers:
            x = layer(x, mask, is_causal)
        return x


class ClipTextTransformer(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.embeddings = ClipTextEmbeddings(config)
        self.encoder = ClipEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.encoder(self.embeddings(input_ids), attention_mask)
        return self.final_layer_norm(x)


class ClipTextEncoder(nn.Module):
    """CLIP text encoder with projection; same interface as ``MobileClipTextEncoder``."""

    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.config = config
        self.text_model = ClipTextTransformer(config)
        self.text_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, original: bool = False
    ) -> TextEncoderOutput:
        """input_ids [B, T] (T <= max_position_embeddings); attention_mask [B, T] (nonzero = real) or None.

        ``last_hidden_state`` [B, T, H] after ``final_layer_norm``. ``pooler_output`` [B, projection_dim]
        is CLIP's ``text_embeds``: the state at the first ``eos_token_id`` (position 0 if a row has none),
        through ``text_projection``, not normalised. ``original`` changes nothing here: attention is
        causal, so padding never reaches a real token, and the projection's orientation is unambiguous
        (1024 -> 512) in both layouts.
        """
        del original  # same interface as MobileClipTextEncoder
        check_text_inputs(input_ids, attention_mask, self.config.vocab_size, self.config.max_position_embeddings)
        mask = None if attention_mask is None else attention_mask.bool()
        x = self.text_model(input_ids, mask)
        eot = (input_ids == self.config.eos_token_id).int().argmax(dim=-1)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]
        return TextEncoderOutput(last_hidden_state=x, pooler_output=self.text_projection(pooled))


__all__ = ["ClipTextEncoder"]
