"""Default-window cycles at exchange scale: batched reads, incremental scans,
batched writes. The auditor hands a cycle's selection here when it audits the
default window (a scheduled cycle, or RunAudit without times).

* **Groups.** Series sharing a candle collection, timeframe and window form a
  group. Under ``klines_{timeframe}`` (no ``{symbol}``) that is every symbol of
  a timeframe; with ``{symbol}`` in the template every group is one series.
* **Reads per group, not per series.** Each series gets a plan
  (:mod:`auditsvc.domain.settled`): the whole window, or only its settled gaps and
  the tail after the recheck horizon. The group's ranges are read together
  (``CandleStore.read_many``: by time in slices of bounded size over a shared
  collection with a time index, else one query per set of ranges), and the
  documents are scanned as they stream (memory: the group's scanners, not its
  candles).
* **Content.** With the content checks on, the same read carries the candles'
  values, and the rules judge each series' tail (:mod:`auditsvc.usecases.content_check`);
  each chunk's findings are stored and resolved before its scores, which carry
  the content fields.
* **Bounded writes.** Results are written CHUNK series at a time: the chunk's
  gaps in fenced batches of at most GAP_BATCH, then its scores with their
  settled records (one document per series) in one fenced batch of two bulk
  operations; the reports go to the cycle's parts. No transaction grows with
  the number of series or with a series' history.

Guarantee: the reports are those of a full scan of each window (the settled
module's contract); only their cost differs. A series' record is trusted only
for the collection it names and while no removal or restore of duplicates has
rewritten the series since (``storage/mongo/settled_store``); otherwise the
series is scanned whole. Limits: any other change older than AUDIT_RECHECK and
outside every open gap is seen at the next full scan, at most
AUDIT_FULL_SCAN_EVERY cycles later.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

from auditsvc.domain.acknowledgement import Acknowledgement, split, windows_for
from auditsvc.domain.gap_lifecycle import GapState
from auditsvc.domain.records import GapRecord, ScoreRecord, SeriesReport
from auditsvc.domain.scoring import score
from auditsvc.domain.series_state import window_state
from auditsvc.domain.settled import IncrementalScan, Plan, Settled, plan, settle
from auditsvc.domain.timeframes import Timeframe
from auditsvc.domain.values import SeriesScan, Window
from auditsvc.ops.clock import Clock
from auditsvc.ops.failpoints import Failpoints
from auditsvc.ops.metrics import Metrics
from auditsvc.ops.settings import AuditSettings
from auditsvc.storage.interfaces import CandleStore, Fence, SettledStore, StateStore
from auditsvc.usecases.content_check import ContentCheck, SeriesContent, content_reads

# Series per fenced write batch.
CHUNK = 500
# Gap records per fenced write batch (about 0.3 KB each in BSON).
GAP_BATCH = 250


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """Series of one collection, timeframe and window, read with one query."""

    collection: str
    tf: Timeframe
    window: Window
    symbols: tuple[str, ...]


def groups(candles: CandleStore, selection: Sequence[tuple[str, Timeframe, Window]]) -> list[Group]:
    """The selection by collection, timeframe and window; symbols keep their order."""
    found: dict[tuple[str, str, Window], tuple[Timeframe, list[str]]] = {}
    for symbol, tf, window in selection:
        key = (candles.collection(symbol, tf.name), tf.name, window)
        found.setdefault(key, (tf, []))[1].append(symbol)
    return [
        Group(collection, tf, window, tuple(symbols))
        for (collection, _, window), (tf, symbols) in found.items()
    ]


class Sweep:
    def __init__(
        self,
        audit: AuditSettings,
        clock: Clock,
        candles: CandleStore,
        state: StateStore,
        settled: SettledStore,
        fence: Fence,
        metrics: Metrics,
        *,
        owns_verdict: bool = False,
        failpoints: Failpoints | None = None,
        content: ContentCheck | None = None,
    ) -> None:
        self._audit = audit
        # The candle content checks (None: off; the reads carry timestamps only).
        self._content = content
        self._owns_verdict = owns_verdict
        self._failpoints = failpoints or Failpoints()
        self._clock = clock
        self._candles = candles
        self._state = state
        self._settled = settled
        self._fence = fence
        self._metrics = metrics

    async def group(
        self, g: Group, cycle_id: str, epoch: int, acks: Sequence[Acknowledgement] = ()
    ) -> list[SeriesReport]:
        """Audits one group and stores its results; returns its reports in symbol order.
        Gaps inside ``acks`` are ACKNOWLEDGED (:mod:`auditsvc.domain.acknowledgement`)."""
        known, basis = await self._settled.load(g.collection, g.tf.name, g.symbols)
        recheck_ms = round(self._audit.recheck * 1000)
        plans = {
            s: plan(g.tf, g.window, known.get(s), recheck_ms, self._audit.full_scan_every)
            for s in g.symbols
        }
        cap = self._audit.max_gaps_per_series
        scans = {s: IncrementalScan(g.tf, p, cap) for s, p in plans.items()}
        content = self._content
        checked: dict[str, SeriesContent] = {}
        read_started = 0
        if content is None:
            reads = {s: p.reads for s, p in plans.items()}
            async for symbol, stamps in self._candles.read_many(
                g.collection, reads, g.tf.nominal_ms
            ):
                scan = scans.get(symbol)
                if scan is not None:
                    scan.feed(stamps)
        else:
            # One read: the judged tail with its history, values included (content_check).
            reads = {s: content_reads(g.tf, p.reads, content.history) for s, p in plans.items()}
            checked = {s: content.start(s, g.tf, p.reads[-1]) for s, p in plans.items()}
            read_started = self._clock.now_ms()
            async for symbol, found in self._candles.read_many_candles(
                g.collection, reads, g.tf.nominal_ms
            ):
                scan = scans.get(symbol)
                if scan is not None:
                    scan.feed(c.open_time_ms for c in found)
                    checked[symbol].feed(found, g.tf)
            await content.aggregates(g.tf, checked)
        reports: list[SeriesReport] = []
        for first in range(0, len(g.symbols), CHUNK):
            chunk = g.symbols[first : first + CHUNK]
            if content is not None:
                part = [checked[s] for s in chunk]
                await content.store(g.tf, part, epoch, read_started)
            reports += await self._conclude_chunk(
                g, chunk, scans, plans, basis, cycle_id, epoch, acks
            )
        return reports

    async def _conclude_chunk(
        self,
        g: Group,
        symbols: Sequence[str],
        scans: dict[str, IncrementalScan],
        plans: dict[str, Plan],
        basis: dict[str, int],
        cycle_id: str,
        epoch: int,
        acks: Sequence[Acknowledgement],
    ) -> list[SeriesReport]:
        reports: list[SeriesReport] = []
        gaps: list[GapRecord] = []
        records: dict[str, Settled | None] = {}
        content = self._content
        counts = {} if content is None else await content.counts(g.tf, g.window, symbols)
        for symbol in symbols:
            found = scans.pop(symbol).finish()
            report, series_gaps = await self._conclude(
                symbol, g.tf, g.window, found, cycle_id, epoch, windows_for(acks, symbol, g.tf.name)
            )
            if content is not None:
                report = content.apply(report, counts.get(symbol), g.tf)
            reports.append(report)
            gaps += series_gaps
            records[symbol] = settle(found, plans[symbol])
            self._count(symbol, g.tf, found, plans[symbol])
        # Between the scan and the store: where a race with the live tail would land.
        await self._failpoints.reach("cycle.before_store")
        for first in range(0, len(gaps), GAP_BATCH):
            part = gaps[first : first + GAP_BATCH]
            await self._fence.write_fenced(
                epoch, functools.partial(self._state.save_gaps, part, cycle_id, epoch)
            )
        await self._fence.write_fenced(
            epoch,
            functools.partial(self._save, reports, records, g.collection, basis, cycle_id, epoch),
        )
        return reports

    async def _save(
        self,
        reports: list[SeriesReport],
        records: dict[str, Settled | None],
        collection: str,
        basis: dict[str, int],
        cycle_id: str,
        epoch: int,
        session: Any,
    ) -> None:
        await self._settled.save_chunk(
            reports,
            records,
            collection=collection,
            basis=basis,
            cycle_id=cycle_id,
            epoch=epoch,
            live=self._owns_verdict,
            session=session,
        )

    def _count(self, symbol: str, tf: Timeframe, found: SeriesScan, p: Plan) -> None:
        self._metrics.series_scans.labels("full" if p.full else "incremental").inc()
        labels = (symbol, tf.name)
        self._metrics.gaps_detected.labels(*labels).inc(found.gap_count)
        self._metrics.duplicates_detected.labels(*labels).inc(len(found.duplicates))

    async def _conclude(
        self,
        symbol: str,
        tf: Timeframe,
        window: Window,
        found: SeriesScan,
        cycle_id: str,
        epoch: int,
        acknowledged: Sequence[tuple[int, int]],
    ) -> tuple[SeriesReport, list[GapRecord]]:
        """The series' report and gap records."""
        report, gaps = conclude(
            self._audit,
            self._clock.now_ms(),
            symbol,
            tf,
            window,
            found,
            cycle_id,
            epoch,
            acknowledged=acknowledged,
        )
        self._metrics.health_score.labels(symbol, tf.name).set(report.health.score.quality)
        return report, gaps


