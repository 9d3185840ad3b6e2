"""Video frames, decoded lazily: a video file (PyAV, the FFmpeg binding), a folder of frames, or a
sequence of images / arrays.

``open_video(source)`` gives a ``VideoFrames``: its length, frame size and rate are known up front (a
file is demuxed once, without decoding, to index its frames), and frame ``i`` is decoded only when
asked for. Sequential reads (forward propagation) decode straight through; a jump (reverse
propagation, a click on another frame) seeks to the nearest key frame before it. Only a few decoded
frames are kept, so a 10-minute video is never held in memory.

Frames come out as RGB ``uint8`` arrays [H, W, 3], upright (the rotation a phone stores in the file's
display matrix is applied), at the video's own size (odd sizes included).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .images import IMAGE_EXTENSIONS, load_image

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".webm", ".avi", ".mkv", ".mpg", ".mpeg", ".gif")
_DECODED_KEPT = 4  # decoded frames kept (a click on a frame followed by its propagation reuses it)


class VideoError(ValueError):
    """A video that cannot be read (unreadable file, no frames, frames of changing size...)."""


class VideoFrames:
    """Random access to a video's frames; subclasses say where the frames come from."""

    fps: float | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as RGB uint8 [H, W, 3]."""
        raise NotImplementedError

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of every frame."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> np.ndarray:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"frame index must be an int, got {type(index).__name__}")
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} is past the end: the video has {len(self)} frames (0..{len(self) - 1})")
        frame = self.read(int(index))
        if frame.shape[:2] != self.size:
            raise VideoError(
                f"frame {index} is {frame.shape[1]}x{frame.shape[0]} but the video's frames are "
                f"{self.size[1]}x{self.size[0]}; frames of changing size are not supported"
            )
        return frame

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def close(self) -> None:
        """Release the file (a no-op for frames in memory)."""


class ArrayFrames(VideoFrames):
    """Frames given as a sequence: arrays [H, W, 3] uint8 (or torch CHW), PIL images or image paths."""

    def __init__(self, frames: Sequence[Any], fps: float | None = None) -> None:
        if len(frames) == 0:
            raise VideoError("the video has no frames")
        self._frames = frames
        self.fps = fps
        self._first = _rgb_array(frames[0], 0)

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def size(self) -> tuple[int, int]:
        return self._first.shape[:2]

    def read(self, index: int) -> np.ndarray:
        return self._first if index == 0 else _rgb_array(self._frames[index], index)


class FolderFrames(ArrayFrames):
    """A folder of frame images, in natural order of their file names (``2.jpg`` before ``10.jpg``)."""

    def __init__(self, folder: str | os.PathLike, fps: float | None = None) -> None:
        folder = Path(folder)
        files = sorted(
            (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
            key=_natural_key,
        )
        if not files:
            raise VideoError(f"{folder}: no frame images in this folder (expected {', '.join(IMAGE_EXTENSIONS)})")
        super().__init__([str(p) for p in files], fps)


class FileFrames(VideoFrames):
    """A video file through PyAV. The frames are indexed by a demux pass (presentation order)."""

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            import av
        except ImportError as err:  # pragma: no cover - av is a dependency
            raise VideoError("reading video files needs PyAV: pip install av") from err
        self.path = str(path)
        try:
            self._container = av.open(self.path)
            self._stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError, OSError) as err:
            raise VideoError(f"{self.path}: not a readable video ({_short(err)})") from err
        self._stream.thread_type = "AUTO"
        self.fps = float(self._stream.average_rate) if self._stream.average_rate else None
        self._pts = self._index()
        if not self._pts:
            raise VideoError(f"{self.path}: the video has no frames")
        self._position: int | None = None  # index of the frame the decoder returns next
        self._decoder: Iterator[Any] | None = None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._size = self._decode_at(0).shape[:2]

    def _index(self) -> list[int]:
        import av

        try:
            with av.open(self.path) as probe:
                pts = sorted(p.pts for p in probe.demux(video=0) if p.pts is not None and p.size > 0)
        except av.FFmpegError as err:
            raise VideoError(f"{self.path}: cannot read the video ({_short(err)})") from err
        return pts

    def __len__(self) -> int:
        return len(self._pts)

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def read(self, index: int) -> np.ndarray:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        return self._decode_at(index)

    def _decode_at(self, index: int) -> np.ndarray:
        import av

        if self._position != index:
            # Seek to the key frame at or before the target, then decode forward to it.
            self._container.seek(self._pts[index], stream=self._stream, backward=True, any_frame=False)
            self._decoder = self._container.decode(self._stream)
            self._position = None
        target = self._pts[index]
        try:
            for frame in self._decoder:  # type: ignore[union-attr]
                if frame.pts is None or frame.pts < target:
                    continue
                image = _upright(frame)
                self._position = index + 1
                self._remember(index, image)
                return image
        except av.FFmpegError as err:
            raise VideoError(f"{self.path}: frame {index} cannot be decoded ({_short(err)})") from err
        raise VideoError(f"{self.path}: frame {index} could not be decoded (the file ends early)")

    def _remember(self, index: int, image: np.ndarray) -> None:
        self._cache[index] = image
        while len(self._cache) > _DECODED_KEPT:
            self._cache.popitem(last=False)

    def close(self) -> None:
        self._container.close()


def open_video(source: Any, fps: float | None = None) -> VideoFrames:
    """A video file (mp4/mov/webm/avi/...), a folder of frames, a sequence of frames, or ``VideoFrames``."""
    if isinstance(source, VideoFrames):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return FolderFrames(path, fps)
        if not path.exists():
            raise VideoError(f"{path}: no such video file or folder")
        return FileFrames(path)
    if isinstance(source, np.ndarray) and source.ndim == 4:
        return ArrayFrames(list(source), fps)
    if hasattr(source, "ndim") and getattr(source, "ndim", 0) == 4:  # a torch tensor [T, 3, H, W] or [T, H, W, 3]
        return ArrayFrames(list(source), fps)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return ArrayFrames(source, fps)
    raise VideoError(f"video must be a file, a folder of frames or a sequence of frames, got {type(source).__name__}")


def _rgb_array(frame: Any, index: int) -> np.ndarray:
    """One frame -> RGB uint8 [H, W, 3]."""
    if isinstance(frame, (str, os.PathLike)):
        frame = load_image(frame)
    if hasattr(frame, "convert") and hasattr(frame, "size"):  # PIL
        return np.asarray(frame.convert("RGB"))
    array = frame.detach().cpu().numpy() if hasattr(frame, "detach") else np.asarray(frame)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    if array.ndim != 3 or array.shape[-1] != 3:
        raise VideoError(f"frame {index} must be an RGB image [H, W, 3], got shape {list(array.shape)}")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0:
            array = array * 255.0
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def _upright(frame: Any) -> np.ndarray:
    """A decoded frame as RGB, turned upright by the rotation the file stores (multiples of 90°)."""
    image = frame.to_ndarray(format="rgb24")
    rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
    if rotation:
        # The display matrix angle is counter-clockwise; np.rot90 turns counter-clockwise too.
        image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
    return image


def _natural_key(path: Path) -> list[Any]:
    import re

    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 160 else text[:157] + "..."
