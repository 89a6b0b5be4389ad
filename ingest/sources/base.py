"""What every source shares: the interface the camera reader drives, and its two errors."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class SourceError(RuntimeError):
    """A source that cannot be opened or stopped delivering; the message says which and how to fix it."""


class FrameError(RuntimeError):
    """One frame that cannot be decoded; the source goes on."""


class Source(Protocol):
    live: bool
    """Frames arrive in real time and must be drained (cameras); otherwise they are read on demand (files)."""
    fps: float | None
    """Native frame rate, when known."""
    total: int | None
    """Frames one pass holds, when known and finite (files, image folders): for progress bars."""

    def grab(self) -> float | None: ...

    def retrieve(self) -> np.ndarray: ...

    def origin(self) -> tuple[str, int | None] | None:
        """Where the frame grabbed last lies: a file, and its position in it for a video; None for a camera."""
        ...

    def close(self) -> None: ...
