"""AuditService over gRPC: decode the request, call the service, encode the
reply. Errors go through the one table in ``auditsvc.transport.status_table``.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from auditpb.v1 import audit_pb2 as pb
from auditpb.v1 import audit_pb2_grpc as pb_grpc
from auditsvc.domain.records import Status
from auditsvc.transport import convert
from auditsvc.transport.status_table import problem_for
from auditsvc.usecases.audit_service import AuditService

R = TypeVar("R")


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """End the call with the table's status, AIP-193 details and leader hint."""
    await problem_for(exc).abort(context)


def _unary(
    method: Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc)
            raise AssertionError("unreachable") from exc

    return wrapper


class AuditServicer(pb_grpc.AuditServiceServicer):  # type: ignore[misc]
    def __init__(self, service: AuditService) -> None:
        self._service = service
        # The last reply per view (FULL or not): GetStatus answers the same cycle
        # many times between audits, and building the reply each time is most of
        # its cost. Reused while the status is equal (the reply is a function of
        # it); the message is only ever serialized after that.
        self._reply: dict[bool, tuple[Status, pb.GetStatusResponse]] = {}

    @_unary
    async def GetLeader(self, request: pb.GetLeaderRequest, context: Any) -> pb.GetLeaderResponse:
        return convert.leader_pb(await self._service.leader())

    @_unary
    async def GetStatus(self, request: pb.GetStatusRequest, context: Any) -> pb.GetStatusResponse:
        full = convert.full_view(request)
        status = await self._service.status(full=full)
        # Status equality compares its fields as a tuple, which takes the unchanged
        # cycle (the same object between reads) by identity, not report by report.
        cached = self._reply.get(full)
        if cached is not None and cached[0] == status:
            return cached[1]
        reply = convert.status_pb(status)
        if status.last_cycle is not None:
            self._reply[full] = (status, reply)
        return reply

    @_unary
    async def RunAudit(self, request: pb.RunAuditRequest, context: Any) -> pb.RunAuditResponse:
        cycle = await self._service.run_audit(
            list(request.symbols),
            list(request.timeframes),
            convert.ms_from(request, "start_time"),
            convert.ms_from(request, "end_time"),
            request_id=request.request_id,
        )
        return pb.RunAuditResponse(cycle=convert.cycle_pb(cycle))

    @_unary
    async def ListGaps(self, request: pb.ListGapsRequest, context: Any) -> pb.ListGapsResponse:
        gaps, token = await self._service.list_gaps(
            request.symbol,
            request.timeframe,
            convert.ms_from(request, "start_time"),
            convert.ms_from(request, "end_time"),
            convert.count_from(request.min_missing_candles),
            request.page_size,
            request.page_token,
            convert.gap_states_from(request.states),
        )
        return pb.ListGapsResponse(gaps=[convert.gap_pb(g) for g in gaps], next_page_token=token)

    @_unary
    async def ListHealthScores(
        self, request: pb.ListHealthScoresRequest, context: Any
    ) -> pb.ListHealthScoresResponse:
        scores, token = await self._service.list_health_scores(
            list(request.symbols),
            list(request.timeframes),
            convert.state_from(request.state),
            request.page_size,
            request.page_token,
        )
        return pb.ListHealthScoresResponse(
            scores=[convert.score_pb(r) for r in scores], next_page_token=token
        )

    @_unary
    async def ListAnomalies(
        self, request: pb.ListAnomaliesRequest, context: Any
    ) -> pb.ListAnomaliesResponse:
        found, token = await self._service.list_anomalies(
            request.symbol,
            request.timeframe,
            convert.rules_from(request.rules),
            convert.ms_from(request, "start_time"),
            convert.ms_from(request, "end_time"),
            request.page_size,
            request.page_token,
        )
        return pb.ListAnomaliesResponse(
            anomalies=[convert.anomaly_pb(a) for a in found], next_page_token=token
        )

    @_unary
    async def ResolveDuplicates(
        self, request: pb.ResolveDuplicatesRequest, context: Any
    ) -> pb.ResolveDuplicatesResponse:
        report = await self._service.resolve_duplicates(
            request.symbol,
            request.timeframe,
            convert.ms_from(request, "start_time"),
            convert.ms_from(request, "end_time"),
            convert.strategy_from(request.strategy),
            request.dry_run,
            request.request_id,
        )
        return convert.duplicates_pb(report)

    @_unary
    async def AcknowledgeGaps(
        self, request: pb.AcknowledgeGapsRequest, context: Any
    ) -> pb.AcknowledgeGapsResponse:
        ack = await self._service.acknowledgements.acknowledge(
            list(request.symbols),
            list(request.timeframes),
            convert.ms_from(request, "start_time"),
            convert.ms_from(request, "end_time"),
            request.reason,
            request.request_id,
        )
        return pb.AcknowledgeGapsResponse(acknowledgement=convert.ack_pb(ack))

    @_unary
    async def ListAcknowledgements(
        self, request: pb.ListAcknowledgementsRequest, context: Any
    ) -> pb.ListAcknowledgementsResponse:
        acks, token = await self._service.acknowledgements.page(
            request.page_size, request.page_token
        )
        return pb.ListAcknowledgementsResponse(
            acknowledgements=[convert.ack_pb(a) for a in acks], next_page_token=token
        )

    @_unary
    async def DeleteAcknowledgement(
        self, request: pb.DeleteAcknowledgementRequest, context: Any
    ) -> pb.DeleteAcknowledgementResponse:
        ack = await self._service.acknowledgements.delete(request.id)
        return pb.DeleteAcknowledgementResponse(acknowledgement=convert.ack_pb(ack))

    async def StreamHealthScores(
        self, request: pb.StreamHealthScoresRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamHealthScoresResponse]:
        try:
            stream = self._service.health_scores(list(request.symbols), list(request.timeframes))
            async for record in stream:
                yield pb.StreamHealthScoresResponse(score=convert.score_pb(record))
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc)
