"""``sam3lite track``: every instance of noun phrases, and objects given by clicks or boxes, tracked through
videos (see ``runner``)."""

from .prompts import ObjectPrompt, check_phrases, parse_cli, parse_settings, read_json
from .runner import TrackOptions, run

__all__ = ["ObjectPrompt", "TrackOptions", "check_phrases", "parse_cli", "parse_settings", "read_json", "run"]
