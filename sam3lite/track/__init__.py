"""``sam3lite track``: objects given by clicks or boxes, tracked through videos (see ``runner``)."""

from .prompts import ObjectPrompt, parse_cli, read_json
from .runner import TrackOptions, run

__all__ = ["ObjectPrompt", "TrackOptions", "parse_cli", "read_json", "run"]
