"""``sam3lite serve``: the HTTP API and web page for one model (FastAPI + uvicorn, the ``serve`` extra)."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import sys
from typing import Any

from . import UsageError

# package -> the modules that provide it (python-multipart was importable as "multipart" before 0.0.13)
SERVE_PACKAGES = {
    "fastapi": ("fastapi",),
    "uvicorn": ("uvicorn",),
    "python-multipart": ("python_multipart", "multipart"),
    "opencv-python-headless": ("cv2",),
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="HTTP API and web page",
        description="Serve POST /v1/segment, POST /v1/segment_object, GET /v1/model, GET /healthz and a web page "
        "at / (docs/serve.md).",
    )
    parser.add_argument("--model", required=True, help="s0 / s1 / l / sam3, a hub id or a local checkpoint")
    parser.add_argument(
        "--tracker",
        help="SAM3's tracker for clicks and object boxes (/v1/segment_object): 'sam3' or a checkpoint holding one "
        "(default: the model file's own, if any; 'none': without)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed at start)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    parser.add_argument(
        "--dtype", default="auto", help="auto (bfloat16 where the hardware runs it fast), float32, bfloat16, float16"
    )
    parser.add_argument(
        "--text-mode",
        choices=("transformers", "original"),
        help="how prompts are encoded (default: the checkpoint's own, else transformers; docs/text_modes.md)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SAM3LITE_API_KEY"),
        help="require this key on /v1/* (default: $SAM3LITE_API_KEY, which keeps it out of the process list)",
    )
    parser.add_argument("--max-image-pixels", type=int, default=40_000_000, help="width*height limit (413)")
    parser.add_argument("--max-prompts", type=int, default=32, help="text prompts per request (422)")
    parser.add_argument("--max-boxes", type=int, default=32, help="boxes per request (422)")
    parser.add_argument("--max-objects", type=int, default=16, help="objects per click request (422)")
    parser.add_argument("--max-points", type=int, default=64, help="clicks per object (422)")
    parser.add_argument("--max-body-mb", type=float, default=32, help="request body limit in MiB (413)")
    parser.add_argument("--queue-size", type=int, default=8, help="requests waiting for the model; more get 503")
    parser.add_argument("--image-cache-mb", type=float, default=1024, help="image-feature cache size, MiB (0: off)")
    parser.add_argument(
        "--session-cache-mb", type=float, default=256, help="click sessions' mask memory, MiB (about 1 MB per object)"
    )
    parser.add_argument("--session-ttl", type=float, default=1800, help="seconds a click session outlives its last use")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def run(args: argparse.Namespace) -> int:
    _check_extra()
    settings = _settings(args)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    if settings.api_key is None and not _is_loopback(args.host):
        print(f"sam3lite serve: warning: listening on {args.host} without --api-key", file=sys.stderr)

    import uvicorn

    import sam3lite
    from sam3lite.serve import create_app

    device, dtype = _device_dtype(args.device, args.dtype)
    model = sam3lite.load(
        args.model, device=device, dtype=dtype, text_mode=args.text_mode, tracker=_tracker(args.tracker)
    )
    app = create_app(model, settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_keep_alive=5)
    return 0


def _check_extra() -> None:
    missing = [
        package
        for package, modules in SERVE_PACKAGES.items()
        if all(importlib.util.find_spec(module) is None for module in modules)
    ]
    if missing:
        raise UsageError(f"serve needs {', '.join(missing)}: pip install 'sam3lite[serve]'")


def _settings(args: argparse.Namespace):
    from sam3lite.serve.settings import MIB, ServeSettings

    try:
        return ServeSettings(
            model_name=str(args.model),
            api_key=args.api_key,
            max_image_pixels=args.max_image_pixels,
            max_prompts=args.max_prompts,
            max_boxes=args.max_boxes,
            max_objects=args.max_objects,
            max_points=args.max_points,
            max_body_bytes=int(args.max_body_mb * MIB),
            queue_size=args.queue_size,
            image_cache_bytes=int(args.image_cache_mb * MIB),
            session_cache_bytes=int(args.session_cache_mb * MIB),
            session_ttl_s=args.session_ttl,
        )
    except ValueError as err:
        # The settings name their fields; the flags are the same words with dashes.
        raise UsageError(str(err).replace("session_ttl_s", "session_ttl").replace("_", "-")) from err


def _tracker(value: str | None) -> str | bool | None:
    """``--tracker``: None keeps the model file's own tracker (if any), 'none' drops it, else a name or path."""
    if value is not None and value.lower() == "none":
        return False
    return value


def _device_dtype(device: str, dtype: str) -> tuple[Any, Any]:
    """The project's shared rules (``sam3lite.runtime``): ``auto`` picks CUDA/MPS/CPU, then bfloat16 where fast."""
    from sam3lite.runtime import select_device, select_dtype

    chosen = select_device(device)
    return chosen, select_dtype(dtype, chosen)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
