"""Typed exceptions for auditsvc RPC failures.

Guarantees:

* One table, ``ERRORS_BY_CODE``, maps each ``grpc.StatusCode`` to an exception class;
  a code that is not in it becomes a plain :class:`AuditError`.
* ``UNAVAILABLE`` whose details say "no leader" or "not leader" becomes :class:`NoLeader`
  (still a subclass of :class:`Unavailable`, so ``except Unavailable`` catches it).
* UNAVAILABLE whose ``reason`` is NO_LEADER, NOT_LEADER or LEADER_UNREACHABLE is a
  :class:`NoLeader` too, whatever the wording.
* Every exception carries ``code``, ``details`` and ``leader_address``; the last comes from
  the trailing metadata key ``x-audit-leader`` and is ``None`` when the server sent none.
* Every exception carries ``reason`` and ``field`` from the AIP-193 details the server sends
  in the ``grpc-status-details-bin`` trailer (``google.rpc.ErrorInfo`` of domain
  ``auditsvc``; ``BadRequest.FieldViolation``): ``reason`` is a stable UPPER_SNAKE_CASE
  word such as ``UNKNOWN_SYMBOL`` to branch on, ``field`` the request field at fault.
  Both are ``None`` when the failure did not come from auditsvc (e.g. connection refused)
  or the details cannot be parsed.
* :func:`from_rpc_error` accepts both ``grpc.aio.AioRpcError`` and sync ``grpc.RpcError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

LEADER_METADATA_KEY = "x-audit-leader"
"""Trailing metadata key in which the server names the leader's ``host:port``."""

DETAILS_METADATA_KEY = "grpc-status-details-bin"
"""Trailing metadata key of the serialized ``google.rpc.Status`` (AIP-193 details)."""

ERROR_DOMAIN = "auditsvc"
"""``ErrorInfo.domain`` of errors raised by auditsvc itself."""

_NO_LEADER_MARKERS = ("no leader", "not leader")
_NO_LEADER_REASONS = frozenset({"NO_LEADER", "NOT_LEADER", "LEADER_UNREACHABLE"})


class AuditError(Exception):
    """An auditsvc RPC failed; base class of every error this client raises."""

    def __init__(
        self,
        code: grpc.StatusCode | None,
        details: str,
        leader_address: str | None = None,
        *,
        reason: str | None = None,
        field: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.leader_address = leader_address
        self.reason = reason
        """``ErrorInfo.reason`` (UPPER_SNAKE_CASE), or None without auditsvc details."""
        self.field = field
        """The request field at fault, or None."""
        self.metadata: Mapping[str, str] = dict(metadata or {})
        """``ErrorInfo.metadata`` as sent by the server."""

    def __str__(self) -> str:
        name = self.code.name if self.code is not None else "UNKNOWN"
        text = f"{name}: {self.details}" if self.details else name
        if self.leader_address:
            text += f" (leader: {self.leader_address})"
        return text


class InvalidArgument(AuditError):
    """The server rejected the request's arguments (INVALID_ARGUMENT)."""


class NotFound(AuditError):
    """The requested entity does not exist (NOT_FOUND)."""


class FailedPrecondition(AuditError):
    """The server is not in a state to perform the request (FAILED_PRECONDITION)."""


class Unauthenticated(AuditError):
    """The bearer token is missing or wrong (UNAUTHENTICATED)."""


class Unavailable(AuditError):
    """The server could not be reached or is shutting down (UNAVAILABLE)."""


class NoLeader(Unavailable):
    """UNAVAILABLE because no leader is known, or the answering replica is not it."""


class DeadlineExceeded(AuditError):
    """The call's deadline passed before the server answered (DEADLINE_EXCEEDED)."""


class ResourceExhausted(AuditError):
    """The server is out of a resource or rate limited the call (RESOURCE_EXHAUSTED)."""


ERRORS_BY_CODE: Mapping[grpc.StatusCode, type[AuditError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def _leader_from(metadata: Iterable[Any] | None) -> str | None:
    """Return the ``x-audit-leader`` value from aio or sync trailing metadata."""
    for item in metadata or ():
        key, value = item[0], item[1]
        if str(key).lower() == LEADER_METADATA_KEY and value:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _details_from(metadata: Iterable[Any] | None) -> tuple[str | None, str | None, dict[str, str]]:
    """Return (reason, field, metadata) from the AIP-193 trailer; Nones when absent."""
    for item in metadata or ():
        key, value = item[0], item[1]
        if str(key).lower() != DETAILS_METADATA_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None, None, {}
        reason: str | None = None
        field: str | None = None
        extra: dict[str, str] = {}
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                reason, extra = info.reason or None, dict(info.metadata)
                field = extra.get("field") or field
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad) and bad.field_violations:
                field = field or bad.field_violations[0].field or None
        return reason, field, extra
    return None, None, {}


def error_class(
    code: grpc.StatusCode | None, details: str, reason: str | None = None
) -> type[AuditError]:
    """Return the exception class for a status code, its details and its reason."""
    if code is grpc.StatusCode.UNAVAILABLE and (
        reason in _NO_LEADER_REASONS
        or any(marker in details.lower() for marker in _NO_LEADER_MARKERS)
    ):
        return NoLeader
    if code is None:
        return AuditError
    return ERRORS_BY_CODE.get(code, AuditError)


def from_rpc_error(error: grpc.aio.AioRpcError | grpc.RpcError) -> AuditError:
    """Convert a failed gRPC call (aio or sync) into the matching :class:`AuditError`."""
    code: grpc.StatusCode | None = getattr(error, "code", lambda: None)()
    details: str = getattr(error, "details", lambda: "")() or ""
    trailing: Iterable[Any] | None = getattr(error, "trailing_metadata", lambda: None)()
    reason, field, metadata = _details_from(trailing)
    cls = error_class(code, details, reason)
    return cls(code, details, _leader_from(trailing), reason=reason, field=field, metadata=metadata)
