"""Click sessions: what the next click on an object needs, kept on the server between requests.

Refining an object feeds its last answer's low-res mask logits back to the tracker (``mask_input``)
with all its clicks so far. Those logits are 3 x 288 x 288 floats at full size: rather than ship them
to the client and back, the server keeps them per object under a short-lived, unguessable session id
bound to one image (by its content hash, the image-feature cache key).

Bounded three ways: object states by total bytes (least recently used go first), sessions by count,
both by a time-to-live since last use. Only the model worker writes; request threads read a session's
image key; hence the lock.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ObjectState:
    """One object's prompt so far and its last answer.

    points: float32 [N, 3] (x, y, label) in pixels of the original image; N may be 0 (box only).
    box: float32 [4] xyxy pixels, or None.
    logits: float32 [K, h, w] low-res mask logits of the last answer (on the CPU).
    best: index of the last answer's best mask.
    """

    points: np.ndarray
    box: np.ndarray | None
    logits: torch.Tensor
    best: int
    used: float = 0.0

    @property
    def nbytes(self) -> int:
        return self.logits.nbytes + self.points.nbytes


@dataclass
class Session:
    """One image's click session: its id, the image key and size, the objects' ids."""

    id: str
    key: str  # sha256 of the image file
    size: tuple[int, int]  # (height, width)
    next_object_id: int = 1
    object_ids: set[int] = field(default_factory=set)
    used: float = 0.0

    def new_object_id(self) -> int:
        self.next_object_id += 1
        return self.next_object_id - 1


class SessionStore:
    """Thread-safe store of ``Session``s and their ``ObjectState``s (see the module docstring)."""

    def __init__(
        self, max_bytes: int, max_sessions: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes, self.max_sessions, self.ttl_s = max_bytes, max_sessions, ttl_s
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self._objects: OrderedDict[tuple[str, int], ObjectState] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def new_session(self, key: str, size: tuple[int, int]) -> Session:
        """A session for this image, not stored until ``save`` (a failed request leaves nothing)."""
        return Session(secrets.token_urlsafe(16), key, size)

    def session(self, session_id: str) -> Session | None:
        """The live session with this id (its use refreshes its time-to-live), else None."""
        with self._lock:
            self._expire()
            found = self._sessions.get(session_id)
            if found is not None:
                found.used = self._clock()
                self._sessions.move_to_end(session_id)
            return found

    def object(self, session_id: str, object_id: int) -> ObjectState | None:
        with self._lock:
            self._expire()
            state = self._objects.get((session_id, object_id))
            if state is not None:
                state.used = self._clock()
                self._objects.move_to_end((session_id, object_id))
            return state

    def save(self, session: Session, states: dict[int, ObjectState]) -> None:
        """Store (or refresh) ``session`` and the new states of its objects ``{object_id: state}``."""
        with self._lock:
            now = self._clock()
            session.used = now
            self._sessions[session.id] = session
            self._sessions.move_to_end(session.id)
            for object_id, state in states.items():
                self._drop_object((session.id, object_id))
                if state.nbytes > self.max_bytes:
                    continue  # would evict everything and still not fit
                state.used = now
                self._objects[session.id, object_id] = state
                self._bytes += state.nbytes
                session.object_ids.add(object_id)
            while len(self._sessions) > self.max_sessions:
                self._drop_session(next(iter(self._sessions)))
            while self._bytes > self.max_bytes:
                self._drop_object(next(iter(self._objects)))

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._sessions)

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def object_count(self) -> int:
        return len(self._objects)

    # Under the lock ------------------------------------------------------------------------------

    def _expire(self) -> None:
        # Both orders are by last use: the expired ones are at the front.
        cutoff = self._clock() - self.ttl_s
        while self._sessions and next(iter(self._sessions.values())).used < cutoff:
            self._drop_session(next(iter(self._sessions)))
        while self._objects and next(iter(self._objects.values())).used < cutoff:
            self._drop_object(next(iter(self._objects)))

    def _drop_session(self, session_id: str) -> None:
        session = self._sessions.pop(session_id)
        for object_id in list(session.object_ids):
            self._drop_object((session_id, object_id))

    def _drop_object(self, key: tuple[str, int]) -> None:
        state = self._objects.pop(key, None)
        if state is None:
            return
        self._bytes -= state.nbytes
        session = self._sessions.get(key[0])
        if session is not None:
            session.object_ids.discard(key[1])
