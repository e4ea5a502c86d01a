"""Unit tests for auditsvc.domain.verdict: how a stored state is dated and served."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditsvc.domain.records import ScoreRecord
from auditsvc.domain.series_state import SeriesState
from auditsvc.domain.timeframes import parse_timeframe
from auditsvc.domain.values import HealthScore
from auditsvc.domain.verdict import serve, verdict_time

SEC = 1_000
MIN = 60_000
T0 = 1_700_000_040_000  # a minute boundary
M1 = parse_timeframe("1m")
STALE = 5 * SEC
GRACE = 2 * SEC
BASE = HealthScore(90.0, 80.0, 100.0, 100.0, 1, 0)


def stored(
    state: SeriesState | None, last: int | None, late: int = 0, at: int | None = None
) -> ScoreRecord:
    return ScoreRecord("BTCUSDT", "1m", BASE, T0, "c-1", state, last, late, at)


class TestServe:
    """A stored state is served dated, recounted at its time, or UNKNOWN."""

    def test_confirmed_live_names_the_due_slot(self) -> None:
        """LIVE observed long ago but confirmed now names the slot due now, not the
        candle that made it LIVE."""
        now = T0 + 10 * MIN + 5 * SEC
        served = serve(M1, stored(SeriesState.LIVE, T0, 0, T0 + MIN), now - SEC, now, STALE, GRACE)
        assert served.state is SeriesState.LIVE
        assert served.verdict_ms == now - SEC
        assert served.last_candle_ms == T0 + 9 * MIN  # closed at +10m, due at +10m2s

    def test_stale_confirmation_is_unknown(self) -> None:
        """Past LIVE_STALE_AFTER the series is UNKNOWN, carrying the last verdict time."""
        now = T0 + 10 * MIN
        confirmed = now - STALE - 1
        served = serve(M1, stored(SeriesState.LIVE, T0, 0, T0), confirmed, now, STALE, GRACE)
        assert served.state is SeriesState.UNKNOWN
        assert served.verdict_ms == confirmed

    def test_never_judged_is_unknown(self) -> None:
        """A series with no stored state is UNKNOWN however fresh the confirmation."""
        served = serve(M1, stored(None, None), T0, T0, STALE, GRACE)
        assert served.state is SeriesState.UNKNOWN
        assert served.verdict_ms is None

    def test_late_is_recounted_at_the_verdict_time(self) -> None:
        """LATE stored with one missed slot, confirmed three slots later, reads 4 late."""
        now = T0 + 5 * MIN + 3 * SEC
        served = serve(
            M1, stored(SeriesState.LATE, T0, 1, T0 + 2 * MIN + 2 * SEC), now, now, STALE, GRACE
        )
        assert (served.state, served.late_candles) == (SeriesState.LATE, 4)
        assert served.score.freshness == pytest.approx(20.0)
        assert served.score.quality == pytest.approx(0.4 * 80.0 + 0.4 * 100.0 + 0.2 * 20.0)

    def test_own_newer_verdict_wins(self) -> None:
        """A series stored after the last confirmation is dated by its own verdict."""
        now = T0 + 5 * MIN
        served = serve(M1, stored(SeriesState.LATE, T0, 4, now - 100), now - 900, now, STALE, GRACE)
        assert served.verdict_ms == now - 100


@given(
    offset=st.integers(min_value=0, max_value=20 * MIN),
    age=st.integers(min_value=0, max_value=20 * SEC),
    state=st.sampled_from([SeriesState.LIVE, SeriesState.LATE, SeriesState.NO_DATA]),
)
def test_never_known_past_stale(offset: int, age: int, state: SeriesState) -> None:
    """Whatever is stored, a verdict older than LIVE_STALE_AFTER is never served as known."""
    now = T0 + offset + 30 * SEC
    last = None if state is SeriesState.NO_DATA else T0
    record = stored(state, last, 1 if state is SeriesState.LATE else 0, now - age)
    served = serve(M1, record, now - age, now, STALE, GRACE)
    assert (served.state is SeriesState.UNKNOWN) == (age > STALE)
    assert served.verdict_ms == verdict_time(record, now - age)
