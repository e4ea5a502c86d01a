"""What :meth:`AuditClient.watch_health` reports about its own connection.

Guarantees: for one ``watch_health`` iteration, :class:`ConnectionTracker` emits
``disconnected`` once when the stream is lost (or the first attempt fails) and
``reconnected`` once when a reopened stream delivers its first message, strictly
alternating; the stream's own deadline, which is reopened at once, is not an outage.

Limits: "reconnected" needs a message: a server with nothing to send for the
requested series is not seen to be back until it sends one (auditsvc sends the
current score of every matching series first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .errors import AuditError


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """A change in a health stream's connection, passed to ``on_connection``."""

    #: ``"disconnected"``: the stream was lost, or could not be opened; the client keeps
    #: reconnecting. ``"reconnected"``: a reopened stream delivers again.
    kind: Literal["disconnected", "reconnected"]
    #: Why the stream was lost (``disconnected``); None for ``reconnected``.
    error: AuditError | None = None
    #: Seconds from the loss to the first message again (``reconnected``), else 0.
    down_for: float = 0.0


class ConnectionTracker:
    """Turns stream outcomes into alternating :class:`StreamEvent` calls."""

    def __init__(self, callback: Callable[[StreamEvent], object] | None) -> None:
        self._callback = callback
        self._down_since: float | None = None

    def message(self) -> None:
        """A stream delivered a message: report ``reconnected`` if it was down."""
        if self._down_since is None:
            return
        down_for = time.monotonic() - self._down_since
        self._down_since = None
        if self._callback is not None:
            self._callback(StreamEvent("reconnected", down_for=down_for))

    def lost(self, error: AuditError) -> None:
        """A stream failed or ended: report ``disconnected`` unless already down."""
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        if self._callback is not None:
            self._callback(StreamEvent("disconnected", error=error))