def conclude(
    audit: AuditSettings,
    now: int,
    symbol: str,
    tf: Timeframe,
    window: Window,
    found: SeriesScan,
    cycle_id: str,
    epoch: int,
    *,
    historical: bool = False,
    acknowledged: Sequence[tuple[int, int]] = (),
) -> tuple[SeriesReport, list[GapRecord]]:
    """A scanned series' report and gap records. Backfills are the healing pass's
    (:mod:`auditsvc.usecases.healing`), which fills in the report's counts.

    The one place a scan becomes a report, for full scans (``Auditor``) and the
    incremental sweep alike; storing them is the caller's.
    """
    # Gaps inside acknowledged windows leave the counts and scores, not the records.
    found, known = split(found, acknowledged)
    health = score(found, tf)
    gaps = [
        GapRecord(symbol, tf.name, gap.start_ms, gap.end_ms, gap.missing_candles, gap.severity, now)
        for gap in found.gaps
    ] + [
        GapRecord(
            symbol,
            tf.name,
            gap.start_ms,
            gap.end_ms,
            gap.missing_candles,
            gap.severity,
            now,
            state=GapState.ACKNOWLEDGED,
        )
        for gap in known
    ]
    grace_ms = round(audit.ingest_grace * 1000)
    record = ScoreRecord(symbol, tf.name, health, now, cycle_id)
    # A report (historical window) vouches for nothing about the present.
    judged = None if historical else window_state(tf, window.end_ms, found.newest_ms, now, grace_ms)
    if judged is not None:
        live, at = judged
        record = dataclasses.replace(
            record,
            state=live.state,
            last_candle_ms=live.last_candle_ms,
            late_candles=live.late_candles,
            verdict_ms=at,
        )
    report = SeriesReport(
        symbol=symbol,
        timeframe=tf.name,
        window_start_ms=window.start_ms,
        window_end_ms=window.end_ms,
        expected_candles=found.expected_candles,
        present_candles=found.present_candles,
        missing_candles=found.missing_candles,
        gap_count=found.gap_count,
        gaps_not_stored=found.dropped_gaps,
        acknowledged_gap_count=len(known),
        acknowledged_missing_candles=sum(g.missing_candles for g in known),
        duplicate_groups=len(found.duplicates),
        surplus_documents=found.surplus_documents,
        misaligned_candles=found.misaligned_candles,
        backfills_requested=0,
        backfills_skipped=0,
        health=record,
        historical=historical,
    )
    return report, gaps
