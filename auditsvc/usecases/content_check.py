"""The candle content checks of a cycle (issue 21): the rules run over the candles
the cycle reads, their findings stored fenced, the ones no longer found resolved,
and each series' content fields (anomaly_count, validity, suspect) computed from
what is stored.

* **What is judged.** A full scan judges its whole window; an incremental one the
  tail it reads (the new slots and the AUDIT_RECHECK horizon). The read of the
  judged range starts :func:`history_slots` earlier, so the spike and frozen-feed
  detectors have history before the first slot judged (:func:`content_reads`);
  findings on that history are neither stored nor resolved.
* **One read.** The same read feeds the gap scanner (timestamps) and the rules
  (values): :meth:`CandleStore.read_many_candles` projects only the fields the
  rules use.
* **Aggregates.** A timeframe with a configured child (``aggregates.child_timeframe``)
  compares every higher candle it judged with its children, read for the judged
  range only (one batched read per group); a window ends at the settled edge, so
  every higher candle judged is settled, and a missing child makes it INCOMPLETE,
  never a mismatch.
* **Resolution.** After the findings are recorded, every stored finding of the
  judged range and of a rule judged there that was last seen before the read
  began is resolved (``AnomalyStore.resolve``): its candle was corrected or
  removed. The newest candle read is not judged for PRICE_SPIKE (it waits for its
  successor), so its spike finding is left to the next cycle.
* **Scores.** ``anomaly_count`` and ``validity`` count the stored findings on
  candles of the scored window (the live tail's included); ``suspect`` is set
  when one lies within VALIDITY_SUSPECT_SLOTS of the window's end (a report, a
  historical window, is never suspect).

Limits: a spike right after the history read is judged against the moves within
it (a quiet stretch longer than the history makes the scale differ from a full
scan's); ``history_slots`` is at least ``frozen_min_run``, so a frozen run that
began before the history is still reported in the judged range.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from auditsvc.domain.aggregates import check_aggregate, child_timeframe
from auditsvc.domain.anomalies import Anomaly, AnomalyRule
from auditsvc.domain.anomaly_config import AnomalyConfig
from auditsvc.domain.candle import Candle
from auditsvc.domain.content_audit import ContentAuditor
from auditsvc.domain.records import AnomalyRecord, SeriesReport
from auditsvc.domain.timeframes import Timeframe, parse_timeframe
from auditsvc.domain.validity import is_suspect, validity
from auditsvc.domain.values import Window
from auditsvc.ops.clock import Clock
from auditsvc.ops.metrics import Metrics
from auditsvc.storage.interfaces import (
    AnomalyCounts,
    AnomalyStore,
    CandleStore,
    Fence,
    JudgedRange,
)

log = logging.getLogger(__name__)

# Findings per fenced write batch (about 0.3 KB each in BSON).
FINDING_BATCH = 500
# Symbols per resolution query.
RESOLVE_SYMBOLS = 500
_SPIKE = AnomalyRule.PRICE_SPIKE
_AGGREGATE = AnomalyRule.AGGREGATE_MISMATCH
_SINGLE_SERIES = frozenset(AnomalyRule) - {_AGGREGATE}


@dataclass(frozen=True, slots=True)
class ContentOptions:
    """What app.py builds from ContentSettings and AuditSettings."""

    config: AnomalyConfig
    suspect_slots: int
    # The configured timeframes: which higher one has a child to be checked against.
    timeframes: tuple[str, ...]


def history_slots(config: AnomalyConfig) -> int:
    """Slots read before the first judged one: a frozen run's length, and a spike
    scale's window of moves (plus the reference candle)."""
    return max(config.frozen_min_run, config.spike_window + 1)


def content_reads(tf: Timeframe, reads: Sequence[Window], history: int) -> tuple[Window, ...]:
    """``reads`` with the last one (the judged range) starting ``history`` slots
    earlier, but never over the range before it (no candle is read twice)."""
    if not reads:
        return ()
    last = reads[-1]
    try:
        start = tf.shift(tf.floor(last.start_ms), -history)
    except (ValueError, OverflowError):
        return tuple(reads)
    if len(reads) > 1:
        start = max(start, reads[-2].end_ms)
    return (*reads[:-1], Window(min(start, last.start_ms), last.end_ms))


class SeriesContent:
    """The rules' pass over one series' candles as the cycle reads them, in order."""

    __slots__ = ("_auditor", "_now", "findings", "higher", "judged", "last_open", "symbol")

    def __init__(
        self, symbol: str, tf: Timeframe, judged: Window, now_ms: int, config: AnomalyConfig
    ) -> None:
        self.symbol = symbol
        self.judged = judged
        self._auditor = ContentAuditor(tf, config)
        self._now = now_ms
        self.findings: list[Anomaly] = []
        # The newest candle read in the judged range (PRICE_SPIKE is judged before it).
        self.last_open: int | None = None
        # The judged candles, aligned and one per slot, for the aggregate check.
        self.higher: dict[int, Candle] = {}

    def feed(self, candles: Iterable[Candle], tf: Timeframe) -> None:
        lo, hi = self.judged.start_ms, self.judged.end_ms
        for c in candles:
            t = c.open_time_ms
            for a in self._auditor.push(c, self._now):
                if lo <= a.open_time_ms < hi:
                    self.findings.append(a)
            if lo <= t < hi:
                self.last_open = t if self.last_open is None else max(self.last_open, t)
                if tf.floor(t) == t:
                    self.higher.setdefault(t, c)


