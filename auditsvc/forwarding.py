"""Follower → leader forwarding of mutating calls.

On a replica that is not leading, RunAudit and ResolveDuplicates are relayed
as raw bytes to the leader's advertised address over one pooled channel per
address (never a channel per call). The caller's deadline propagates minus a
small margin, and so does its metadata (auth included). Forwarded calls carry
``x-audit-forwarded-by``; a replica receiving one while not leading answers
UNAVAILABLE "not leader" and never forwards a second hop, so two replicas
with stale views cannot bounce a call between them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from auditsvc.leadership import Leadership
from auditsvc.metrics import Metrics

log = logging.getLogger(__name__)

FORWARDED_BY = "x-audit-forwarded-by"
LEADER_TRAILER = "x-audit-leader"
_MARGIN_S = 0.05
_DEFAULT_DEADLINE_S = 30.0
# Connection-level headers belong to each hop, not to the call.
_HOP_HEADERS = frozenset(
    {"user-agent", "grpc-timeout", "grpc-accept-encoding", "te", "content-type"}
)


def _identity(data: bytes) -> bytes:
    return data


class Forwarder:
    def __init__(
        self,
        replica_id: str,
        metrics: Metrics,
        credentials: grpc.ChannelCredentials | None = None,
        options: tuple[tuple[str, Any], ...] = (),
    ) -> None:
        self._replica_id = replica_id
        self._metrics = metrics
        self._credentials = credentials
        self._options = options
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.channels_opened = 0

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address, options=self._options)
            else:
                channel = grpc.aio.secure_channel(address, self._credentials, options=self._options)
            self._channels[address] = channel
            self.channels_opened += 1
        return channel

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    async def relay(
        self, method: str, address: str, request: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        name = method.rsplit("/", 1)[-1]
        remaining = context.time_remaining()
        timeout = _DEFAULT_DEADLINE_S if remaining is None else max(remaining - _MARGIN_S, 0.001)
        metadata = [
            (k, v)
            for k, v in (context.invocation_metadata() or ())
            if k not in _HOP_HEADERS and not k.startswith(":") and k != FORWARDED_BY
        ]
        metadata.append((FORWARDED_BY, self._replica_id))
        call = self.channel(address).unary_unary(
            method, request_serializer=_identity, response_deserializer=_identity
        )
        try:
            reply: bytes = await call(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            self._metrics.forwarded.labels(name, exc.code().name).inc()
            trailers = [(k, v) for k, v in (exc.trailing_metadata() or ()) if k == LEADER_TRAILER]
            if trailers:
                context.set_trailing_metadata(tuple(trailers))
            await context.abort(exc.code(), exc.details() or "forwarded call failed")
            raise AssertionError("unreachable") from exc
        self._metrics.forwarded.labels(name, "OK").inc()
        return reply


class ForwardingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Routes mutating methods to the leader when this replica is not leading."""

    def __init__(
        self,
        mutating: frozenset[str],
        leadership: Leadership,
        forwarder: Forwarder,
        leader_address: Callable[[], str | None],
    ) -> None:
        self._mutating = mutating
        self._leadership = leadership
        self._forwarder = forwarder
        self._leader_address = leader_address

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        method: str = details.method
        if method not in self._mutating or self._leadership.term() is not None:
            return await continuation(details)
        forwarded_by = dict(details.invocation_metadata or ()).get(FORWARDED_BY)
        # Where there is one, the last leader seen goes in the trailer, live or not.
        last_known = self._leadership.last_seen_address()
        forwarder = self._forwarder
        leader = self._leader_address()

        async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if last_known:
                context.set_trailing_metadata(((LEADER_TRAILER, last_known),))
            if forwarded_by:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"not leader (forwarded by {forwarded_by}; no second hop)",
                )
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "no leader is known; retry after the election"
            )
            raise AssertionError("unreachable")

        async def relay(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            assert leader is not None
            return await forwarder.relay(method, leader, request, context)

        behaviour = refuse if forwarded_by or not leader else relay
        return grpc.unary_unary_rpc_method_handler(behaviour)
