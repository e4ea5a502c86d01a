"""The use cases behind the RPCs, over the stores. Transport-free: it takes
and returns domain records and raises domain errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from auditsvc import __version__
from auditsvc.audit.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ShuttingDown,
    Unavailable,
)
from auditsvc.audit.models import Strategy
from auditsvc.audit.timeframes import parse_timeframe
from auditsvc.auditing import Auditor
from auditsvc.config import Settings
from auditsvc.dedupe import Deduplicator
from auditsvc.leadership import Leadership
from auditsvc.paging import PageTokens
from auditsvc.records import (
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
from auditsvc.store import Fence, StateStore

T = TypeVar("T")
# GetStatus reads the newest stored cycle at most this often; concurrent callers share one read.
STATUS_CACHE_S = 0.5
MAX_PAGE = 1000
DEFAULT_PAGE = 100


class AuditService:
    def __init__(
        self,
        settings: Settings,
        auditor: Auditor,
        deduplicator: Deduplicator,
        state: StateStore,
        fence: Fence,
        leadership: Leadership,
        tokens: PageTokens,
        is_ready: Callable[[], bool],
        next_cycle_ms: Callable[[], int | None],
    ) -> None:
        self._s = settings
        self.auditor = auditor
        self._dedupe = deduplicator
        self._state = state
        self._fence = fence
        self._leadership = leadership
        self._tokens = tokens
        self._is_ready = is_ready
        self._next_cycle_ms = next_cycle_ms
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._status_read: asyncio.Future[Cycle | None] | None = None
        self._status_read_at = float("-inf")
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
        body = _digest(sorted(symbols), sorted(timeframes), start_ms, end_ms)

        async def work() -> dict[str, Any]:
            cycle = await self.auditor.run(selection, trigger=trigger)
            return {"cycle_id": cycle.cycle_id}

        async def replay(result: dict[str, Any]) -> Cycle:
            cycle = await self._state.get_cycle(result["cycle_id"])
            if cycle is None:
                raise Unavailable("the first result of this request_id is not readable yet")
            return cycle

        if not request_id:
            return await self.auditor.run(selection, trigger=trigger)
        return await self._once("run", request_id, body, work, replay)

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
        chosen = strategy or self._s.duplicate_resolution_strategy
        body = _digest(symbol, timeframe, window.start_ms, window.end_ms, chosen.value, dry_run)

        async def work() -> dict[str, Any]:
            report = await self._dedupe.run(symbol, tf, window, chosen, dry_run, request_id)
            return report_to_dict(report)

        async def replay(result: dict[str, Any]) -> DuplicateReport:
            return report_from_dict(result)

        if not request_id:
            # Removals are archived under a request_id so restore can find them.
            request_id = f"rd-{uuid.uuid4().hex}"
            return await self._dedupe.run(symbol, tf, window, chosen, dry_run, request_id)
        return await self._once("dedupe", request_id, body, work, replay)

    async def _once(
        self,
        kind: str,
        request_id: str,
        body: str,
        work: Callable[[], Awaitable[dict[str, Any]]],
        replay: Callable[[dict[str, Any]], Awaitable[T]],
    ) -> T:
        """A repeated request_id returns the first result; the work runs once."""
        if len(request_id) > 128:
            raise InvalidArgument("request_id is longer than 128 characters", field="request_id")
        key = f"{kind}:{request_id}"
        pending = self._inflight.get(key)
        if pending is not None:
            stored_body, result = await asyncio.shield(pending)
            return await self._replay(stored_body, body, result, replay)
        # Registered before the first await, so a concurrent repeat waits for us.
        future: asyncio.Future[tuple[str, dict[str, Any]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._inflight[key] = future
        try:
            stored = await self._state.get_request(kind, request_id)
            if stored is not None:
                first = (str(stored["body_hash"]), stored["result"])
            else:
                result = await work()
                term = self._leadership.term()
                epoch = term.epoch if term else self._leadership.epoch
                # Fenced like every other write under leadership.
                await self._fence.run(
                    epoch,
                    lambda s: self._state.put_request(kind, request_id, body, result, epoch, s),
                )
                first = (body, result)
            future.set_result(first)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                # Our caller went away; that is no reason to cancel the others.
                future.set_exception(
                    Unavailable("the first call with this request_id was cancelled; retry")
                )
            else:
                future.set_exception(exc)
            future.exception()  # mark retrieved; waiters re-raise it themselves
            raise
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]
        return await self._replay(first[0], body, first[1], replay)

    @staticmethod
    async def _replay(
        stored_body: str,
        body: str,
        result: dict[str, Any],
        replay: Callable[[dict[str, Any]], Awaitable[T]],
    ) -> T:
        if stored_body != body:
            raise FailedPrecondition(
                "request_id was already used with a different request body",
                field="request_id",
                reason="REQUEST_ID_REUSED",
            )
        return await replay(result)

    async def list_gaps(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int | None,
        end_ms: int | None,
        min_missing: int,
        page_size: int,
        page_token: str,
    ) -> tuple[list[GapRecord], str]:
        if page_size < 0 or page_size > MAX_PAGE:
            raise InvalidArgument(f"page_size must be 0..{MAX_PAGE}", field="page_size")
        self._configured([symbol] if symbol else [], [timeframe] if timeframe else [], "")
        if start_ms is not None and end_ms is not None and start_ms >= end_ms:
            raise InvalidArgument("start_time must be before end_time", field="start_time")
        limit = page_size or DEFAULT_PAGE
        filters = _digest(symbol, timeframe, start_ms, end_ms, min_missing)
        after = await self._tokens.decode(filters, page_token) if page_token else None
        query = GapQuery(symbol, timeframe, start_ms, end_ms, min_missing, limit + 1, after)
        gaps = await self._state.list_gaps(query)
        if len(gaps) <= limit:
            return gaps, ""
        last = gaps[limit - 1]
        return gaps[:limit], await self._tokens.encode(
            filters, (last.symbol, last.timeframe, last.start_ms)
        )

    def _configured(self, symbols: Sequence[str], timeframes: Sequence[str], plural: str) -> None:
        """NOT_FOUND naming the field for any symbol or timeframe not configured."""
        for sym in symbols:
            if sym not in self._s.audit_symbols:
                raise NotFound(
                    f"symbol {sym[:64]!r} is not configured (AUDIT_SYMBOLS)",
                    field=f"symbol{plural}",
                )
        for name in timeframes:
            try:
                tf = parse_timeframe(name)
            except InvalidArgument as exc:
                raise InvalidArgument(exc.message, field=f"timeframe{plural}") from None
            if tf.name not in self._s.audit_timeframes:
                raise NotFound(
                    f"timeframe {name[:64]!r} is not configured (AUDIT_TIMEFRAMES)",
                    field=f"timeframe{plural}",
                )

    async def leader(self) -> LeaderInfo:
        return await self._leadership.leader()

    async def status(self) -> Status:
        reachable = self._is_ready()
        last = self.auditor.last_cycle
        if reachable:
            try:
                last = await self._stored_last_cycle() or last
            except Exception:  # GetStatus must answer even when the database does not
                reachable = False
        term = self._leadership.term()
        return Status(
            replica_id=self._s.replica_id,
            role=self._leadership.role,
            auditor_enabled=self._s.enable_auditor,
            last_cycle=last,
            next_cycle_ms=self._next_cycle_ms() if term else None,
            series_count=len(self._s.audit_symbols) * len(self._s.audit_timeframes),
            version=__version__,
            database_reachable=reachable,
            leader_id=self._leadership.known_leader(),
            epoch=self._leadership.epoch,
        )

    async def _stored_last_cycle(self) -> Cycle | None:
        """The newest stored cycle, read at most every STATUS_CACHE_S (single flight)."""
        loop = asyncio.get_running_loop()
        read = self._status_read
        if read is None or (read.done() and loop.time() - self._status_read_at > STATUS_CACHE_S):
            read = self._status_read = asyncio.ensure_future(self._state.last_cycle())
            self._status_read_at = loop.time()
        try:
            return await asyncio.shield(read)
        except BaseException:
            if self._status_read is read and read.done():
                self._status_read = None  # never cache a failure
            raise

    async def health_scores(
        self, symbols: Sequence[str], timeframes: Sequence[str]
    ) -> AsyncIterator[ScoreRecord]:
        """Current scores of matching series first, then each new one."""
        self._configured(symbols, timeframes, "s")
        wanted_s, wanted_t = set(symbols), set(timeframes)

        def match(r: ScoreRecord) -> bool:
            return (not wanted_s or r.symbol in wanted_s) and (
                not wanted_t or r.timeframe in wanted_t
            )

        watch = self._state.watch_scores()
        # Start watching before the snapshot so nothing stored in between is missed.
        first = asyncio.ensure_future(anext(watch))
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            seen: dict[tuple[str, str], int] = {}
            for record in sorted(await self._state.scores(), key=lambda r: (r.symbol, r.timeframe)):
                if match(record):
                    seen[(record.symbol, record.timeframe)] = record.computed_ms
                    yield record
            while not self.closing.is_set():
                await asyncio.wait((first, closing), return_when=asyncio.FIRST_COMPLETED)
                if self.closing.is_set():
                    break
                record = first.result()
                first = asyncio.ensure_future(anext(watch))
                key = (record.symbol, record.timeframe)
                if match(record) and record.computed_ms > seen.get(key, -1):
                    seen[key] = record.computed_ms
                    yield record
            raise ShuttingDown("server shutting down; reconnect")
        finally:
            first.cancel()
            closing.cancel()
            # The generator is still running inside the cancelled task; let it
            # unwind before closing it, or aclose() raises.
            await asyncio.gather(first, closing, return_exceptions=True)
            await watch.aclose()  # type: ignore[attr-defined]


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()
