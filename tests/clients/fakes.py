"""A scriptable fake AuditService served by a real grpc.aio server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio

from auditpb.v1 import audit_pb2, audit_pb2_grpc

Failure = tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]


def ts(seconds: int) -> datetime:
    """Return the aware datetime ``seconds`` after the epoch."""
    return datetime.fromtimestamp(seconds, UTC)


def score(symbol: str, timeframe: str, computed_at: int | datetime, quality: float = 90.0) -> Any:
    """Build a HealthScore."""
    when = ts(computed_at) if isinstance(computed_at, int) else computed_at
    return audit_pb2.HealthScore(
        symbol=symbol,
        timeframe=timeframe,
        quality=quality,
        completeness=quality,
        consistency=100.0,
        freshness=100.0,
        computed_at=when,
        cycle_id=f"cycle-{int(when.timestamp())}",
    )


def live(
    symbol: str,
    timeframe: str,
    state: int,
    late: int = 0,
    at: int = 0,
    verdict: datetime | None = None,
) -> Any:
    """Build a HealthScore the live tail would store, in ``state`` (a SeriesState),
    computed ``at`` seconds after 2024-01-01, confirmed at ``verdict`` (unset if None)."""
    built = score(symbol, timeframe, 1_704_067_200 + at)
    built.cycle_id = ""
    built.state = state
    built.late_candles = late
    if state != audit_pb2.SERIES_STATE_NO_DATA:
        built.last_candle_open.FromDatetime(ts(1_704_067_140))
    if verdict is not None:
        built.verdict_time.FromDatetime(verdict)
    return built


def gap(symbol: str, n: int) -> Any:
    """Build a Gap whose start is ``n`` minutes after 2024-01-01."""
    start = 1_704_067_200 + 60 * n
    return audit_pb2.Gap(
        symbol=symbol,
        timeframe="1m",
        start_time=ts(start),
        end_time=ts(start + 120),
        missing_candles=2,
        severity=audit_pb2.SEVERITY_MEDIUM,
    )


def cycle() -> Any:
    """Build a finished AuditCycle with one series."""
    return audit_pb2.AuditCycle(
        cycle_id="cycle-1",
        started_at=ts(1_704_067_200),
        finished_at=ts(1_704_067_205),
        served_by="replica-a",
        epoch=7,
        status=audit_pb2.CYCLE_STATUS_SUCCEEDED,
        trigger="rpc",
        series=[
            audit_pb2.SeriesReport(
                symbol="BTCUSDT",
                timeframe="1m",
                expected_candles=60,
                present_candles=58,
                missing_candles=2,
                gap_count=1,
                health=score("BTCUSDT", "1m", 1_704_067_205, 96.5),
            )
        ],
    )


@dataclass
class FakeAuditService(audit_pb2_grpc.AuditServiceServicer):
    """Records every call; answers from its fields; fails as scripted in ``failures``."""

    calls: Counter[str] = field(default_factory=Counter)
    requests: dict[str, list[Any]] = field(default_factory=dict)
    metadata: list[dict[str, str]] = field(default_factory=list)
    # Per method, failures used up one per call before it answers normally.
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    # Per method, a failure returned on every call.
    always: dict[str, Failure] = field(default_factory=dict)
    delay: float = 0.0
    gap_pages: Sequence[Sequence[Any]] = ()
    # ListAnomalies' pages, served in order (tokens "page-N").
    anomaly_pages: Sequence[Sequence[Any]] = ()
    # One batch per StreamHealthScores call; every batch but the last ends the stream,
    # the last is sent on each further call and holds the stream open.
    stream_batches: list[list[Any]] = field(default_factory=list)
    # What ListHealthScores filters and pages through (page_size 0 means 100).
    health_scores: list[Any] = field(default_factory=list)
    # When set, ListHealthScores stamps each score it serves with verdict_time = its
    # own clock minus this many seconds, as a replica derives it when it answers.
    verdict_age: float | None = None
    # When True, ListGaps keeps only the gaps of gap_pages that match the request's
    # symbol, timeframe and time filters, as the server does (pages are kept).
    filter_gaps: bool = False

    async def _enter(self, name: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.calls[name] += 1
        self.requests.setdefault(name, []).append(request)
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata() or ()})
        if self.delay:
            await asyncio.sleep(self.delay)
        failure = self.always.get(name)
        queued = self.failures.get(name)
        if failure is None and queued:
            failure = queued.pop(0)
        if failure is not None:
            code, details, trailers = failure
            await context.abort(code, details, trailing_metadata=trailers)

    async def GetLeader(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._enter("GetLeader", request, context)
        return audit_pb2.GetLeaderResponse(
            leader_id="replica-a",
            leader_address="10.0.0.1:50051",
            epoch=7,
            is_self=True,
            elected_at=ts(1_704_067_000),
            lease_expires_at=ts(1_704_067_015),
        )

    async def GetStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._enter("GetStatus", request, context)
        return audit_pb2.GetStatusResponse(
            replica_id="replica-a",
            role=audit_pb2.ROLE_LEADER,
            auditor_enabled=True,
            last_cycle=cycle(),
            series_count=4,
            version="0.1.0",
            database_reachable=True,
            leader_id="replica-a",
            epoch=7,
        )

    async def RunAudit(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._enter("RunAudit", request, context)
        return audit_pb2.RunAuditResponse(cycle=cycle())

    async def ListGaps(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._enter("ListGaps", request, context)
        index = int(request.page_token.removeprefix("page-") or 0)
        pages = list(self.gap_pages) or [[]]
        token = f"page-{index + 1}" if index + 1 < len(pages) else ""
        found = [g for g in pages[index] if not self.filter_gaps or _gap_matches(g, request)]
        return audit_pb2.ListGapsResponse(gaps=found, next_page_token=token)

    async def ListAnomalies(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._enter("ListAnomalies", request, context)
        index = int(request.page_token.removeprefix("page-") or 0)
        pages = list(self.anomaly_pages) or [[]]
        token = f"page-{index + 1}" if index + 1 < len(pages) else ""
        return audit_pb2.ListAnomaliesResponse(anomalies=pages[index], next_page_token=token)

    async def ListHealthScores(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._enter("ListHealthScores", request, context)
        matching = [
            s
            for s in self.health_scores
            if (not request.symbols or s.symbol in request.symbols)
            and (not request.timeframes or s.timeframe in request.timeframes)
            and (not request.state or s.state == request.state)
        ]
        start = int(request.page_token.removeprefix("offset-") or 0)
        end = start + (request.page_size or 100)
        token = f"offset-{end}" if end < len(matching) else ""
        served = [audit_pb2.HealthScore.FromString(s.SerializeToString()) for s in matching]
        if self.verdict_age is not None:
            for copy in served:
                copy.verdict_time.FromNanoseconds(time.time_ns() - int(self.verdict_age * 1e9))
        return audit_pb2.ListHealthScoresResponse(scores=served[start:end], next_page_token=token)

    async def ResolveDuplicates(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._enter("ResolveDuplicates", request, context)
        removed = 0 if request.dry_run else 1
        return audit_pb2.ResolveDuplicatesResponse(
            duplicate_groups=1,
            surplus_documents=1,
            documents_removed=removed,
            strategy=request.strategy or audit_pb2.STRATEGY_KEEP_NEWEST,
            dry_run=request.dry_run,
            served_by="replica-a",
            epoch=7,
            removal_enabled=True,
            request_id=request.request_id,
            groups_skipped=0 if request.dry_run else 1,
            skipped_groups=[] if request.dry_run else [ts(1_704_070_800)],
            groups=[
                audit_pb2.DuplicateGroup(
                    timestamp=ts(1_704_067_200),
                    kept_id="b",
                    removed_ids=["a"],
                    document_ids=["a", "b"],
                )
            ],
        )

    async def AcknowledgeGaps(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._enter("AcknowledgeGaps", request, context)
        return audit_pb2.AcknowledgeGapsResponse(acknowledgement=_ack(request, "ack-1"))

    async def ListAcknowledgements(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._enter("ListAcknowledgements", request, context)
        made = [_ack(r, f"ack-{i + 1}") for i, r in enumerate(self.requests["AcknowledgeGaps"])]
        return audit_pb2.ListAcknowledgementsResponse(acknowledgements=made)

    async def DeleteAcknowledgement(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._enter("DeleteAcknowledgement", request, context)
        return audit_pb2.DeleteAcknowledgementResponse(
            acknowledgement=audit_pb2.Acknowledgement(id=request.id, reason="gone")
        )

    async def StreamHealthScores(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        await self._enter("StreamHealthScores", request, context)
        batches = self.stream_batches or [[]]
        last = len(batches) == 1
        batch = batches[0] if last else batches.pop(0)
        for item in batch:
            if request.symbols and item.symbol not in request.symbols:
                continue
            yield audit_pb2.StreamHealthScoresResponse(score=item)
        if last:
            await asyncio.Event().wait()  # hold open until the server stops


def _ack(request: Any, ack_id: str) -> Any:
    """The acknowledgement a server would make of ``request``."""
    return audit_pb2.Acknowledgement(
        id=ack_id,
        symbols=request.symbols,
        timeframes=request.timeframes,
        start_time=request.start_time,
        end_time=request.end_time,
        reason=request.reason,
    )


def _gap_matches(g: Any, request: Any) -> bool:
    """Whether gap ``g`` passes ListGaps' filters: symbol, timeframe, ends after
    start_time, starts before end_time, at least min_missing_candles."""
    return (
        (not request.symbol or g.symbol == request.symbol)
        and (not request.timeframe or g.timeframe == request.timeframe)
        and (not request.HasField("start_time") or g.end_time.ToNanoseconds()
             > request.start_time.ToNanoseconds())
        and (not request.HasField("end_time") or g.start_time.ToNanoseconds()
             < request.end_time.ToNanoseconds())
        and g.missing_candles >= request.min_missing_candles
    )  # fmt: skip


class FakeServer:
    """A grpc.aio server for a FakeAuditService on 127.0.0.1 (port 0 picks a free one)."""

    def __init__(
        self,
        service: FakeAuditService,
        port: int = 0,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.service = service
        self.port = port
        self._credentials = credentials
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FakeServer:
        """Start serving (on the same port as before, after a stop)."""
        server = grpc.aio.server(
            options=[
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
            ]
        )
        audit_pb2_grpc.add_AuditServiceServicer_to_server(self.service, server)
        address = f"127.0.0.1:{self.port}"
        if self._credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, self._credentials)
        await server.start()
        self._server = server
        return self

    async def stop(self) -> None:
        """Stop at once, cancelling open calls."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace=None)
