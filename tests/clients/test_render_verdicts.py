"""How auditctl renders a verdict's age, the UNKNOWN state and a stream's outages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from auditclient import AuditError, StreamEvent, Unavailable
from auditclient import _render as render
from auditpb.v1 import audit_pb2

from .fakes import live

T0 = datetime(2024, 1, 1, tzinfo=UTC)
LIVE, UNKNOWN = audit_pb2.SERIES_STATE_LIVE, audit_pb2.SERIES_STATE_UNKNOWN


class TestVerdictAge:
    """Ages read as seconds, minutes, hours or days ago; none reads never."""

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0.4, "0.4s ago"),
            (9.94, "9.9s ago"),
            (42.4, "42s ago"),
            (130, "2m ago"),
            (3 * 3600 + 5, "3h ago"),
            (3 * 86400, "3d ago"),
            (-0.3, "0.3s ahead"),
        ],
    )
    def test_verdict(self, seconds: float, text: str) -> None:
        """verdict() measures from verdict_time to the given now."""
        scored = live("BTC", "1s", LIVE, verdict=T0)
        assert render.verdict(scored, T0 + timedelta(seconds=seconds)) == text

    def test_never(self) -> None:
        """A score without verdict_time was never confirmed."""
        assert render.verdict(live("BTC", "1s", UNKNOWN), T0) == "never"

    def test_table_and_line(self) -> None:
        """The table has a VERDICT column after LATE; the line says verdict_age and unknown."""
        confirmed = live("BTC", "1s", LIVE, verdict=T0)
        unknown = live("ETH", "1s", UNKNOWN, verdict=T0)
        now = T0 + timedelta(seconds=7.25)
        lines = render.health_table([unknown, confirmed], now).splitlines()
        assert lines[0].split()[:6] == ["SYMBOL", "TF", "STATE", "LAST_CANDLE", "LATE", "VERDICT"]
        assert lines[1].split()[:7] == [
            "BTC",
            "1s",
            "live",
            "2023-12-31T23:59:00Z",
            "0",
            "7.2s",
            "ago",
        ]
        assert lines[2].split()[:3] == ["ETH", "1s", "unknown"]
        line = render.health_line(live("BTC", "1s", UNKNOWN, verdict=T0), confirmed, now)
        assert " state=unknown (was live) " in line and " verdict_age=7.2s " in line
        assert " verdict_age=never " in render.health_line(live("BTC", "1s", UNKNOWN), None, now)

    def test_connection_lines(self) -> None:
        """A drop names its error; a return says how long the stream was down."""
        error = Unavailable(None, "connection refused")
        down = render.connection(StreamEvent("disconnected", error=error), T0)
        assert down.startswith("2024-01-01T00:00:00Z stream disconnected (")
        assert "connection refused" in down and down.endswith("); reconnecting")
        ended = StreamEvent("disconnected", error=AuditError(None, "health stream ended"))
        assert render.connection(ended, T0).endswith(" (health stream ended); reconnecting")
        back = render.connection(StreamEvent("reconnected", down_for=42.06), T0)
        assert back == "2024-01-01T00:00:00Z stream reconnected after 42.1s"
