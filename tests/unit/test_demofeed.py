"""The demo feed's pure parts: which slots are due, and the pause file."""

from __future__ import annotations

from pathlib import Path

from auditsvc.devtools.demofeed import PAUSE_FILE, due_opens, paused, set_paused
from auditsvc.domain.timeframes import parse_timeframe

MIN = 60_000
T0 = 1_767_225_600_000  # a minute boundary
M1 = parse_timeframe("1m")


class TestDueOpens:
    """Only slots that have closed, after the newest written, at most ``limit``."""

    def test_nothing_due_while_the_next_slot_is_forming(self) -> None:
        """The newest written is the last closed slot: nothing to write."""
        assert due_opens(M1, T0 - MIN, T0 + 30_000) == []

    def test_each_closed_slot_since_the_newest(self) -> None:
        """Three closed slots after the newest are due, oldest first; the forming one is not."""
        assert due_opens(M1, T0 - 4 * MIN, T0 + 59_999) == [T0 - 3 * MIN, T0 - 2 * MIN, T0 - MIN]

    def test_limit_keeps_the_newest(self) -> None:
        """With a limit of one only the newest closed slot is due (a resumed feed)."""
        assert due_opens(M1, T0 - 10 * MIN, T0, limit=1) == [T0 - MIN]

    def test_empty_series_starts_at_the_newest_closed_slot(self) -> None:
        """A series without candles gets the last closed slot only."""
        assert due_opens(M1, None, T0 + 1) == [T0 - MIN]


class TestPauseFile:
    """Pausing and resuming edit one file of symbols that a running feed reads."""

    def test_pause_and_resume(self, tmp_path: Path) -> None:
        """Symbols are added and removed; a missing file means nothing is paused."""
        assert paused(tmp_path) == set()
        assert set_paused(tmp_path, "BTCUSDT", pause=True) == {"BTCUSDT"}
        assert set_paused(tmp_path, "ETHUSDT", pause=True) == {"BTCUSDT", "ETHUSDT"}
        assert (tmp_path / PAUSE_FILE).read_text() == "BTCUSDT\nETHUSDT\n"
        assert set_paused(tmp_path, "BTCUSDT", pause=False) == {"ETHUSDT"}
        assert paused(tmp_path) == {"ETHUSDT"}