class ContentCheck:
    def __init__(
        self,
        options: ContentOptions,
        clock: Clock,
        candles: CandleStore,
        anomalies: AnomalyStore,
        fence: Fence,
        metrics: Metrics,
    ) -> None:
        self._options = options
        self.config = options.config
        self.history = history_slots(options.config)
        self._clock = clock
        self._candles = candles
        self._anomalies = anomalies
        self._fence = fence
        self._metrics = metrics
        configured = [parse_timeframe(t) for t in options.timeframes]
        self._children = {tf.name: child_timeframe(tf, configured) for tf in configured}

    def start(self, symbol: str, tf: Timeframe, judged: Window) -> SeriesContent:
        return SeriesContent(symbol, tf, judged, self._clock.now_ms(), self.config)

    async def aggregates(self, tf: Timeframe, series: Mapping[str, SeriesContent]) -> None:
        """Adds each series' AGGREGATE_MISMATCH findings (none without a child timeframe)."""
        child = self._children.get(tf.name)
        if child is None:
            return
        reads: dict[str, dict[str, list[Window]]] = defaultdict(dict)
        for symbol, s in series.items():
            if s.higher:
                first, last = min(s.higher), max(s.higher)
                collection = self._candles.collection(symbol, child.name)
                reads[collection][symbol] = [Window(first, tf.next_open(last))]
        children: dict[str, list[Candle]] = defaultdict(list)
        for collection, wanted in reads.items():
            async for symbol, found in self._candles.read_many_candles(
                collection, wanted, child.nominal_ms
            ):
                children[symbol] += found
        for symbol, s in series.items():
            s.findings += _mismatches(tf, child, s, children.get(symbol, []), self.config)

    def rules_for(self, tf: Timeframe) -> frozenset[AnomalyRule]:
        """The rules a cycle judges on a series of ``tf``."""
        if self._children.get(tf.name) is None:
            return _SINGLE_SERIES
        return frozenset(AnomalyRule)

    async def store(
        self, tf: Timeframe, series: Sequence[SeriesContent], epoch: int, read_started_ms: int
    ) -> None:
        """Records the findings (fenced, in batches), counts the new ones, then resolves
        what the judged ranges no longer hold."""
        now = self._clock.now_ms()
        records = [
            AnomalyRecord(s.symbol, tf.name, a, now, False) for s in series for a in s.findings
        ]
        for first in range(0, len(records), FINDING_BATCH):
            batch = records[first : first + FINDING_BATCH]
            new = await self._fence.write_fenced(
                epoch, functools.partial(self._anomalies.record, batch, epoch)
            )
            for r in new:
                self._metrics.anomalies_found.labels(r.anomaly.rule.value, tf.name).inc()
        for judged in _judged_ranges(tf.name, series, self.rules_for(tf)):
            await self._fence.write_fenced(
                epoch, functools.partial(self._anomalies.resolve, [judged], read_started_ms)
            )

    async def counts(
        self, tf: Timeframe, window: Window, symbols: Sequence[str]
    ) -> dict[str, AnomalyCounts]:
        return await self._anomalies.counts(tf.name, symbols, window.start_ms, window.end_ms)

    def apply(
        self, report: SeriesReport, counts: AnomalyCounts | None, tf: Timeframe
    ) -> SeriesReport:
        """The report with its score's content fields (see the module docstring)."""
        findings = 0 if counts is None else counts.findings
        candles = 0 if counts is None else counts.candles
        newest = None if counts is None else counts.newest_open_ms
        suspect = not report.historical and is_suspect(
            tf, newest, report.window_end_ms, self._options.suspect_slots
        )
        health = dataclasses.replace(
            report.health,
            anomaly_count=findings,
            validity=validity(report.present_candles, candles),
            suspect=suspect,
        )
        return dataclasses.replace(report, health=health)

    async def publish_suspects(self) -> None:
        """Sets the suspect-series gauge from the stored scores (every configured
        timeframe, 0 when none is suspect)."""
        counts = await self._anomalies.suspect_counts(self._clock.now_ms())
        for name in self._options.timeframes:
            self._metrics.suspect_series.labels(name).set(counts.get(name, 0))


def _mismatches(
    tf: Timeframe,
    child: Timeframe,
    s: SeriesContent,
    children: Sequence[Candle],
    config: AnomalyConfig,
) -> list[Anomaly]:
    by_slot: dict[int, list[Candle]] = defaultdict(list)
    for c in children:
        by_slot[tf.floor(c.open_time_ms)].append(c)
    out = []
    for open_ms, higher in sorted(s.higher.items()):
        checked = check_aggregate(tf, higher, child, by_slot.get(open_ms, []), config)
        if checked.finding is not None:
            out.append(checked.finding)
    return out


def _judged_ranges(
    timeframe: str, series: Sequence[SeriesContent], rules: frozenset[AnomalyRule]
) -> list[JudgedRange]:
    """The ranges to resolve, symbols sharing a range and rules in one (bounded) query."""
    grouped: dict[tuple[int, int, frozenset[AnomalyRule]], list[str]] = defaultdict(list)
    for s in series:
        start, end = s.judged.start_ms, s.judged.end_ms
        grouped[(start, end, rules - {_SPIKE})].append(s.symbol)
        # The newest candle read waits for its successor before PRICE_SPIKE judges it.
        # No candle read at all: nothing waits, every finding there lost its candle.
        spike_end = end if s.last_open is None else s.last_open
        if _SPIKE in rules and spike_end > start:
            grouped[(start, spike_end, frozenset({_SPIKE}))].append(s.symbol)
    out = []
    for (start, end, chosen), symbols in grouped.items():
        for first in range(0, len(symbols), RESOLVE_SYMBOLS):
            part = tuple(symbols[first : first + RESOLVE_SYMBOLS])
            out.append(JudgedRange(timeframe, part, start, end, chosen))
    return out
