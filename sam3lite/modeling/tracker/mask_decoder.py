"""SAM's two-way transformer mask decoder, as SAM3's tracker uses it.

Output tokens (object score, IoU, 1 + ``num_multimask_outputs`` mask tokens) are prepended to the
prompt tokens; a two-way transformer updates tokens and image tokens; the image tokens are upscaled
x4 with the two finer neck levels (projected by ``conv_s0``/``conv_s1``) added on the way; each mask
token's hypernetwork MLP gives the weights of a dot product with the upscaled map.

Module names equal the checkpoint keys under ``tracker_model.mask_decoder.``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrackerMaskDecoderConfig
from .layers import FeedForward, LayerNorm2d, ProjectedAttention


class TwoWayBlock(nn.Module):
    """Token self-attention, token-to-image attention, token MLP, image-to-token attention (post-norm)."""

    def __init__(self, config: TrackerMaskDecoderConfig, skip_first_layer_pe: bool) -> None:
        super().__init__()
        dim, heads = config.hidden_size, config.num_attention_heads
        inner = dim // config.attention_downsample_rate
        self.skip_first_layer_pe = skip_first_layer_pe
        self.self_attn = ProjectedAttention(dim, dim, heads)
        self.layer_norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = ProjectedAttention(dim, inner, heads)
        self.layer_norm2 = nn.LayerNorm(dim)
        # The reference ties this MLP's depth to the number of transformer layers.
        self.mlp = FeedForward(dim, config.mlp_dim, dim, num_layers=config.num_hidden_layers)
        self.layer_norm3 = nn.LayerNorm(dim)
        self.layer_norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = ProjectedAttention(dim, inner, heads)

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, T, C], image [B, HW, C], token_pe [B, T, C], image_pe [1 or B, HW, C]."""
        if self.skip_first_layer_pe:
            # The first layer's self-attention replaces the tokens (no residual): they are their own encoding.
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            query = tokens + token_pe
            tokens = tokens + self.self_attn(query, query, tokens)
        tokens = self.layer_norm1(tokens)

        image_keys = image + image_pe
        tokens = self.layer_norm2(tokens + self.cross_attn_token_to_image(tokens + token_pe, image_keys, image))
        tokens = self.layer_norm3(tokens + self.mlp(tokens))
        image = self.layer_norm4(image + self.cross_attn_image_to_token(image_keys, tokens + token_pe, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    """``num_hidden_layers`` two-way blocks and a final token-to-image attention."""

    def __init__(self, config: TrackerMaskDecoderConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.layers = nn.ModuleList(TwoWayBlock(config, i == 0) for i in range(config.num_hidden_layers))
        self.final_attn_token_to_image = ProjectedAttention(
            dim, dim // config.attention_downsample_rate, config.num_attention_heads
        )
        self.layer_norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, T, C] (also their own positional encoding), image [B, HW, C], image_pe [1 or B, HW, C]."""
        token_pe = tokens
        for layer in self.layers:
            tokens, image = layer(tokens, image, token_pe, image_pe)
        attn = self.final_attn_token_to_image(tokens + token_pe, image + image_pe, image)
        return self.layer_norm_final_attn(tokens + attn), image


@dataclass
class DecoderOutput:
    """Raw mask-decoder output for B prompts (objects), K masks each (K = 3 multimask, else 1).

    masks: [B, K, 4h, 4w] logits; iou_scores: [B, K]; mask_tokens: [B, K, C] the output tokens of the
    returned masks (token 0 when one mask was asked, even if the stability rule picked a multimask
    output, as in the reference); object_score_logits: [B, 1] (> 0: the object is present).
    """

    masks: torch.Tensor
    iou_scores: torch.Tensor
    mask_tokens: torch.Tensor
    object_score_logits: torch.Tensor


class TrackerMaskDecoder(nn.Module):
    """Masks, IoU predictions and an object score from image embeddings and prompt tokens."""

    def __init__(self, config: TrackerMaskDecoderConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.config = config
        self.num_mask_tokens = config.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.transformer = TwoWayTransformer(config)
        self.upscale_conv1 = nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2)
        self.upscale_conv2 = nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2)
        self.upscale_layer_norm = LayerNorm2d(dim // 4, eps=1e-6)
        self.output_hypernetworks_mlps = nn.ModuleList(
            FeedForward(dim, dim, dim // 8, num_layers=3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = FeedForward(
            dim, config.iou_head_hidden_dim, self.num_mask_tokens, config.iou_head_depth, sigmoid=True
        )
        # 1x1 projections of the two finer neck levels (applied once per image, see Sam3Tracker.prepare_image).
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.obj_score_token = nn.Embedding(1, dim)
        self.pred_obj_score_head = FeedForward(dim, dim, 1, num_layers=3)

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        high_res_features: tuple[torch.Tensor, torch.Tensor],
        multimask_output: bool,
    ) -> DecoderOutput:
        """
        Args:
            image_embedding: [1 or B, C, h, w] (1 = one image shared by all B prompts, broadcast).
            image_pe: [1, C, h, w] positional encoding of the grid.
            sparse: [B, T, C] prompt tokens; dense: [B, C, h, w] (or an expanded view).
            high_res_features: conv_s0 level [1 or B, C/8, 4h, 4w] and conv_s1 level [1 or B, C/4, 2h, 2w].
            multimask_output: return the 3 multimask outputs, else one mask (stability rule in eval).
        """
        b, _, c = sparse.shape
        h, w = image_embedding.shape[-2:]
        out_tokens = torch.cat((self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight))
        tokens = torch.cat((out_tokens.expand(b, -1, -1), sparse.to(out_tokens.dtype)), dim=1)

        image = (image_embedding + dense).flatten(2).transpose(1, 2)  # (B, hw, C)
        tokens, image = self.transformer(tokens, image, image_pe.flatten(2).transpose(1, 2))
        score_token, iou_token = tokens[:, 0], tokens[:, 1]
        mask_tokens = tokens[:, 2 : 2 + self.num_mask_tokens]  # (B, 4, C)

        feat_s0, feat_s1 = high_res_features
        image = image.transpose(1, 2).reshape(b, c, h, w)
        up = F.gelu(self.upscale_layer_norm(self.upscale_conv1(image) + feat_s1))
        up = F.gelu(self.upscale_conv2(up) + feat_s0)  # (B, C/8, 4h, 4w)
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        masks = (hyper @ up.flatten(2)).view(b, self.num_mask_tokens, 4 * h, 4 * w)
        iou = self.iou_prediction_head(iou_token)  # (B, 4)
        object_score_logits = self.pred_obj_score_head(score_token)  # (B, 1)

        if multimask_output:
            return DecoderOutput(masks[:, 1:], iou[:, 1:], mask_tokens[:, 1:], object_score_logits)
        if self.config.dynamic_multimask_via_stability and not self.training:
            masks, iou = self._most_stable(masks, iou)
        else:
            masks, iou = masks[:, :1], iou[:, :1]
        return DecoderOutput(masks, iou, mask_tokens[:, :1], object_score_logits)

    def _most_stable(self, masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per prompt: the single-mask output when its logits are stable under a ±delta
        threshold shift, else the multimask output with the highest predicted IoU.

        masks [B, 4, H, W], iou [B, 4] -> [B, 1, H, W], [B, 1].
        """
        best = iou[:, 1:].argmax(dim=-1, keepdim=True) + 1  # (B, 1)
        best_masks = masks.gather(1, best[:, :, None, None].expand(-1, -1, *masks.shape[-2:]))
        best_iou = iou.gather(1, best)
        delta = self.config.dynamic_multimask_stability_delta
        single = masks[:, :1].flatten(2)
        inter = (single > delta).sum(-1).float()
        union = (single > -delta).sum(-1).float()
        stability = torch.where(union > 0, inter / union, 1.0)
        stable = stability >= self.config.dynamic_multimask_stability_thresh  # (B, 1)
        return torch.where(stable[..., None, None], masks[:, :1], best_masks), torch.where(stable, iou[:, :1], best_iou)
