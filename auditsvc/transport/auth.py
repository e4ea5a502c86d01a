"""Bearer-token authentication for the AuditService.

With AUDIT_API_TOKEN (or _FILE) set, the mutating calls (RunAudit,
ResolveDuplicates, AcknowledgeGaps, DeleteAcknowledgement: server.MUTATING) need
``authorization: Bearer <token>``, and so do reads when
AUDIT_READS_REQUIRE_TOKEN=true. Health and reflection stay open so probes and
grpcurl discovery work. The comparison is constant-time and the token never
appears in a status message or a log line.
"""

from __future__ import annotations

import hmac
from typing import Any

import grpc

from auditsvc.transport.status_table import unauthenticated

_DETAILS = "missing or invalid bearer token (authorization metadata)"


class AuthGate:
    """Checks the bearer token of protected methods. Not an interceptor of its own:
    ``CallInterceptor`` asks it once per call, before any forwarding."""

    def __init__(self, token: str, protected: frozenset[str]) -> None:
        self._expected = f"Bearer {token}".encode()
        self._protected = protected
        # One refusing handler per method: built per call, each would be a new
        # key in the call interceptor's per-handler cache.
        self._denials: dict[str, Any] = {}

    def _allowed(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(given, self._expected)
        return False

    def allows(self, details: Any) -> bool:
        """Whether the call may go on: its method is open, or its token is right."""
        return details.method not in self._protected or self._allowed(details.invocation_metadata)

    def denial(self, method: str, handler: Any) -> Any:
        """A handler shaped like ``handler`` (the method's own) answering UNAUTHENTICATED."""
        denial = self._denials.get(method)
        if denial is None:
            denial = self._denials[method] = _denial(handler)
        return denial


def _denial(handler: Any) -> Any:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED."""

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await unauthenticated(_DETAILS).abort(context)

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await unauthenticated(_DETAILS).abort(context)
        yield  # pragma: no cover - makes this an async generator

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            deny_stream, request_deserializer=handler.request_deserializer
        )
    return grpc.unary_unary_rpc_method_handler(
        deny, request_deserializer=handler.request_deserializer
    )
