"""The one table from errors to gRPC statuses, used by every RPC and interceptor.

Each error becomes a :class:`Problem`: a status code, today's human message,
and an AIP-193 ``google.rpc.Status`` carrying ``ErrorInfo`` (reason in
UPPER_SNAKE_CASE, domain ``auditsvc``, metadata such as ``field``) and, when a
request field is at fault, ``BadRequest.FieldViolation``. The Status travels
in the ``grpc-status-details-bin`` trailer, where grpcurl, grpc-status and
every other standard client look for it.

Anything not in the table is a bug: it is logged with its traceback and the
caller gets INTERNAL with a generic message, never UNKNOWN and never a trace.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import grpc
from google.rpc import error_details_pb2, status_pb2
from pymongo.errors import ConnectionFailure, ExecutionTimeout, NetworkTimeout

from auditsvc.domain import errors as e

log = logging.getLogger(__name__)

DOMAIN = "auditsvc"
DETAILS_KEY = "grpc-status-details-bin"
LEADER_TRAILER = "x-audit-leader"
_MAX_DETAILS = 512
# Codes whose ``field`` is a request field the caller got wrong.
_BAD_FIELD_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)

# Most specific first: NotLeader and Fenced are Unavailable too.
TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (e.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (e.NotFound, grpc.StatusCode.NOT_FOUND),
    (e.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (e.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (e.Cancelled, grpc.StatusCode.UNAVAILABLE),
    (ConnectionFailure, grpc.StatusCode.UNAVAILABLE),
    (NetworkTimeout, grpc.StatusCode.UNAVAILABLE),
    (ExecutionTimeout, grpc.StatusCode.UNAVAILABLE),
)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One failed call as it goes on the wire."""

    code: grpc.StatusCode
    message: str
    reason: str
    field: str | None = None
    leader: str = ""
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def status(self) -> status_pb2.Status:
        """The AIP-193 google.rpc.Status for this problem."""
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN)
        if self.field:
            info.metadata["field"] = self.field
        if self.leader:
            info.metadata["leader"] = self.leader
        info.metadata.update(self.metadata)
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        status.details.add().Pack(info)
        if self.field and self.code in _BAD_FIELD_CODES:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=self.field, description=self.message, reason=self.reason
            )
            status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        return status

    def trailers(self) -> tuple[tuple[str, str | bytes], ...]:
        """Trailing metadata: the Status details and, when known, the leader's address."""
        items: list[tuple[str, str | bytes]] = [(DETAILS_KEY, self.status().SerializeToString())]
        if self.leader:
            items.append((LEADER_TRAILER, self.leader))
        return tuple(items)

    async def abort(self, context: grpc.aio.ServicerContext) -> None:
        """End the call with this problem (raises grpc's AbortError)."""
        await context.abort(self.code, self.message, trailing_metadata=self.trailers())


def problem_for(exc: BaseException) -> Problem:
    """The wire form of any exception raised while serving a call."""
    for kind, code in TABLE:
        if isinstance(exc, kind):
            if isinstance(exc, e.AuditError):
                return Problem(
                    code,
                    str(exc)[:_MAX_DETAILS],
                    exc.reason,
                    exc.field,
                    leader=getattr(exc, "leader_address", None) or "",
                )
            return Problem(code, "database unavailable; retry later", "DATABASE_UNAVAILABLE")
    log.error("unhandled error in RPC", exc_info=exc)
    return Problem(grpc.StatusCode.INTERNAL, "internal error; see the server log", "INTERNAL")


# Wire-level refusals raised outside the domain (interceptors, forwarding).
def undecodable() -> Problem:
    return Problem(
        grpc.StatusCode.INVALID_ARGUMENT,
        "request is not a valid protobuf message for this method",
        "MALFORMED_REQUEST",
    )


def unauthenticated(message: str) -> Problem:
    return Problem(grpc.StatusCode.UNAUTHENTICATED, message, "UNAUTHENTICATED")


def no_leader(message: str, leader: str = "", reason: str = "NO_LEADER") -> Problem:
    return Problem(grpc.StatusCode.UNAVAILABLE, message, reason, leader=leader)


def unknown_service(message: str) -> Problem:
    return Problem(grpc.StatusCode.NOT_FOUND, message, "UNKNOWN_SERVICE", field="service")
