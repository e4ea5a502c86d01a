"""Domain errors. The transport maps each class to one gRPC status (see
``auditsvc.transport.status_table``); the domain never knows about gRPC.

Every error has a ``reason``: a stable UPPER_SNAKE_CASE word that clients may
branch on (sent as ``google.rpc.ErrorInfo.reason``). The message is for people
and may change; the reason may not.
"""

from __future__ import annotations


class AuditError(Exception):
    """Base class. ``field`` names the request field at fault, when there is one;
    ``reason`` overrides the class's default reason."""

    default_reason = "AUDIT_ERROR"

    def __init__(
        self, message: str, *, field: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self._reason = reason

    @property
    def reason(self) -> str:
        return self._reason or self.default_reason

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidArgument(AuditError):
    """The request is malformed: unknown timeframe, bad range, bad token..."""

    default_reason = "INVALID_ARGUMENT"


class NotFound(AuditError):
    """The request names something that is not configured.

    Without an explicit reason it is ``UNKNOWN_<FIELD>`` in the singular
    (UNKNOWN_SYMBOL for ``symbol`` and ``symbols``), so every raise site agrees
    without repeating it.
    """

    default_reason = "NOT_FOUND"

    @property
    def reason(self) -> str:
        if self._reason:
            return self._reason
        if not self.field:
            return self.default_reason
        return f"UNKNOWN_{self.field.removesuffix('s').upper()}"


class FailedPrecondition(AuditError):
    """The request conflicts with state, e.g. a reused request_id with another body."""

    default_reason = "FAILED_PRECONDITION"


class Unavailable(AuditError):
    """The database, or the leader, cannot be reached right now."""

    default_reason = "UNAVAILABLE"


class NotLeader(Unavailable):
    """Mutating work needs the leader and this replica is not it."""

    default_reason = "NOT_LEADER"

    def __init__(
        self, message: str, *, leader_address: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.leader_address = leader_address


class Fenced(Unavailable):
    """A write was refused because the lease no longer holds our epoch."""

    default_reason = "FENCED"


class ShuttingDown(Unavailable):
    """The server is stopping; the caller should reconnect (to this or another replica)."""

    default_reason = "SHUTTING_DOWN"


class Unauthenticated(AuditError):
    """The call lacks valid credentials."""

    default_reason = "UNAUTHENTICATED"


class Cancelled(AuditError):
    """Work was cancelled, e.g. because leadership was lost mid-cycle."""

    default_reason = "CANCELLED"
