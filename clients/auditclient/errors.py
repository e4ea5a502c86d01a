"""Typed exceptions for auditsvc RPC failures.

Guarantees:

* One table, ``ERRORS_BY_CODE``, maps each ``grpc.StatusCode`` to an exception class;
  a code that is not in it becomes a plain :class:`AuditError`.
* ``UNAVAILABLE`` whose details say "no leader" or "not leader" becomes :class:`NoLeader`
  (still a subclass of :class:`Unavailable`, so ``except Unavailable`` catches it).
* Every exception carries ``code``, ``details`` and ``leader_address``; the last comes from
  the trailing metadata key ``x-audit-leader`` and is ``None`` when the server sent none.
* :func:`from_rpc_error` accepts both ``grpc.aio.AioRpcError`` and sync ``grpc.RpcError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc

LEADER_METADATA_KEY = "x-audit-leader"
"""Trailing metadata key in which the server names the leader's ``host:port``."""

_NO_LEADER_MARKERS = ("no leader", "not leader")


class AuditError(Exception):
    """An auditsvc RPC failed; base class of every error this client raises."""

    def __init__(
        self,
        code: grpc.StatusCode | None,
        details: str,
        leader_address: str | None = None,
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.leader_address = leader_address

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


def error_class(code: grpc.StatusCode | None, details: str) -> type[AuditError]:
    """Return the exception class for a status code and its details."""
    if code is grpc.StatusCode.UNAVAILABLE and any(
        marker in details.lower() for marker in _NO_LEADER_MARKERS
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
    cls = error_class(code, details)
    return cls(code, details, _leader_from(trailing))
