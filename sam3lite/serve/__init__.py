"""HTTP service for SAM3-LiteText: ``sam3lite serve`` or ``create_app(model, ServeSettings(...))``.

Needs the ``serve`` extra (``pip install sam3lite[serve]``): FastAPI, uvicorn, python-multipart and
opencv-python-headless (polygon output).
"""

from __future__ import annotations

from .settings import ServeSettings

try:
    from .app import create_app
except ImportError as err:  # FastAPI / python-multipart missing
    raise ImportError(f"sam3lite.serve needs the serve extra: pip install 'sam3lite[serve]' ({err})") from err

__all__ = ["ServeSettings", "create_app"]
