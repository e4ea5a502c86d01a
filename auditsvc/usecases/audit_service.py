"""The use cases behind the RPCs, over the stores. Transport-free: it takes
and returns domain records and raises domain errors.

The request_id ledger lives in :mod:`auditsvc.usecases.request_ledger`, GetStatus's
shared read of the last cycle in :mod:`auditsvc.usecases.status_cache`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from auditsvc import __version__
from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.errors import (
    InvalidArgument,
    NotFound,
    ShuttingDown,
    Unavailable,
)
from auditsvc.domain.gap_lifecycle import GapState
from auditsvc.domain.records import (
    RESULT_TTL_DAYS,
    AnomalyRecord,
    Cycle,
    DuplicateReport,
    GapQuery,
    GapRecord,
    LeaderInfo,
    ScoreRecord,
    Status,
    report_from_dict,
    report_to_dict,
)
from auditsvc.domain.series_state import SeriesState
from auditsvc.domain.values import Strategy
from auditsvc.leadership.term import Leadership
from auditsvc.ops.clock import Clock
from auditsvc.ops.settings import AuditSettings, DuplicateSettings
from auditsvc.storage.interfaces import AckStore, AnomalyStore, Fence, StateStore
from auditsvc.usecases.acknowledgements import Acknowledgements
from auditsvc.usecases.anomaly_listing import AnomalyListing
from auditsvc.usecases.auditing import Auditor
from auditsvc.usecases.dedupe import Deduplicator
from auditsvc.usecases.page_tokens import PageTokens
from auditsvc.usecases.request_ledger import RequestLedger, digest
from auditsvc.usecases.score_listing import ScoreListing, configured_keys
from auditsvc.usecases.series_selection import require_configured
from auditsvc.usecases.series_summary import SeriesSummary
from auditsvc.usecases.status_cache import LastCycleCache
from auditsvc.usecases.verdicts import Reading, VerdictWatch

# A heartbeat reading and the scores read after it.
Dated = tuple[Reading | None, list[ScoreRecord]]
# Streams asking for a dated snapshot within this many seconds share one read.
_SHARED_SNAPSHOT_S = 0.5
MAX_PAGE = 1000
DEFAULT_PAGE = 100


class AuditService:
    def __init__(
        self,
        audit: AuditSettings,
        duplicates: DuplicateSettings,
        replica_id: str,
        auditor: Auditor,
        deduplicator: Deduplicator,
        state: StateStore,
        fence: Fence,
        leadership: Leadership,
        tokens: PageTokens,
        is_ready: Callable[[], bool],
        next_cycle_ms: Callable[[], int | None],
        verdicts: VerdictWatch,
        read_timeout_ms: int = 5000,
        *,
        acks: AckStore,
        clock: Clock,
        anomalies: AnomalyStore,
    ) -> None:
        self._audit = audit
        self._duplicates = duplicates
        self._replica_id = replica_id
        self.auditor = auditor
        self._dedupe = deduplicator
        self._state = state
        self._fence = fence
        self._leadership = leadership
        self._tokens = tokens
        self._is_ready = is_ready
        self._next_cycle_ms = next_cycle_ms
        self._verdicts = verdicts
        self._configured = configured_keys(audit)
        # (loop time, read): the dated snapshot streams share; see _dated_scores.
        self._snapshot: (
            tuple[float, asyncio.Future[tuple[Reading | None, list[ScoreRecord]]]] | None
        ) = None
        self._listing = ScoreListing(audit, state, tokens, verdicts)
        self._findings = AnomalyListing(audit, anomalies, tokens)
        self._summary = SeriesSummary(audit, state, verdicts, read_timeout_ms / 1000)
        self._requests = RequestLedger(state, fence, leadership)
        # AcknowledgeGaps and its siblings, over the same request_id ledger.
        self.acknowledgements = Acknowledgements(
            audit, clock, acks, fence, leadership, self._requests, tokens
        )
        self._last_cycle = LastCycleCache(state, read_timeout_ms)
        # Set on shutdown: open streams end with UNAVAILABLE "shutting down"
        # (a status every generic client retries) instead of being cut.
        self.closing = asyncio.Event()

    async def run_audit(
        self,
        symbols: Sequence[str],
        timeframes: Sequence[str],
        start_ms: int | None,
        end_ms: int | None,
        request_id: str = "",
        trigger: str = "rpc",
    ) -> Cycle:
        selection = self.auditor.select(symbols, timeframes, start_ms, end_ms)
        body = digest(sorted(symbols), sorted(timeframes), start_ms, end_ms)

        # No times requested: the default windows, which may be read incrementally.
        default = start_ms is None and end_ms is None

        async def work() -> dict[str, Any]:
            cycle = await self.auditor.run_cycle(selection, trigger=trigger, default_window=default)
            return {"cycle_id": cycle.cycle_id}

        async def replay(result: dict[str, Any]) -> Cycle:
            cycle = await self._state.get_cycle(result["cycle_id"])
            if cycle is None:
                # The request record is stored only after its cycle, so a missing cycle
                # has expired (both are kept RESULT_TTL_DAYS) or been deleted.
                raise NotFound(
                    f"the result of this request_id (cycle {result['cycle_id']}) has expired: "
                    f"results are kept {RESULT_TTL_DAYS} days; send a new request_id",
                    field="request_id",
                )
            return cycle

        if not request_id:
            return await self.auditor.run_cycle(selection, trigger=trigger, default_window=default)
        return await self._requests.once("run", request_id, body, work, replay)

    async def resolve_duplicates(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int | None,
        end_ms: int | None,
        strategy: Strategy | None,
        dry_run: bool,
        request_id: str,
    ) -> DuplicateReport:
        tf, window = self._dedupe.validate(symbol, timeframe, start_ms, end_ms)
        chosen = strategy or self._duplicates.strategy
        # The request's own fields, as sent: the default window moves with the clock,
        # so hashing it would make a retry a minute later a "different" request.
        body = digest(
            symbol, timeframe, start_ms, end_ms, strategy.value if strategy else "", dry_run
        )

        async def work() -> dict[str, Any]:
            report = await self._dedupe.resolve_duplicates(
                symbol, tf, window, chosen, dry_run, request_id
            )
            return report_to_dict(report)

        async def replay(result: dict[str, Any]) -> DuplicateReport:
            return report_from_dict(result)

        if not request_id:
            # Removals are archived under a request_id so restore can find them.
            request_id = f"rd-{uuid.uuid4().hex}"
            return await self._dedupe.resolve_duplicates(
                symbol, tf, window, chosen, dry_run, request_id
            )
        return await self._requests.once("dedupe", request_id, body, work, replay)

    async def close(self) -> None:
        """Cancels request work still running (shutdown); its callers get UNAVAILABLE.
        Also cancels the summary's background refresh."""
        await self._requests.close()
        await self._summary.close()

    async def list_gaps(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int | None,
        end_ms: int | None,
        min_missing: int,
        page_size: int,
        page_token: str,
        states: tuple[GapState, ...] = (),
    ) -> tuple[list[GapRecord], str]:
        """A page of stored gaps; with no ``states``, those still missing and not
        given up on (OPEN, BACKFILL_REQUESTED), as before states existed."""
        if page_size < 0 or page_size > MAX_PAGE:
            raise InvalidArgument(f"page_size must be 0..{MAX_PAGE}", field="page_size")
        require_configured(
            self._audit, [symbol] if symbol else [], [timeframe] if timeframe else []
        )
        if start_ms is not None and end_ms is not None and start_ms >= end_ms:
            raise InvalidArgument("start_time must be before end_time", field="start_time")
        limit = page_size or DEFAULT_PAGE
        # Without states the digest is what it was, so earlier page tokens stay valid.
        filters = digest(symbol, timeframe, start_ms, end_ms, min_missing)
        if states:
            filters = digest(filters, sorted(s.value for s in states))
        after = await self._tokens.decode(filters, page_token) if page_token else None
        query = GapQuery(symbol, timeframe, start_ms, end_ms, min_missing, limit + 1, after, states)
        gaps = await self._state.list_gaps(query)
        if len(gaps) <= limit:
            return gaps, ""
        last = gaps[limit - 1]
        return gaps[:limit], await self._tokens.encode(
            filters, (last.symbol, last.timeframe, last.start_ms)
        )

    async def list_health_scores(
        self,
        symbols: Sequence[str],
        timeframes: Sequence[str],
        state: SeriesState | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[ScoreRecord], str]:
        """A page of stored scores; see :mod:`auditsvc.usecases.score_listing`."""
        return await self._listing.page(symbols, timeframes, state, page_size, page_token)

    async def list_anomalies(
        self,
        symbol: str,
        timeframe: str,
        rules: Sequence[AnomalyRule],
        start_ms: int | None,
        end_ms: int | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[AnomalyRecord], str]:
        """A page of stored content findings; see :mod:`auditsvc.usecases.anomaly_listing`."""
        return await self._findings.page(
            symbol, timeframe, rules, start_ms, end_ms, page_size, page_token
        )

    async def leader(self) -> LeaderInfo:
        return await self._leadership.leader()

    async def status(self, full: bool = False) -> Status:
        """The replica's status. The last cycle comes without its series reports
        (constant size, with its summary) unless ``full``."""
        reachable = self._is_ready()
        last: Cycle | None = None
        if reachable:
            try:
                last = await self._last_cycle.get(full)
            except Unavailable:
                raise  # the read timed out: say so rather than guess
            except Exception:  # GetStatus must answer even when the database does not
                reachable = False
        if last is None:
            last = self.auditor.last_cycle
            if last is not None and not full:
                last = dataclasses.replace(last, series=(), stored_historical=last.historical)
        term = self._leadership.term()
        summary = await self._summary.get() if reachable else None
        return Status(
            replica_id=self._replica_id,
            role=self._leadership.role,
            auditor_enabled=self._audit.enabled,
            last_cycle=last,
            next_cycle_ms=self._next_cycle_ms() if term else None,
            series_count=len(self._audit.symbols) * len(self._audit.timeframes),
            version=__version__,
            database_reachable=reachable,
            leader_id=self._leadership.known_leader(),
            epoch=self._leadership.epoch,
            summary=summary,
        )

    async def health_scores(
        self, symbols: Sequence[str], timeframes: Sequence[str]
    ) -> AsyncIterator[ScoreRecord]:
        """The matching configured series' scores as served now, then every change: a
        newly stored score, and the move to UNKNOWN (and back) of every series when
        the leader's confirmation goes stale (and resumes). A score is sent only
        when what it says differs from the last one sent for its series.

        A score is dated by a confirmation stored before the score was read, never
        a newer one (a change document may wait in a queue while a confirmation
        read meanwhile already covers a later change): the snapshot by a reading
        taken before it, each change by VerdictWatch.reading_for.
        """
        require_configured(self._audit, symbols, timeframes, "s")
        wanted_s, wanted_t = set(symbols), set(timeframes)
        configured = self._configured

        def match(r: ScoreRecord) -> bool:
            return (
                (r.symbol, r.timeframe) in configured
                and (not wanted_s or r.symbol in wanted_s)
                and (not wanted_t or r.timeframe in wanted_t)
            )

        latest: dict[tuple[str, str], ScoreRecord] = {}
        sent: dict[tuple[str, str], tuple[object, ...]] = {}

        def to_send(record: ScoreRecord, reading: Reading | None) -> ScoreRecord | None:
            latest[(record.symbol, record.timeframe)] = record
            served = self._verdicts.serve(record, reading)
            key, said = (record.symbol, record.timeframe), _says(served)
            if sent.get(key) == said:
                return None
            sent[key] = said
            return served

        async def snapshot(since: float) -> list[ScoreRecord]:
            # Only a read begun after this stream's watch opened, and after the move
            # it answers, misses nothing. A row older than one this stream already
            # holds (a shared read begun before that change arrived) yields to it.
            reading, rows = await self._dated_scores(not_before=since)
            out: list[ScoreRecord] = []
            for r in rows:
                held = latest.get((r.symbol, r.timeframe))
                newest = held if held is not None and held.changed_ms > r.changed_ms else r
                if match(newest) and (sent_now := to_send(newest, reading)) is not None:
                    out.append(sent_now)
            return out

        # The watch is open before the snapshot is read, so nothing stored in
        # between is missed; a document older than the one held is dropped.
        watch = await self._state.watch_scores()
        opened_at = asyncio.get_running_loop().time()
        first = asyncio.ensure_future(anext(watch))
        closing = asyncio.ensure_future(self.closing.wait())
        flip = asyncio.ensure_future(self._verdicts.changes())
        try:
            for current in await snapshot(opened_at):
                yield current
            while not self.closing.is_set():
                await asyncio.wait((first, closing, flip), return_when=asyncio.FIRST_COMPLETED)
                if self.closing.is_set():
                    break
                if flip.done():
                    # Every series moves at once: read them all again, after a reading.
                    moved_at = flip.result()
                    flip = asyncio.ensure_future(self._verdicts.changes())
                    for current in await snapshot(max(opened_at, moved_at)):
                        yield current
                if not first.done():
                    continue
                record = first.result()
                first = asyncio.ensure_future(anext(watch))
                key = (record.symbol, record.timeframe)
                held = latest.get(key)
                if not match(record) or (held is not None and record.changed_ms < held.changed_ms):
                    continue
                # Dated by the confirmation that preceded this very document.
                out = to_send(record, self._verdicts.reading_for(record))
                if out is not None:
                    yield out
            raise ShuttingDown("server shutting down; reconnect")
        finally:
            for waiting in (first, closing, flip):
                waiting.cancel()
            # The generator is still running inside the cancelled task; let it
            # unwind before closing it, or aclose() raises.
            await asyncio.gather(first, closing, flip, return_exceptions=True)
            await watch.aclose()  # type: ignore[attr-defined]

    async def _dated_scores(self, not_before: float) -> Dated:
        """A heartbeat reading, then every stored score, sorted: one read shared by
        the streams that ask within _SHARED_SNAPSHOT_S (a move to UNKNOWN and back
        reaches every subscriber at once), if it began at or after ``not_before``."""
        loop = asyncio.get_running_loop()
        shared = self._snapshot
        if shared is None or shared[0] < not_before or loop.time() - shared[0] > _SHARED_SNAPSHOT_S:
            shared = self._snapshot = (loop.time(), asyncio.ensure_future(self._read_dated()))
        return await asyncio.shield(shared[1])

    async def _read_dated(self) -> Dated:
        reading = await self._verdicts.read_now()
        rows = sorted(await self._state.scores(), key=lambda r: (r.symbol, r.timeframe))
        return reading, rows


def _says(r: ScoreRecord) -> tuple[object, ...]:
    """What a served score tells a subscriber (its verdict's age aside)."""
    return (
        r.state,
        r.last_candle_ms,
        r.late_candles,
        r.score,
        r.cycle_id,
        r.computed_ms,
        r.suspect,
        r.anomaly_count,
        r.validity,
    )
