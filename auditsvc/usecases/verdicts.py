"""Every replica's view of how old the live verdicts are, and the one function
that turns a stored score into the answer served (ListHealthScores,
StreamHealthScores, GetStatus).

The watch reads the live tail's heartbeat (``VerdictSource.confirmation``)
with the database's now every ``_READ_EVERY`` seconds. Between reads the
database's now is extrapolated on this process's monotonic clock, so a reading
only ever ages: a replica that cannot read (the database is unreachable, this
process is starved) sees its last confirmation grow old and serves UNKNOWN.

Guarantees:

* With the tail on, a series is served as stored only while the leader's last
  confirmation (or the series' own newer verdict) is at most LIVE_STALE_AFTER
  old; otherwise UNKNOWN. Before the first reading, everything is UNKNOWN.
* With LIVE_MODE=off the verdict is the cycle's, dated when the cycle read the
  series, and turns UNKNOWN once older than two audit intervals plus
  LIVE_STALE_AFTER (a cycle missed).
* ``changes()`` wakes its waiters within ``_READ_EVERY`` of the moment the
  answer moves between fresh and stale, so streams can push UNKNOWN and the
  return to a known state within LIVE_STALE_AFTER + 1 s.

Limits: a confirmation vouches only for what the tail stored before it; a
reader that read a series' document before the heartbeat it pairs it with
may date it up to one heartbeat too early (never too late).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
from dataclasses import dataclass

from auditsvc.domain.records import ScoreRecord
from auditsvc.domain.timeframes import parse_timeframe
from auditsvc.domain.verdict import serve, unknown, verdict_time
from auditsvc.ops.clock import Clock
from auditsvc.ops.metrics import Metrics
from auditsvc.ops.settings import AuditSettings, LiveSettings
from auditsvc.storage.interfaces import Confirmation, VerdictSource

log = logging.getLogger(__name__)

# Seconds between readings of the heartbeat: well inside the 1 s the stream has
# beyond LIVE_STALE_AFTER to push a transition.
_READ_EVERY = 0.25
_READ_TIMEOUT = 2.0
# Confirmations kept for reading_for: a few seconds of heartbeats.
_HISTORY = 32


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading of the heartbeat: the confirmation (None: there was none), the
    database's now when it was read, and this process's monotonic time then."""

    confirmation: Confirmation | None
    db_now_ms: int
    at: float


class VerdictWatch:
    def __init__(
        self,
        audit: AuditSettings,
        live: LiveSettings,
        source: VerdictSource,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._audit = audit
        self._live = live
        self._source = source
        self._clock = clock
        self._metrics = metrics
        self._tail_on = live.mode != "off"
        if self._tail_on:
            self._stale_after_ms = round(live.stale_after * 1000)
        else:
            self._stale_after_ms = round((2 * audit.interval + live.stale_after) * 1000)
        self._grace_ms = round(audit.ingest_grace * 1000)
        self._reading: Reading | None = None
        # Recent readings with distinct confirmations, oldest first (reading_for).
        self._history: collections.deque[Reading] = collections.deque(maxlen=_HISTORY)
        self._fresh = False
        self._moved_at = 0.0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="verdict-watch")

    async def stop(self) -> None:
        """Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> VerdictWatch:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def tail_on(self) -> bool:
        return self._tail_on

    def current(self) -> Reading | None:
        """The last reading. Taken *before* reading stored scores, it dates them
        exactly: the confirmation it holds was stored before they were read, so
        every change judged at its instant is in them."""
        return self._reading

    def reading_for(self, record: ScoreRecord) -> Reading | None:
        """The newest reading whose confirmation was written no later than the
        record's last change (``changed_ms``): it dates a record that reached this
        process on its own (a change stream event) exactly, whatever was read
        since. None when none is that old (the record is then UNKNOWN until the
        next change or reading)."""
        for reading in reversed(self._history):
            c = reading.confirmation
            if c is not None and 0 < c.written_ms <= record.changed_ms:
                return reading
        return None

    async def read_now(self) -> Reading | None:
        """A reading made now (the last one if the database does not answer)."""
        with contextlib.suppress(Exception):
            await self._read()
        return self._reading

    def now_ms(self, reading: Reading | None = None) -> int:
        """The database's now, extrapolated from a reading (this process's clock
        before any)."""
        reading = reading or self._reading
        if reading is None:
            return self._clock.now_ms()
        return reading.db_now_ms + round((self._clock.monotonic() - reading.at) * 1000)

    def vouching(self) -> bool:
        """Whether the last confirmation is recent enough to vouch for unchanged series."""
        if not self._tail_on:
            return True
        return self.vouches(self._reading)

    def vouches(self, reading: Reading | None) -> bool:
        """Whether ``reading``'s confirmation is recent enough (always, tail off)."""
        if not self._tail_on:
            return True
        if reading is None or reading.confirmation is None:
            return False
        return self.now_ms(reading) - reading.confirmation.confirmed_ms <= self._stale_after_ms

    def serve(self, record: ScoreRecord, reading: Reading | None) -> ScoreRecord:
        """The stored ``record`` as served now, dated by ``reading`` (see
        :func:`auditsvc.domain.verdict.serve`); pass the reading taken before the
        record was read."""
        if not self._tail_on:
            return serve(
                parse_timeframe(record.timeframe),
                record,
                None,
                self.now_ms(reading),
                self._stale_after_ms,
                self._grace_ms,
            )
        if reading is None:
            return unknown(record, verdict_time(record, None))
        confirmed = None if reading.confirmation is None else reading.confirmation.confirmed_ms
        return serve(
            parse_timeframe(record.timeframe),
            record,
            confirmed,
            self.now_ms(reading),
            self._stale_after_ms,
            self._grace_ms,
        )

    async def changes(self) -> float:
        """Returns at the next move between vouching and not: the event loop's time
        of that move (a read begun at or after it reflects it)."""
        async with self._changed:
            await self._changed.wait()
        return self._moved_at

    async def _run(self) -> None:
        # Reading and publishing run apart: a read that hangs (an unreachable
        # database) must not hold back the move to UNKNOWN it causes.
        reader = asyncio.create_task(self._read_forever(), name="verdict-read")
        try:
            while True:
                await self._publish()
                await asyncio.sleep(_READ_EVERY)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read_forever(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self._read()
            await asyncio.sleep(_READ_EVERY)

    async def _read(self) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                found, db_now = await self._source.confirmation()
        except Exception as exc:
            log.debug("verdict heartbeat not read", extra={"reason": type(exc).__name__})
            raise
        reading = Reading(found, db_now, self._clock.monotonic())
        # Readings run concurrently (read_now): never step back to an older one.
        if self._reading is None or reading.db_now_ms >= self._reading.db_now_ms:
            self._reading = reading
            last = self._history[-1].confirmation if self._history else None
            if found is not None and found != last:
                self._history.append(reading)

    async def _publish(self) -> None:
        fresh = self.vouching()
        if self._tail_on:
            reading = self._reading
            confirmed = (
                None
                if reading is None or reading.confirmation is None
                else (reading.confirmation.confirmed_ms)
            )
            # No confirmation ever read: infinitely old, so the stale alert fires.
            age = math.inf if confirmed is None else max(0, self.now_ms() - confirmed) / 1000
            self._metrics.verdict_age.set(age)
        if fresh != self._fresh:
            self._fresh = fresh
            self._moved_at = asyncio.get_running_loop().time()
            log.info("live verdicts %s", "confirmed" if fresh else "stale: serving UNKNOWN")
            async with self._changed:
                self._changed.notify_all()
