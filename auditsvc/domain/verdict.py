"""The verdict a replica serves for a series: its stored live state, dated, or
UNKNOWN when nobody has vouched for it recently enough. Pure rules, no I/O.

Two instants date a stored state:

* the series' own ``verdict_ms``: when the writer of its live fields (the live
  tail, or with ``LIVE_MODE=off`` the cycle) observed that state;
* the *confirmation*: the newest instant at which the leader's live tail
  vouched for every series at once (its heartbeat). A tail stores a series only
  when its state changes, so an unchanged state is dated by the confirmation.

The verdict's time is the newer of the two. It is served as it stands while it
is at most ``stale_after_ms`` old; past that the series is UNKNOWN (carrying
the last verdict time, so a reader sees how old the last word is).

Guarantees (given a writer that stores every state change before it confirms):

* A LIVE verdict dated ``t`` means the newest slot due at ``t`` was present;
  ``last_candle_ms`` is that slot, not a newer candle seen early.
* A LATE verdict's ``late_candles`` is recounted at ``t``: exact at the
  verdict's own time, never at the reader's.
* Freshness and quality are recomputed from the served state, so the score
  never mixes one writer's state with another's freshness.
* A series never judged (no stored state) is UNKNOWN whatever the confirmation.

Limits: instants mix the leader's clock (its evaluations) and the database's
(the confirmation is capped at the database's now when written); they agree as
far as the leader's clock is synchronised.
"""

from __future__ import annotations

import dataclasses

from auditsvc.domain.records import ScoreRecord
from auditsvc.domain.series_state import LiveState, SeriesState, rescore
from auditsvc.domain.timeframes import Timeframe, settled_end
from auditsvc.domain.validity import served_suspect


def verdict_time(record: ScoreRecord, confirmed_ms: int | None) -> int | None:
    """The newest instant vouching for the record's stored state (None: never)."""
    if record.state is None:
        return None
    times = [t for t in (record.verdict_ms, confirmed_ms) if t is not None]
    return max(times) if times else None


def serve(
    tf: Timeframe,
    record: ScoreRecord,
    confirmed_ms: int | None,
    now_ms: int,
    stale_after_ms: int,
    grace_ms: int,
) -> ScoreRecord:
    """The record as served at ``now_ms``: dated, recounted, or UNKNOWN.

    ``confirmed_ms`` is the live tail's last confirmation (None when there is
    none, or the tail is off); ``now_ms`` is on the database's clock.
    """
    record = served_suspect(record, now_ms)
    at = verdict_time(record, confirmed_ms)
    if at is None or record.state is None or now_ms - at > stale_after_ms:
        return dataclasses.replace(record, state=SeriesState.UNKNOWN, late_candles=0, verdict_ms=at)
    stored = LiveState(record.state, record.last_candle_ms, record.late_candles)
    live = exact_at(tf, stored, at, grace_ms)
    return dataclasses.replace(
        record,
        score=rescore(record.score, live),
        state=live.state,
        last_candle_ms=live.last_candle_ms,
        late_candles=live.late_candles,
        verdict_ms=at,
    )


def unknown(record: ScoreRecord, at_ms: int | None) -> ScoreRecord:
    """The record served as UNKNOWN, carrying the time of its last verdict."""
    return dataclasses.replace(record, state=SeriesState.UNKNOWN, late_candles=0, verdict_ms=at_ms)


def exact_at(tf: Timeframe, live: LiveState, at_ms: int, grace_ms: int) -> LiveState:
    """``live`` as it reads at ``at_ms``: LIVE names the newest due slot, LATE counts
    the due slots missing after its newest candle."""
    if live.state is SeriesState.LIVE:
        # The stored candle is the one that made the series LIVE; newer ones are not
        # stored while it stays LIVE. What the verdict vouches for is the due slot.
        newest_due = tf.floor(settled_end(tf, at_ms, grace_ms) - 1)
        return LiveState(SeriesState.LIVE, newest_due, 0)
    if live.state is SeriesState.LATE and live.last_candle_ms is not None:
        end = settled_end(tf, at_ms, grace_ms)
        late = max(live.late_candles, tf.count_slots(tf.next_open(live.last_candle_ms), end))
        return LiveState(SeriesState.LATE, live.last_candle_ms, late)
    return live
