"""The one table from domain errors to gRPC status codes, used by every RPC.

Anything not in the table is a bug: it is logged with its traceback and the
caller gets INTERNAL with a generic message, never UNKNOWN and never a trace.
"""

from __future__ import annotations

import logging

import grpc
from pymongo.errors import ConnectionFailure, ExecutionTimeout, NetworkTimeout

from auditsvc.audit import errors as e

log = logging.getLogger(__name__)

_MAX_DETAILS = 512

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


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    for kind, code in TABLE:
        if isinstance(exc, kind):
            if isinstance(exc, e.AuditError):
                return code, str(exc)[:_MAX_DETAILS]
            return code, "database unavailable; retry later"
    log.error("unhandled error in RPC", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error; see the server log"


def leader_hint(exc: BaseException) -> str:
    """The address to put in the ``x-audit-leader`` trailer, if any."""
    return getattr(exc, "leader_address", None) or ""
