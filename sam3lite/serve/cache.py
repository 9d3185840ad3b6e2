"""Image-feature cache: the image encoder's output per image file, keyed by a hash of its bytes.

A client asking new prompts about an image it sent before skips decoding and the image encoder (the
bulk of the work). Bounded by total tensor bytes and by entry count; least recently used go first.
Shared by request threads (look-ups) and the model worker (inserts), hence the lock.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

from ..modeling.vision import VisionFeatures


def content_key(data: bytes) -> str:
    """sha256 of the image file's bytes (hex)."""
    return hashlib.sha256(data).hexdigest()


def features_nbytes(vision: VisionFeatures) -> int:
    """Memory held by one image's features (position maps are shared tables, not counted)."""
    return sum(t.nbytes for t in vision.fpn_hidden_states) + vision.last_hidden_state.nbytes


@dataclass(frozen=True)
class CachedImage:
    vision: VisionFeatures
    size: tuple[int, int]  # original (height, width)
    nbytes: int


class FeatureCache:
    """Thread-safe LRU of ``CachedImage`` bounded by ``max_bytes`` and ``max_entries``."""

    def __init__(self, max_bytes: int, max_entries: int) -> None:
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._items: OrderedDict[str, CachedImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> CachedImage | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: str, vision: VisionFeatures, size: tuple[int, int]) -> None:
        item = CachedImage(vision, size, features_nbytes(vision))
        if item.nbytes > self.max_bytes or self.max_entries == 0:
            return  # would evict everything and still not fit
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = item
            self._bytes += item.nbytes
            while self._bytes > self.max_bytes or len(self._items) > self.max_entries:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes
