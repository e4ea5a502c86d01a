"""The asyncio client of auditsvc.

Guarantees:

* Every unary call has a deadline (``ClientOptions.timeout`` unless ``call_timeout=`` is given);
  a mutating call's retries all fit inside that one deadline.
* Failures raise the typed exceptions of :mod:`auditclient.errors`, never raw gRPC errors.
* Reads (GetLeader, GetStatus, ListGaps) are retried on UNAVAILABLE by the channel's
  service config. RunAudit and ResolveDuplicates send a fresh uuid4 ``request_id`` and
  are sent once; only when the caller passes ``request_id`` are they retried on
  UNAVAILABLE (at most ``mutating_max_attempts`` attempts, with backoff).
* :meth:`AuditClient.list_gaps` and :meth:`AuditClient.list_anomalies` follow
  ``next_page_token`` until the last page.
* :meth:`AuditClient.watch_health` reconnects after UNAVAILABLE, stream end or a lost
  connection, with capped, jittered exponential backoff, never yields a score older
  than one already yielded for the same series, nor a replayed one (see
  :mod:`auditclient._scores`), and reports each outage and return to ``on_connection``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import grpc.aio

from auditpb.v1 import audit_pb2, audit_pb2_grpc

from . import _requests
from ._backoff import RETRYABLE_MUTATION_CODES, backoff_delay, mutation_attempts
from ._channel import aio_channel
from ._scores import LatestScores
from ._watch import ConnectionTracker, StreamEvent
from .errors import AuditError, from_rpc_error
from .options import ClientOptions, with_overrides

_T = TypeVar("_T")

# Stream outcomes after which watch_health reconnects instead of raising.
_RECONNECT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.CANCELLED,
    }
)


class AuditClient:
    """Async client: ``async with AuditClient("host:50051") as client: ...``."""

    def __init__(
        self,
        target: str | None = None,
        *,
        options: ClientOptions | None = None,
        token: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.options: ClientOptions = with_overrides(options, target, token, timeout)
        self._channel: grpc.aio.Channel | None = None
        self._stub: audit_pb2_grpc.AuditServiceStub | None = None

    def __repr__(self) -> str:
        return f"AuditClient(target={self.options.target!r}, connected={self._channel is not None})"

    async def connect(self) -> Self:
        """Open the channel (idempotent); the TCP connection is made on the first call."""
        if self._channel is None:
            self._channel = aio_channel(self.options)
            self._stub = audit_pb2_grpc.AuditServiceStub(self._channel)
        return self

    async def close(self, grace: float | None = None) -> None:
        """Close the channel, cancelling calls still running after ``grace`` seconds."""
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close(grace)

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def stub(self) -> audit_pb2_grpc.AuditServiceStub:
        """The generated stub; raises RuntimeError before :meth:`connect`."""
        if self._stub is None:
            raise RuntimeError("AuditClient is not connected: use `async with` or connect()")
        return self._stub

    # -- reads ---------------------------------------------------------------------------

    async def get_leader(self, *, call_timeout: float | None = None) -> audit_pb2.GetLeaderResponse:
        """Return the current lease holder as seen by the answering replica."""
        return await self._unary(self.stub.GetLeader, audit_pb2.GetLeaderRequest(), call_timeout)

    async def get_status(
        self, *, full: bool = False, call_timeout: float | None = None
    ) -> audit_pb2.GetStatusResponse:
        """Return the answering replica's role and the latest stored cycle: its header and
        summary, plus every series report when ``full`` (STATUS_VIEW_FULL)."""
        view = audit_pb2.STATUS_VIEW_FULL if full else audit_pb2.STATUS_VIEW_BASIC
        return await self._unary(
            self.stub.GetStatus, audit_pb2.GetStatusRequest(view=view), call_timeout
        )

    async def list_gaps(
        self,
        symbol: str = "",
        timeframe: str = "",
        start: datetime | None = None,
        end: datetime | None = None,
        min_missing_candles: int = 0,
        page_size: int = 0,
        *,
        states: Iterable[_requests.GapStateLike] = (),
        call_timeout: float | None = None,
    ) -> AsyncIterator[audit_pb2.Gap]:
        """Yield every matching gap, fetching page after page (each page has its deadline).
        No ``states``: the still-missing OPEN and BACKFILL_REQUESTED gaps."""
        request = _requests.list_gaps_request(
            symbol, timeframe, start, end, min_missing_candles, page_size, states
        )
        pages = self._pages(self.stub.ListGaps, request, lambda p: p.gaps, call_timeout)
        async for gap in pages:
            yield gap

    async def list_anomalies(
        self,
        symbol: str = "",
        timeframe: str = "",
        rules: Iterable[_requests.RuleLike] = (),
        start: datetime | None = None,
        end: datetime | None = None,
        page_size: int = 0,
        *,
        call_timeout: float | None = None,
    ) -> AsyncIterator[audit_pb2.Anomaly]:
        """Yield every matching candle content finding, page after page (each page has
        its deadline). ``rules``: names such as ``"price_spike"`` or enum values; none
        means every rule. ``start``/``end`` bound the candles' open times."""
        request = _requests.list_anomalies_request(symbol, timeframe, rules, start, end, page_size)
        pages = self._pages(self.stub.ListAnomalies, request, lambda p: p.anomalies, call_timeout)
        async for anomaly in pages:
            yield anomaly

    async def list_health_scores(
        self,
        symbols: Sequence[str] = (),
        timeframes: Sequence[str] = (),
        state: audit_pb2.SeriesState = audit_pb2.SERIES_STATE_UNSPECIFIED,
        page_size: int = 0,
        *,
        call_timeout: float | None = None,
    ) -> AsyncIterator[audit_pb2.HealthScore]:
        """Yield every stored score (optionally only in ``state``), page after page.

        Any replica answers; a gate checks ``score.state == SERIES_STATE_LIVE``.
        """
        request = _requests.list_health_scores_request(symbols, timeframes, state, page_size)
        pages = self._pages(self.stub.ListHealthScores, request, lambda p: p.scores, call_timeout)
        async for score in pages:
            yield score

    async def list_acknowledgements(
        self, page_size: int = 0, *, call_timeout: float | None = None
    ) -> AsyncIterator[audit_pb2.Acknowledgement]:
        """Yield every acknowledgement, oldest first, page after page."""
        request = audit_pb2.ListAcknowledgementsRequest(page_size=page_size)
        pages = self._pages(
            self.stub.ListAcknowledgements, request, lambda p: p.acknowledgements, call_timeout
        )
        async for ack in pages:
            yield ack

    # -- mutations -----------------------------------------------------------------------

    async def run_audit(
        self,
        symbols: Iterable[str] = (),
        timeframes: Iterable[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
        request_id: str | None = None,
        *,
        call_timeout: float | None = None,
    ) -> audit_pb2.RunAuditResponse:
        """Audit the selected series now; retried on UNAVAILABLE only with ``request_id``."""
        request = _requests.run_audit_request(
            symbols, timeframes, start, end, request_id or _requests.new_request_id()
        )
        return await self._mutate(self.stub.RunAudit, request, request_id, call_timeout)

    async def resolve_duplicates(
        self,
        symbol: str,
        timeframe: str,
        start: datetime | None = None,
        end: datetime | None = None,
        strategy: _requests.StrategyLike = None,
        dry_run: bool = True,
        request_id: str | None = None,
        *,
        call_timeout: float | None = None,
    ) -> audit_pb2.ResolveDuplicatesResponse:
        """Report (``dry_run=True``, the default) or remove duplicate candles."""
        request = _requests.resolve_duplicates_request(
            symbol,
            timeframe,
            start,
            end,
            strategy,
            dry_run,
            request_id or _requests.new_request_id(),
        )
        return await self._mutate(self.stub.ResolveDuplicates, request, request_id, call_timeout)

    async def acknowledge_gaps(
        self,
        start: datetime,
        end: datetime,
        reason: str,
        symbols: Iterable[str] = (),
        timeframes: Iterable[str] = (),
        request_id: str | None = None,
        *,
        call_timeout: float | None = None,
    ) -> audit_pb2.Acknowledgement:
        """Acknowledge a known outage (empty symbols/timeframes: all); retried on
        UNAVAILABLE only with ``request_id``."""
        request = _requests.acknowledge_gaps_request(
            symbols, timeframes, start, end, reason, request_id or _requests.new_request_id()
        )
        reply: audit_pb2.AcknowledgeGapsResponse = await self._mutate(
            self.stub.AcknowledgeGaps, request, request_id, call_timeout
        )
        return reply.acknowledgement

    async def delete_acknowledgement(
        self, ack_id: str, *, call_timeout: float | None = None
    ) -> audit_pb2.Acknowledgement:
        """Delete one acknowledgement; never retried (a retry would be NOT_FOUND)."""
        request = audit_pb2.DeleteAcknowledgementRequest(id=ack_id)
        reply: audit_pb2.DeleteAcknowledgementResponse = await self._unary(
            self.stub.DeleteAcknowledgement, request, call_timeout
        )
        return reply.acknowledgement

    # -- stream --------------------------------------------------------------------------

    async def watch_health(
        self,
        symbols: Iterable[str] = (),
        timeframes: Iterable[str] = (),
        *,
        max_reconnects: int | None = None,
        on_connection: Callable[[StreamEvent], object] | None = None,
    ) -> AsyncIterator[audit_pb2.HealthScore]:
        """Yield health scores as they change, reconnecting until cancelled.

        After ``max_reconnects`` consecutive failed reconnects (``None``: never give up)
        the last error is raised. Errors other than a lost connection (e.g.
        Unauthenticated, InvalidArgument) are raised at once.

        ``on_connection``, when given, is called in the iterating task with a
        :class:`StreamEvent`: ``disconnected`` once when the stream is lost (or cannot
        be opened), ``reconnected`` once when a reopened stream delivers again. It must
        not block; what it raises ends the iteration.
        """
        request = _requests.health_request(symbols, timeframes)
        latest = LatestScores()
        tracker = ConnectionTracker(on_connection)
        failures = 0
        while True:
            call = self.stub.StreamHealthScores(
                request,
                timeout=self.options.stream_timeout,
                metadata=self.options.call_metadata(),
            )
            error: AuditError | None = None
            try:
                async for response in call:
                    failures = 0
                    tracker.message()
                    if latest.admit(response.score):
                        yield response.score
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                    continue  # the stream's own deadline passed: reopen at once
                if exc.code() not in _RECONNECT_CODES:
                    raise from_rpc_error(exc) from exc
                error = from_rpc_error(exc)
            finally:
                call.cancel()
            if self._stub is None:
                return  # the client was closed under us
            error = error or AuditError(None, "health stream ended")
            tracker.lost(error)
            if max_reconnects is not None and failures >= max_reconnects:
                raise error
            await asyncio.sleep(
                backoff_delay(
                    failures,
                    self.options.reconnect_initial_backoff,
                    self.options.reconnect_max_backoff,
                )
            )
            failures += 1

    # -- plumbing ------------------------------------------------------------------------

    async def _pages(
        self,
        method: Callable[..., Awaitable[Any]],
        request: Any,
        items: Callable[[Any], Iterable[_T]],
        call_timeout: float | None,
    ) -> AsyncIterator[_T]:
        """Follows ``next_page_token`` to the last page, each page with its own deadline;
        a token the server repeats raises AuditError instead of asking for it again."""
        while True:
            page = await self._unary(method, request, call_timeout)
            for item in items(page):
                yield item
            token = str(page.next_page_token)
            if not token:
                return
            if token == request.page_token:
                raise AuditError(None, f"server repeated page token {token!r}")
            request.page_token = token

    async def _unary(
        self,
        method: Callable[..., Awaitable[_T]],
        request: object,
        call_timeout: float | None,
    ) -> _T:
        try:
            return await method(
                request,
                timeout=self.options.timeout if call_timeout is None else call_timeout,
                metadata=self.options.call_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc

    async def _mutate(
        self,
        method: Callable[..., Awaitable[_T]],
        request: object,
        caller_request_id: str | None,
        call_timeout: float | None,
    ) -> _T:
        attempts = mutation_attempts(caller_request_id, self.options.mutating_max_attempts)
        deadline = time.monotonic() + (
            self.options.timeout if call_timeout is None else call_timeout
        )
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                return await self._unary(method, request, max(remaining, 0.001))
            except AuditError as exc:
                attempt += 1
                if exc.code not in RETRYABLE_MUTATION_CODES or attempt >= attempts:
                    raise
                delay = backoff_delay(
                    attempt - 1, self.options.retry_initial_backoff, self.options.retry_max_backoff
                )
                if time.monotonic() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
