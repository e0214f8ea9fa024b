"""One overall deadline from which every socket, subprocess and query timeout is derived."""

from __future__ import annotations

import time


class Deadline:
    """A point in time by which a command must have finished gathering facts."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.expires - time.monotonic())

    def expired(self) -> bool:
        """True once no time is left."""
        return self.remaining() <= 0.0

    def timeout(self, cap: float | None = None, floor: float = 0.05) -> float:
        """A timeout for one operation: what is left, at most ``cap``, at least ``floor``."""
        left = self.remaining()
        if cap is not None:
            left = min(left, cap)
        return max(floor, left)
