"""Named model variants: a short name, its hub id, and the numbers that set it apart.

The variants share everything but the text encoder (SAM3-LiteText's paper, Table 1); the released
LiteText files carry a 16-entry position table (context length 16).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..modeling.config import Sam3LiteTextConfig


@dataclass(frozen=True)
class Variant:
    name: str
    hub_id: str
    model_type: str
    text_config: dict[str, Any] = field(default_factory=dict)

    def config(self) -> Sam3LiteTextConfig:
        """The full-size ``Sam3LiteTextConfig`` of this variant."""
        return Sam3LiteTextConfig.from_dict({"model_type": self.model_type, "text_config": dict(self.text_config)})


_MOBILECLIP = {"vocab_size": 49408, "max_position_embeddings": 16, "projection_dim": 512}

VARIANTS: dict[str, Variant] = {
    "s0": Variant(
        "s0",
        "vil-uob/sam3-litetext-s0",
        "sam3_lite_text",
        {
            **_MOBILECLIP,
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": 6,
            "num_attention_heads": 8,
            "use_repmixer_blocks": True,
        },
    ),
    "s1": Variant(
        "s1",
        "vil-uob/sam3-litetext-s1",
        "sam3_lite_text",
        {
            **_MOBILECLIP,
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": 12,
            "num_attention_heads": 8,
            "use_repmixer_blocks": False,
        },
    ),
    "l": Variant(
        "l",
        "vil-uob/sam3-litetext-l",
        "sam3_lite_text",
        {
            **_MOBILECLIP,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "use_repmixer_blocks": False,
            "projection_dim": 768,
        },
    ),
    "sam3": Variant("sam3", "facebook/sam3", "sam3", {"model_type": "clip_text_model"}),
}


def variant_of(config: Sam3LiteTextConfig) -> str:
    """The named variant whose architecture ``config`` describes, else ``"custom"``.

    Compares the typed fields only: keys sam3lite does not model (``transformers_version``,
    ``id2label`` ...) and the text mode do not make a hub config "custom".
    """
    plain = dataclasses.replace(config, text_mode="transformers")
    for name, variant in VARIANTS.items():
        if variant.config() == plain:
            return name
    return "custom"
