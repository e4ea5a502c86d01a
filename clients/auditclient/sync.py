"""A small blocking client for scripts and non-asyncio services.

Guarantees: the same options, deadlines, read retries (channel service config),
mutating-call retry rule (only with a caller's ``request_id``) and typed exceptions as
:class:`auditclient.AuditClient`; ``list_gaps`` and ``list_anomalies`` are generators
that follow page tokens.
The health stream is only offered by the async client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from auditpb.v1 import audit_pb2, audit_pb2_grpc

from . import _requests
from ._backoff import RETRYABLE_MUTATION_CODES, backoff_delay, mutation_attempts
from ._channel import sync_channel
from .errors import AuditError, from_rpc_error
from .options import ClientOptions, with_overrides

_T = TypeVar("_T")


class BlockingAuditClient:
    """Blocking client: ``with BlockingAuditClient("host:50051") as client: ...``."""

    def __init__(
        self,
        target: str | None = None,
        *,
        options: ClientOptions | None = None,
        token: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.options: ClientOptions = with_overrides(options, target, token, timeout)
        self._channel: grpc.Channel = sync_channel(self.options)
        self._stub = audit_pb2_grpc.AuditServiceStub(self._channel)

    def __repr__(self) -> str:
        return f"BlockingAuditClient(target={self.options.target!r})"

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def get_leader(self, *, call_timeout: float | None = None) -> audit_pb2.GetLeaderResponse:
        """Return the current lease holder as seen by the answering replica."""
        response: audit_pb2.GetLeaderResponse = self._unary(
            self._stub.GetLeader, audit_pb2.GetLeaderRequest(), call_timeout
        )
        return response

    def get_status(
        self, *, full: bool = False, call_timeout: float | None = None
    ) -> audit_pb2.GetStatusResponse:
        """Return the answering replica's role and the latest stored cycle: its header and
        summary, plus every series report when ``full`` (STATUS_VIEW_FULL)."""
        view = audit_pb2.STATUS_VIEW_FULL if full else audit_pb2.STATUS_VIEW_BASIC
        response: audit_pb2.GetStatusResponse = self._unary(
            self._stub.GetStatus, audit_pb2.GetStatusRequest(view=view), call_timeout
        )
        return response

    def list_gaps(
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
    ) -> Iterator[audit_pb2.Gap]:
        """Yield every matching gap, fetching page after page (each page has its deadline).
        No ``states``: the still-missing OPEN and BACKFILL_REQUESTED gaps."""
        request = _requests.list_gaps_request(
            symbol, timeframe, start, end, min_missing_candles, page_size, states
        )
        yield from self._pages(self._stub.ListGaps, request, lambda p: p.gaps, call_timeout)

    def list_anomalies(
        self,
        symbol: str = "",
        timeframe: str = "",
        rules: Iterable[_requests.RuleLike] = (),
        start: datetime | None = None,
        end: datetime | None = None,
        page_size: int = 0,
        *,
        call_timeout: float | None = None,
    ) -> Iterator[audit_pb2.Anomaly]:
        """Yield every matching candle content finding, page after page (see
        :meth:`auditclient.AuditClient.list_anomalies`)."""
        request = _requests.list_anomalies_request(symbol, timeframe, rules, start, end, page_size)
        yield from self._pages(
            self._stub.ListAnomalies, request, lambda p: p.anomalies, call_timeout
        )

    def list_health_scores(
        self,
        symbols: Sequence[str] = (),
        timeframes: Sequence[str] = (),
        state: audit_pb2.SeriesState = audit_pb2.SERIES_STATE_UNSPECIFIED,
        page_size: int = 0,
        *,
        call_timeout: float | None = None,
    ) -> Iterator[audit_pb2.HealthScore]:
        """Yield every stored score (optionally only in ``state``), page after page."""
        request = _requests.list_health_scores_request(symbols, timeframes, state, page_size)
        yield from self._pages(
            self._stub.ListHealthScores, request, lambda p: p.scores, call_timeout
        )

    def list_acknowledgements(
        self, page_size: int = 0, *, call_timeout: float | None = None
    ) -> Iterator[audit_pb2.Acknowledgement]:
        """Yield every acknowledgement, oldest first, page after page."""
        request = audit_pb2.ListAcknowledgementsRequest(page_size=page_size)
        yield from self._pages(
            self._stub.ListAcknowledgements, request, lambda p: p.acknowledgements, call_timeout
        )

    def run_audit(
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
        response: audit_pb2.RunAuditResponse = self._mutate(
            self._stub.RunAudit, request, request_id, call_timeout
        )
        return response

    def resolve_duplicates(
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
        response: audit_pb2.ResolveDuplicatesResponse = self._mutate(
            self._stub.ResolveDuplicates, request, request_id, call_timeout
        )
        return response

    def acknowledge_gaps(
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
        reply: audit_pb2.AcknowledgeGapsResponse = self._mutate(
            self._stub.AcknowledgeGaps, request, request_id, call_timeout
        )
        return reply.acknowledgement

    def delete_acknowledgement(
        self, ack_id: str, *, call_timeout: float | None = None
    ) -> audit_pb2.Acknowledgement:
        """Delete one acknowledgement; never retried (a retry would be NOT_FOUND)."""
        request = audit_pb2.DeleteAcknowledgementRequest(id=ack_id)
        reply: audit_pb2.DeleteAcknowledgementResponse = self._unary(
            self._stub.DeleteAcknowledgement, request, call_timeout
        )
        return reply.acknowledgement

    def _pages(
        self,
        method: Callable[..., Any],
        request: Any,
        items: Callable[[Any], Iterable[_T]],
        call_timeout: float | None,
    ) -> Iterator[_T]:
        """Follows ``next_page_token`` to the last page, each page with its own deadline;
        a token the server repeats raises AuditError instead of asking for it again."""
        while True:
            page = self._unary(method, request, call_timeout)
            yield from items(page)
            token = str(page.next_page_token)
            if not token:
                return
            if token == request.page_token:
                raise AuditError(None, f"server repeated page token {token!r}")
            request.page_token = token

    def _unary(self, method: Callable[..., _T], request: object, call_timeout: float | None) -> _T:
        try:
            return method(
                request,
                timeout=self.options.timeout if call_timeout is None else call_timeout,
                metadata=self.options.call_metadata(),
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    def _mutate(
        self,
        method: Callable[..., _T],
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
                return self._unary(method, request, max(remaining, 0.001))
            except AuditError as exc:
                attempt += 1
                if exc.code not in RETRYABLE_MUTATION_CODES or attempt >= attempts:
                    raise
                delay = backoff_delay(
                    attempt - 1, self.options.retry_initial_backoff, self.options.retry_max_backoff
                )
                if time.monotonic() + delay >= deadline:
                    raise
                time.sleep(delay)
