"""The clock, injected everywhere time is read, so tests can move it."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock time, ms since the Unix epoch (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for deadlines."""
        ...


class SystemClock:
    def __init__(self, offset_ms: int = 0) -> None:
        # A non-zero offset fakes a skewed local clock (clock-skew tests).
        self._offset_ms = offset_ms

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self._offset_ms

    def monotonic(self) -> float:
        return time.monotonic()
