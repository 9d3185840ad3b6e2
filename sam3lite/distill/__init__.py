"""Distillation: train a LiteText (MobileCLIP) text encoder to reproduce SAM3's text features.

Pipeline (``sam3lite distill ...`` on the command line):

1. ``cache``: run the teacher (SAM3's text encoder + its projection to 256) once over a prompt corpus and
   store the token-level targets [T, 256] on disk (``cache.py``).
2. ``train``: fit a student (``student.py``) with the published loss (``loss.py``) in a flat training loop,
   one process or many under torchrun (``train.py``).
3. ``eval``: token cosine, MSE and pooled cosine on the held-out prompts.
4. ``export``: the student plus a base SAM3 checkpoint's other parts -> a Sam3LiteText checkpoint
   (``export.py``).
"""

from .cache import Cache, build_cache, open_cache
from .export import export
from .loss import LossWeights, distill_loss
from .student import build_student, read_init, student_config
from .tower import TextTower, load_tower
from .train import TrainConfig, evaluate, load_run, resolve_config, train

__all__ = [
    "Cache",
    "LossWeights",
    "TextTower",
    "TrainConfig",
    "build_cache",
    "build_student",
    "distill_loss",
    "evaluate",
    "export",
    "load_run",
    "load_tower",
    "open_cache",
    "read_init",
    "resolve_config",
    "student_config",
    "train",
]
