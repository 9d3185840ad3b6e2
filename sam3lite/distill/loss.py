"""Distillation loss and validation metrics.

loss = MSE + λ_cos · (1 − cos) + λ_cons · consistency, where

- MSE and (1 − cos) are per token over the D features, averaged over real (non-pad) tokens;
- consistency is the MSE between the mean-pooled (over real tokens) student features of a prompt and of
  the same prompt with its words shuffled: a bag-of-words prior that steadies the small student.

Sums are divided by counts the caller passes: the number of real tokens / prompts in the whole global
batch, not in one process's share. A process's loss is then its exact share of the global loss, and
DistributedDataParallel's gradient average (times the world size) equals the one-process gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# (λ_cos, λ_cons) per student variant, as published (config-file students: see student.recipe_variant).
DEFAULT_WEIGHTS = {"s0": (2.0, 0.1), "s1": (1.5, 0.1), "l": (1.0, 0.05)}


@dataclass(frozen=True)
class LossWeights:
    cos: float
    cons: float

    @classmethod
    def for_variant(cls, variant: str | None, cos: float | None = None, cons: float | None = None) -> LossWeights:
        default_cos, default_cons = DEFAULT_WEIGHTS[variant or "s1"]
        return cls(default_cos if cos is None else cos, default_cons if cons is None else cons)


def mean_pool(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """features [B, T, D], mask [B, T] (1 = real) -> [B, D], the mean over real tokens."""
    weights = mask.to(features.dtype).unsqueeze(-1)  # (B, T, 1)
    return (features * weights).sum(1) / weights.sum(1).clamp(min=1)


def token_sums(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over real tokens of the per-token MSE and of (1 − cos). student/teacher [B, T, D], mask [B, T]."""
    real = mask.to(student.dtype)
    mse = (student - teacher).pow(2).mean(-1)  # (B, T)
    cos = F.cosine_similarity(student, teacher, dim=-1, eps=1e-8)  # (B, T)
    return (mse * real).sum(), ((1 - cos) * real).sum()


def distill_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    mask: torch.Tensor,
    shuffled: torch.Tensor | None,
    shuffled_mask: torch.Tensor | None,
    weights: LossWeights,
    num_tokens: int,
    num_prompts: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one process's share of a global batch, and its parts (already weighted by the counts).

    Args:
        student, teacher: [B, T, D] features (float32); mask [B, T].
        shuffled, shuffled_mask: student features [B, T, D] and mask of the word-shuffled prompts
            (None when λ_cons is 0).
        num_tokens, num_prompts: real tokens and prompts in the whole global batch.
    """
    mse_sum, cos_sum = token_sums(student, teacher, mask)
    parts = {"mse": mse_sum / num_tokens, "cos": cos_sum / num_tokens}
    if shuffled is not None and shuffled_mask is not None:
        pooled, pooled_shuffled = mean_pool(student, mask), mean_pool(shuffled, shuffled_mask)
        parts["cons"] = (pooled - pooled_shuffled).pow(2).mean(-1).sum() / num_prompts
    else:
        parts["cons"] = student.new_zeros(())
    loss = parts["mse"] + weights.cos * parts["cos"] + weights.cons * parts["cons"]
    return loss, parts


@dataclass
class MetricSums:
    """Running sums for validation: token cosine and MSE per real token, pooled cosine per prompt."""

    token_cos: float = 0.0
    mse: float = 0.0
    pooled_cos: float = 0.0
    tokens: int = 0
    prompts: int = 0

    def add(self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> None:
        student, teacher = student.float(), teacher.float()
        real = mask.to(student.dtype)
        self.token_cos += float((F.cosine_similarity(student, teacher, dim=-1, eps=1e-8) * real).sum())
        self.mse += float(((student - teacher).pow(2).mean(-1) * real).sum())
        pooled = F.cosine_similarity(mean_pool(student, mask), mean_pool(teacher, mask), dim=-1, eps=1e-8)
        self.pooled_cos += float(pooled.sum())
        self.tokens += int(real.sum())
        self.prompts += student.shape[0]

    def result(self) -> dict[str, float]:
        return {
            "token_cos": self.token_cos / max(self.tokens, 1),
            "mse": self.mse / max(self.tokens, 1),
            "pooled_cos": self.pooled_cos / max(self.prompts, 1),
            "prompts": self.prompts,
            "tokens": self.tokens,
        }
