"""Checking ``predict`` arguments, shared by ``sam3lite.Predictor`` and the ONNX runtime."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEFAULT_TEXT = "visual"  # the prompt the reference uses when only boxes are given


def prompt_list(text: str | Sequence[str] | None, boxes: Sequence[Any] | None) -> list[str]:
    """The prompts of a ``predict`` call: the text(s), or "visual" for boxes alone."""
    if text is None:
        if boxes is None:
            raise ValueError("predict needs text, boxes, or both")
        return [DEFAULT_TEXT]
    if isinstance(text, str):
        text = [text]
    prompts = list(text)
    if not prompts:
        raise ValueError("text is an empty list")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"text[{i}] must be a non-empty string, got {prompt!r}")
    return prompts


def check_unit(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a number in [0, 1] (thresholds)."""
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
