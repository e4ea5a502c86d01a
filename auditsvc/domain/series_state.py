"""Live series state: is the newest due candle of a series stored *now*?

Pure rules, no I/O; the live tail (``auditsvc.usecases.live_tail``) feeds them the
newest candle it has seen and the clock.

Definitions (``grace_ms`` is AUDIT_INGEST_GRACE in ms):

* A slot is *due* once its close plus ``grace_ms`` has passed, i.e. every slot
  opening before :func:`~auditsvc.domain.timeframes.settled_end` is due.
* ``NO_DATA``: no candle has been seen for the series.
* ``LATE``: at least one due slot opens after the newest candle;
  ``late_candles`` counts those slots.
* ``LIVE``: otherwise (the newest due slot is present, or a candle newer than
  it already arrived).

Guarantees:

* :func:`series_state` is monotone in ``now``: for a fixed newest candle,
  ``late_candles`` never decreases as time passes, and a newer candle never
  increases it.
* :func:`must_store` asks for a stored score exactly on a state change and,
  while LATE, once per further missed slot, so a LATE series' freshness decays
  on time instead of freezing, at a cost of one write per slot at most.
* :func:`revealed_gap` returns the slots skipped between the previous newest
  candle and a newer one; an out-of-order or repeated insert reveals nothing.

Limits: the state only looks at the newest candle; holes further back are the
audit cycle's business (and :func:`revealed_gap`'s, when they are made by an
insert the tail sees).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from auditsvc.domain.timeframes import Timeframe, settled_end
from auditsvc.domain.values import Gap, HealthScore

# Same horizon as auditsvc.domain.scoring: five slots behind is "stale".
_FRESHNESS_HORIZON_SLOTS = 5


class SeriesState(enum.Enum):
    LIVE = "live"
    LATE = "late"
    NO_DATA = "no_data"
    # Served only, never stored: nobody vouched for the series recently enough
    # (see auditsvc.domain.verdict).
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class LiveState:
    """A series' state at one instant."""

    state: SeriesState
    last_candle_ms: int | None
    late_candles: int


def series_state(tf: Timeframe, newest_ms: int | None, now_ms: int, grace_ms: int) -> LiveState:
    """The state of a ``tf`` series whose newest candle opens at ``newest_ms``."""
    if newest_ms is None:
        return LiveState(SeriesState.NO_DATA, None, 0)
    end = settled_end(tf, now_ms, grace_ms)
    # Due slots strictly after the newest candle's own slot.
    late = tf.count_slots(tf.next_open(newest_ms), end)
    return LiveState(SeriesState.LATE if late else SeriesState.LIVE, newest_ms, late)


def freshness(live: LiveState) -> float:
    """Freshness (0-100) from lateness, on the audit's five-slot horizon.

    LIVE is 100; each missed slot costs 20; NO_DATA is 0.
    """
    if live.state is SeriesState.NO_DATA:
        return 0.0
    return 100.0 * max(0.0, 1.0 - live.late_candles / _FRESHNESS_HORIZON_SLOTS)


def must_store(previous: LiveState | None, current: LiveState) -> bool:
    """Whether ``current`` deserves a new stored score after ``previous``.

    True on the first observation, on every state change, and while LATE
    whenever one more slot has been missed. A newer candle that keeps a series
    LIVE stores nothing: the stored LIVE score stays true.
    """
    if previous is None or previous.state is not current.state:
        return True
    return current.state is SeriesState.LATE and (
        current.late_candles != previous.late_candles
        or current.last_candle_ms != previous.last_candle_ms
    )


def revealed_gap(tf: Timeframe, previous_newest_ms: int | None, new_ms: int) -> Gap | None:
    """The slots skipped when a candle at ``new_ms`` follows ``previous_newest_ms``.

    None when there was no previous candle, when ``new_ms`` is the very next
    slot, or when it is not newer (a late or repeated insert). ``new_ms`` is
    floored to its slot, so a misaligned timestamp still counts by its slot.
    """
    if previous_newest_ms is None:
        return None
    start = tf.next_open(previous_newest_ms)
    end = tf.floor(new_ms)
    if end <= start:
        return None
    return Gap(start, end, tf.count_slots(start, end))


def window_state(
    tf: Timeframe, window_end_ms: int, newest_ms: int | None, now_ms: int, grace_ms: int
) -> tuple[LiveState, int] | None:
    """The live state an audit of a window ending at ``window_end_ms`` can vouch for,
    and the instant it holds at.

    The audit read candles up to the window's end only, so it judges the series
    as of the moment that end was the settled edge: the state at
    ``window_end_ms + grace_ms`` (its newest slot just due), held until the next
    slot falls due. The instant returned is ``now_ms`` capped to that interval,
    so a verdict is never dated after the last moment it was true, however long
    the cycle took. A window holding no candle (older candles may exist) gives
    None: unknown.
    """
    if newest_ms is None:
        return None
    holds_from = window_end_ms + grace_ms
    holds_until = tf.next_open(window_end_ms) + grace_ms - 1
    live = series_state(tf, newest_ms, holds_from, grace_ms)
    return live, max(holds_from, min(now_ms, holds_until))


def rescore(base: HealthScore | None, live: LiveState) -> HealthScore:
    """``base`` (the last stored score) with freshness recomputed from lateness.

    Completeness, consistency and the counts are the last audit's; only
    freshness (and so quality) moves between cycles. Without a base (no audit
    yet) completeness and consistency are 100, or completeness 0 for NO_DATA.
    """
    fresh = freshness(live)
    if base is None:
        complete = 0.0 if live.state is SeriesState.NO_DATA else 100.0
        base = HealthScore(0.0, complete, 100.0, 0.0, 0, 0)
    quality = 0.4 * base.completeness + 0.4 * base.consistency + 0.2 * fresh
    return dataclasses.replace(base, freshness=fresh, quality=quality)


def first_missing_due_ms(tf: Timeframe, live: LiveState, grace_ms: int) -> int | None:
    """When the first slot after the newest candle became due (its close + grace)."""
    if live.last_candle_ms is None:
        return None
    first_missing = tf.next_open(live.last_candle_ms)
    return tf.next_open(first_missing) + grace_ms


def next_change_ms(tf: Timeframe, newest_ms: int | None, now_ms: int, grace_ms: int) -> int | None:
    """The next instant the state of a series with this newest candle can change."""
    if newest_ms is None:
        return None
    # The slot opening at the settled edge becomes due when it closes plus grace.
    edge = settled_end(tf, now_ms, grace_ms)
    return tf.next_open(max(edge, tf.next_open(newest_ms))) + grace_ms
