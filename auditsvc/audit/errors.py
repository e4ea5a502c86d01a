"""Domain errors. The transport maps each class to one gRPC status (see
``auditsvc.errors``); the domain never knows about gRPC.
"""

from __future__ import annotations


class AuditError(Exception):
    """Base class. ``field`` names the request field at fault, when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidArgument(AuditError):
    """The request is malformed: unknown timeframe, bad range, bad token..."""


class NotFound(AuditError):
    """The request names something that is not configured."""


class FailedPrecondition(AuditError):
    """The request conflicts with state, e.g. a reused request_id with another body."""


class Unavailable(AuditError):
    """The database, or the leader, cannot be reached right now."""


class NotLeader(Unavailable):
    """Mutating work needs the leader and this replica is not it."""

    def __init__(self, message: str, *, leader_address: str | None = None) -> None:
        super().__init__(message)
        self.leader_address = leader_address


class Fenced(Unavailable):
    """A write was refused because the lease no longer holds our epoch."""


class Unauthenticated(AuditError):
    """The call lacks valid credentials."""


class Cancelled(AuditError):
    """Work was cancelled, e.g. because leadership was lost mid-cycle."""
