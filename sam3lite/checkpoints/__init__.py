"""Getting weights: hub names and variants, reading, writing and converting checkpoints.

Depends on ``modeling`` (the networks and configs) and ``runtime`` (device/dtype choices); nothing
below imports it.
"""

from .contents import CheckpointContents
from .files import (
    CONFIG_NAME,
    INDEX_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    load_state_dict_strict,
    read_checkpoint,
    read_contents,
    skip_weight_init,
    write_checkpoint,
)
from .hub import resolve
from .pretrained import Sam3LiteTextModel, load
from .variants import VARIANTS, Variant, variant_of

__all__ = [
    "CONFIG_NAME",
    "INDEX_NAME",
    "VARIANTS",
    "WEIGHTS_NAME",
    "CheckpointContents",
    "CheckpointError",
    "Sam3LiteTextModel",
    "Variant",
    "load",
    "load_state_dict_strict",
    "read_checkpoint",
    "read_contents",
    "resolve",
    "skip_weight_init",
    "variant_of",
    "write_checkpoint",
]
