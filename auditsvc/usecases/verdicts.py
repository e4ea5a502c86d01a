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
import contextlib
import logging
import math

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
        self._confirmation: Confirmation | None = None
        # (database now at the reading, monotonic time of the reading)
        self._reading: tuple[int, float] | None = None
        self._fresh = False
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

    def now_ms(self) -> int:
        """The database's now, extrapolated from the last reading (this process's
        clock before any)."""
        if self._reading is None:
            return self._clock.now_ms()
        db_now, at = self._reading
        return db_now + round((self._clock.monotonic() - at) * 1000)

    def confirmed_ms(self) -> int | None:
        """The leader's last confirmation (None: none read, or the tail is off)."""
        if not self._tail_on or self._confirmation is None:
            return None
        return self._confirmation.confirmed_ms

    def fresh(self) -> bool:
        """Whether the confirmation is recent enough to vouch for unchanged series."""
        if not self._tail_on:
            return True
        confirmed = self.confirmed_ms()
        return confirmed is not None and self.now_ms() - confirmed <= self._stale_after_ms

    def serve(self, record: ScoreRecord) -> ScoreRecord:
        """The stored ``record`` as served now (see :func:`auditsvc.domain.verdict.serve`)."""
        if self._tail_on and self._reading is None:
            return unknown(record, verdict_time(record, None))
        return serve(
            parse_timeframe(record.timeframe),
            record,
            self.confirmed_ms(),
            self.now_ms(),
            self._stale_after_ms,
            self._grace_ms,
        )

    async def changes(self) -> None:
        """Returns at the next move between fresh and stale."""
        async with self._changed:
            await self._changed.wait()

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
        self._confirmation = found
        self._reading = (db_now, self._clock.monotonic())

    async def _publish(self) -> None:
        fresh = self.fresh()
        confirmed = self.confirmed_ms()
        if self._tail_on:
            # No confirmation ever read: infinitely old, so the stale alert fires.
            age = math.inf if confirmed is None else max(0, self.now_ms() - confirmed) / 1000
            self._metrics.verdict_age.set(age)
        if fresh != self._fresh:
            self._fresh = fresh
            log.info("live verdicts %s", "confirmed" if fresh else "stale: serving UNKNOWN")
            async with self._changed:
                self._changed.notify_all()
