"""The audit use case: audit selected series over a window, store the result,
run the healing pass (:mod:`auditsvc.usecases.healing`: backfill requests'
outcomes, new requests by priority). RunAudit and the scheduler both call
``Auditor.run_cycle``.

A window ending at the live edge (the settled end of the default window when the
request is selected) is live: its score replaces the series' stored score, which
GetStatus, ListHealthScores and StreamHealthScores serve. A window ending earlier
is a report (``SeriesReport.historical``): it is stored in its cycle, its gaps are
stored for ListGaps and may be backfilled, but it never replaces the live score,
never reaches the health stream and never sets the health-score gauge.

Cycles never overlap: one lock serialises them, so no series is ever audited
twice at once. Inside a cycle, AUDIT_CONCURRENCY series run at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from auditsvc.domain.acknowledgement import MAX_ACKS, Acknowledgement, windows_for
from auditsvc.domain.errors import (
    AuditError,
    Cancelled,
    InvalidArgument,
    NotFound,
    NotLeader,
    Unavailable,
)
from auditsvc.domain.records import (
    SCHEDULED,
    Cycle,
    SeriesReport,
)
from auditsvc.domain.scanner import SeriesScanner
from auditsvc.domain.summary import summarize
from auditsvc.domain.timeframes import Timeframe, default_window, parse_timeframe
from auditsvc.domain.values import Window
from auditsvc.leadership.term import Leadership, Term
from auditsvc.ops.clock import Clock
from auditsvc.ops.failpoints import Failpoints
from auditsvc.ops.metrics import Metrics
from auditsvc.ops.settings import AuditSettings, BackfillSettings
from auditsvc.storage.interfaces import (
    AckStore,
    AnomalyStore,
    BackfillStore,
    CandleStore,
    Fence,
    SettledStore,
    StateStore,
)
from auditsvc.usecases.content_check import ContentCheck, ContentOptions, content_reads
from auditsvc.usecases.healing import Healer, HealOutcome
from auditsvc.usecases.sweep import GAP_BATCH, Group, Sweep, conclude, groups

log = logging.getLogger(__name__)

# The instants datetime (and so BSON dates and Timestamp) can hold.
_FIRST_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
_LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
# Failed cycles kept in memory while the database cannot take them; the oldest
# beyond this are dropped (a database down for that many cycles is in the logs).
_MAX_UNSAVED = 100
# Series reports per stored part of a cycle (about 0.6 KB each in BSON).
REPORT_PART = 500


class Target(NamedTuple):
    """One series to audit and its window; ``historical`` when the window ends
    before the live edge, making the audit a report."""

    symbol: str
    tf: Timeframe
    window: Window
    historical: bool = False


class Auditor:
    def __init__(
        self,
        audit: AuditSettings,
        backfill: BackfillSettings,
        replica_id: str,
        clock: Clock,
        candles: CandleStore,
        state: StateStore,
        backfills: BackfillStore,
        fence: Fence,
        leadership: Leadership,
        metrics: Metrics,
        is_prepared: Callable[[], bool] = lambda: True,
        settled: SettledStore | None = None,
        *,
        owns_verdict: bool = False,
        failpoints: Failpoints | None = None,
        acks: AckStore | None = None,
        content: ContentOptions | None = None,
        anomalies: AnomalyStore | None = None,
    ) -> None:
        self._audit = audit
        # Candle content checks: both given, or off (in-process tests).
        self._content = (
            None
            if content is None or anomalies is None
            else ContentCheck(content, clock, candles, anomalies, fence, metrics)
        )
        # LIVE_MODE=off: the cycle stores the series' live verdict. Otherwise the
        # live tail owns it and a cycle never writes it (one writer per field).
        self._owns_verdict = owns_verdict
        self._failpoints = failpoints or Failpoints()
        self._replica_id = replica_id
        # False until the collections and indexes exist (app.py): a cycle that
        # raced their creation could hang the server in create_collection.
        self._is_prepared = is_prepared
        self._clock = clock
        self._candles = candles
        self._state = state
        self._healer = Healer(backfill, clock, backfills, fence, metrics)
        # Acknowledged outages, read once per cycle (None: none, for in-process tests).
        self._acks = acks
        self._fence = fence
        self._leadership = leadership
        self._metrics = metrics
        self._symbols = frozenset(audit.symbols)
        # Default-window cycles: batched, incremental (None: every series on its own).
        self._sweep = (
            None
            if settled is None
            else Sweep(
                audit,
                clock,
                candles,
                state,
                settled,
                fence,
                metrics,
                owns_verdict=owns_verdict,
                failpoints=self._failpoints,
                content=self._content,
            )
        )
        self._cycle_lock = asyncio.Lock()
        self.last_cycle: Cycle | None = None
        # Failed cycles that could not be stored (the database was the reason),
        # oldest first; each stays here until it is stored, so the history has no hole.
        self._unsaved: list[Cycle] = []

    def select(
        self,
        symbols: Sequence[str],
        timeframes: Sequence[str],
        start_ms: int | None,
        end_ms: int | None,
    ) -> list[Target]:
        """Validates a request and returns the series with their windows."""
        for sym in symbols:
            if sym not in self._symbols:
                raise NotFound(
                    f"symbol {sym[:64]!r} is not configured (AUDIT_SYMBOLS)", field="symbols"
                )
        tfs: list[Timeframe] = []
        for name in timeframes:
            tf = parse_timeframe(name)
            if tf.name not in self._audit.timeframes:
                raise NotFound(
                    f"timeframe {name!r} is not configured (AUDIT_TIMEFRAMES)", field="timeframes"
                )
            tfs.append(tf)
        if start_ms is not None and end_ms is not None and start_ms >= end_ms:
            raise InvalidArgument("start_time must be before end_time", field="start_time")
        chosen_syms = list(dict.fromkeys(symbols)) or list(self._audit.symbols)
        chosen_tfs = list(dict.fromkeys(tfs)) or [
            parse_timeframe(t) for t in self._audit.timeframes
        ]
        now = self._clock.now_ms()
        selected = []
        for tf in chosen_tfs:
            window, historical = self._window(tf, now, start_ms, end_ms)
            for sym in chosen_syms:
                selected.append(Target(sym, tf, window, historical))
        return selected

    def _window(
        self, tf: Timeframe, now: int, start: int | None, end: int | None
    ) -> tuple[Window, bool]:
        """The window to audit, and whether it ends before the live edge (a report)."""
        grace_ms = round(self._audit.ingest_grace * 1000)
        default = default_window(tf, now, self._audit.lookback, self._audit.min_candles, grace_ms)
        if start is None and end is None:
            return default, False
        # Slots that are not yet due are never audited: a window reaching past
        # the settled edge is cut back to it, so a future window can never
        # become a series' score.
        if start is not None and start >= default.end_ms:
            raise InvalidArgument(
                f"start_time is after the newest {tf.name} slot due now "
                f"(closed + AUDIT_INGEST_GRACE); nothing to audit yet",
                field="start_time",
            )
        end = default.end_ms if end is None else min(end, default.end_ms)
        if start is None:
            start = end - (default.end_ms - default.start_ms)
        if start >= end:
            raise InvalidArgument("start_time must be before end_time", field="start_time")
        _check_era(tf, start, end)
        slots = tf.count_slots(start, end)
        if slots > self._audit.max_range_candles:
            raise InvalidArgument(
                f"the range spans {slots} {tf.name} candles; the limit is "
                f"{self._audit.max_range_candles} (AUDIT_MAX_RANGE_CANDLES)",
                field="end_time",
            )
        return Window(start, end), end < default.end_ms

    async def run_cycle(
        self, selection: list[Target], *, trigger: str, default_window: bool = False
    ) -> Cycle:
        """Audits the selection as one cycle. ``default_window``: the windows are the
        default ones (no times requested), which the sweep may read incrementally."""
        if not self._is_prepared():
            raise Unavailable("starting: the audit collections are not created yet; retry")
        term = self._leadership.term()
        if term is None:
            raise NotLeader("not leader", leader_address=self._leadership.last_known_address())
        async with self._cycle_lock, term.guard():
            return await self._cycle(selection, term, trigger, default_window)

    async def _cycle(
        self, selection: list[Target], term: Term, trigger: str, default_window: bool = False
    ) -> Cycle:
        cycle_id = f"c-{self._clock.now_ms()}-{uuid.uuid4().hex[:8]}"
        started = self._clock.now_ms()
        begun = self._clock.monotonic()
        gate = asyncio.Semaphore(self._audit.concurrency)

        # Read once: every series of the cycle judges its gaps by the same windows.
        acks = await self._acks.all(MAX_ACKS) if self._acks is not None else []

        async def one(target: Target) -> SeriesReport:
            async with gate:
                return await self._series(target, cycle_id, term.epoch, acks)

        await self._save_unsaved(term.epoch)
        tags = {"cycle_id": cycle_id, "epoch": term.epoch}
        finish = functools.partial(
            Cycle,
            cycle_id,
            started,
            served_by=self._replica_id,
            epoch=term.epoch,
            trigger=trigger,
        )
        log.info("audit cycle started", extra={**tags, "series": len(selection)})
        sweep = self._sweep if default_window else None
        if sweep is not None:

            async def group(g: Group) -> list[SeriesReport]:
                async with gate:
                    return await sweep.group(g, cycle_id, term.epoch, acks)

            plain = [(t.symbol, t.tf, t.window) for t in selection]
            tasks = [asyncio.ensure_future(group(g)) for g in groups(self._candles, plain)]
        else:
            tasks = [asyncio.ensure_future(_one(one, item)) for item in selection]
        try:
            reports = _in_order(selection, await asyncio.gather(*tasks))
        except BaseException as exc:
            # gather leaves the other series running; stop them before the cycle
            # lock is released, so cycles never overlap.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(exc, Cancelled) or not isinstance(exc, Exception):
                raise  # cancellation (incl. lost leadership) is not a failed cycle
            failure = finish(self._clock.now_ms(), succeeded=False, error=_reason(exc))
            self.last_cycle = failure
            log.warning("audit cycle failed", extra={**tags, "error": failure.error})
            # Kept back before the write and let go after it: the outage that failed the
            # cycle can also end the term, which cancels this write, not only fail it.
            self._unsaved = [*self._unsaved, failure][-_MAX_UNSAVED:]
            try:
                await self._fence.write_fenced(
                    term.epoch, lambda s: self._state.save_cycle(failure, s)
                )
            except Exception:  # the database may be why the cycle failed
                log.warning("could not record the failed cycle yet", extra=tags)
            else:
                self._unsaved = [c for c in self._unsaved if c is not failure]
            raise
        # After every series is stored: the cap serves the cycle's worst gaps.
        reports = _with_backfills(reports, await self._healer.heal(cycle_id, term.epoch))
        cycle = finish(self._clock.now_ms(), series=tuple(reports), summary=summarize(reports))
        await self._store_reports(cycle, term.epoch)
        # The header last: a stored header means every part of its reports is stored.
        await self._fence.write_fenced(term.epoch, lambda s: self._state.save_cycle(cycle, s))
        self.last_cycle = cycle
        if self._content is not None and not cycle.historical:
            try:
                await self._content.publish_suspects()
            except Exception as exc:  # a gauge must not fail a stored cycle
                log.warning("could not count suspect series", extra={**tags, "error": repr(exc)})
        self._metrics.cycle_seconds.observe(self._clock.monotonic() - begun)
        if trigger == SCHEDULED:
            # Only the full, scheduled cycle proves the audit is not stalled: RunAudit
            # calls for a few series must not keep the stalled-audit alert silent.
            self._metrics.last_success.set(cycle.finished_ms / 1000)
        log.info("audit cycle finished", extra={**tags, "series": len(reports)})
        return cycle

    async def _save_unsaved(self, epoch: int) -> None:
        """Stores the failed cycles kept back, oldest first. Each leaves the list only
        once stored, so a failure here (which fails this cycle too) loses none of them.

        A record from an earlier term of this replica (the database outage that failed
        it also ended that term) is stored under the current term, through its fence:
        it is an upsert of this replica's own cycle id, which no other writer touches,
        and it keeps the epoch of the term that ran it. Nothing is written under an
        old epoch."""
        while self._unsaved:
            failed = self._unsaved[0]
            await self._fence.write_fenced(epoch, functools.partial(self._store_cycle, failed))
            self._unsaved.pop(0)

    async def _store_reports(self, cycle: Cycle, epoch: int) -> None:
        """The cycle's reports in parts of REPORT_PART, one fenced batch each, so no
        document or transaction grows with the number of series."""
        for part, first in enumerate(range(0, len(cycle.series), REPORT_PART)):
            chunk = cycle.series[first : first + REPORT_PART]
            await self._fence.write_fenced(
                epoch,
                functools.partial(
                    self._state.save_cycle_reports, cycle.cycle_id, cycle.finished_ms, part, chunk
                ),
            )

    async def _store_cycle(self, cycle: Cycle, session: object) -> None:
        await self._state.save_cycle(cycle, session)

    async def _series(
        self, target: Target, cycle_id: str, epoch: int, acks: Sequence[Acknowledgement] = ()
    ) -> SeriesReport:
        symbol, tf, window, historical = target
        scanner = SeriesScanner(tf, window, self._audit.max_gaps_per_series)
        content = self._content
        if content is None:
            async for batch in self._candles.timestamps(symbol, tf.name, window):
                scanner.feed(batch)
        else:
            # One read: the window with the rules' history before it, values included.
            (read,) = content_reads(tf, (window,), content.history)
            checked = content.start(symbol, tf, window)
            read_started = self._clock.now_ms()
            async for candles in self._candles.candles(symbol, tf.name, read):
                checked.feed(candles, tf)
                scanner.feed(c.open_time_ms for c in candles if c.open_time_ms >= window.start_ms)
            await content.aggregates(tf, {symbol: checked})
            await content.store(tf, [checked], epoch, read_started)
        found = scanner.finish()
        report, gaps = conclude(
            self._audit,
            self._clock.now_ms(),
            symbol,
            tf,
            window,
            found,
            cycle_id,
            epoch,
            historical=historical,
            acknowledged=windows_for(acks, symbol, tf.name),
        )
        if content is not None:
            counts = await content.counts(tf, window, [symbol])
            report = content.apply(report, counts.get(symbol), tf)
        health = report.health.score
        # Gaps in fenced batches of GAP_BATCH, so no transaction grows with the
        # series' history; the series record last, which drops the gaps this
        # cycle did not write.
        # Between the scan and the store: where a race with the live tail would land.
        await self._failpoints.reach("cycle.before_store")
        for first in range(0, len(gaps), GAP_BATCH):
            part = gaps[first : first + GAP_BATCH]
            await self._fence.write_fenced(
                epoch,
                functools.partial(
                    self._state.save_gaps, part, cycle_id, epoch, historical=historical
                ),
            )
        await self._fence.write_fenced(
            epoch,
            lambda s: self._state.save_series(
                report, (), cycle_id=cycle_id, epoch=epoch, live=self._owns_verdict, session=s
            ),
        )
        labels = (symbol, tf.name)
        self._metrics.gaps_detected.labels(*labels).inc(len(found.gaps))
        self._metrics.duplicates_detected.labels(*labels).inc(len(found.duplicates))
        if not historical:  # a report must not move the gauge the alerts watch
            self._metrics.health_score.labels(*labels).set(health.quality)
        return report


def _with_backfills(reports: list[SeriesReport], healed: HealOutcome) -> list[SeriesReport]:
    """The reports with the healing pass's requests and skips counted per series."""
    return [
        dataclasses.replace(
            r,
            backfills_requested=healed.requested[(r.symbol, r.timeframe)],
            backfills_skipped=healed.skipped[(r.symbol, r.timeframe)],
        )
        if (r.symbol, r.timeframe) in healed.requested or (r.symbol, r.timeframe) in healed.skipped
        else r
        for r in reports
    ]


async def _one(
    audit: Callable[[Target], Awaitable[SeriesReport]], target: Target
) -> list[SeriesReport]:
    return [await audit(target)]


def _in_order(
    selection: Sequence[Target], parts: Sequence[list[SeriesReport]]
) -> list[SeriesReport]:
    """The reports of every part, in the selection's order."""
    by_key = {(r.symbol, r.timeframe): r for part in parts for r in part}
    return [by_key[(t.symbol, t.tf.name)] for t in selection]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, AuditError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:500]


def _check_era(tf: Timeframe, start: int, end: int) -> None:
    """Every slot the window touches, and the open time after the last one (a gap's
    end), must be a representable instant; otherwise the request is refused."""
    if start < _FIRST_MS:
        raise InvalidArgument(
            "the window would start before 0001-01-01 (start_time, or end_time minus "
            "the default window when start_time is unset)",
            field="start_time",
        )
    try:
        last_end = tf.next_open(end - 1)
        ok = tf.floor(start) >= _FIRST_MS and last_end <= _LAST_MS
    except (ValueError, OverflowError):
        ok = False
    if not ok:
        raise InvalidArgument(
            f"the window must end at least one {tf.name} candle before 9999-12-31T23:59:59Z",
            field="end_time",
        )
