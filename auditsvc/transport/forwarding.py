"""Follower → leader forwarding of mutating calls.

On a replica that is not leading, the mutating calls (RunAudit,
ResolveDuplicates, AcknowledgeGaps, DeleteAcknowledgement: server.MUTATING) are relayed
as raw bytes to the leader's advertised address over one pooled channel per
address (never a channel per call). The caller's deadline propagates minus a
small margin, and so does its metadata (auth included). Forwarded calls carry
``x-audit-forwarded-by``; a replica receiving one while not leading answers
UNAVAILABLE "not leader" and never forwards a second hop, so two replicas
with stale views cannot bounce a call between them.

A leader that cannot be reached (SIGKILLed, partitioned) is reported as
UNAVAILABLE "no leader reachable" with reason LEADER_UNREACHABLE, never as
grpc's bare "failed to connect", so clients map it like any no-leader answer.
``x-audit-leader`` names a leader only while its lease is believed live.
Channels to addresses that are no longer the leader are closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc

from auditsvc.leadership.term import Leadership
from auditsvc.ops.metrics import Metrics
from auditsvc.transport.status_table import DETAILS_KEY, LEADER_TRAILER, Problem, no_leader

log = logging.getLogger(__name__)

FORWARDED_BY = "x-audit-forwarded-by"
_MARGIN_S = 0.05
# Calls already on a deposed leader's channel get this long before it closes.
_RETIRE_GRACE_S = 5.0
_DEFAULT_DEADLINE_S = 30.0
# Connection-level headers belong to each hop, not to the call.
_HOP_HEADERS = frozenset(
    {"user-agent", "grpc-timeout", "grpc-accept-encoding", "te", "content-type"}
)


def _identity(data: bytes) -> bytes:
    return data


class Forwarder:
    """Relays raw requests to the leader over one channel per leader address.

    Only the current leader's channel stays open: asking for another address
    retires the others (closed after ``retire_grace_s``, so calls already on
    them may finish), and :meth:`close` closes everything.
    """

    def __init__(
        self,
        replica_id: str,
        metrics: Metrics,
        credentials: grpc.ChannelCredentials | None = None,
        options: tuple[tuple[str, Any], ...] = (),
        retire_grace_s: float = _RETIRE_GRACE_S,
    ) -> None:
        self._replica_id = replica_id
        self._metrics = metrics
        self._credentials = credentials
        self._options = options
        self._retire_grace_s = retire_grace_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self.channels_opened = 0
        self.channels_closed = 0

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            for old in list(self._channels):
                self._retire(old)
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address, options=self._options)
            else:
                channel = grpc.aio.secure_channel(address, self._credentials, options=self._options)
            self._channels[address] = channel
            self.channels_opened += 1
        return channel

    def _retire(self, address: str) -> None:
        """Close the channel to an address that is no longer the leader, in the background."""
        channel = self._channels.pop(address)
        task = asyncio.create_task(self._close(channel, self._retire_grace_s))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close(self, channel: grpc.aio.Channel, grace: float | None) -> None:
        await channel.close(grace)
        self.channels_closed += 1

    async def close(self) -> None:
        """Close every channel, retiring ones included (idempotent)."""
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await self._close(channel, None)
        await asyncio.gather(*self._retiring, return_exceptions=True)

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
            await _pass_on(exc, address, context)
            raise AssertionError("unreachable") from exc
        self._metrics.forwarded.labels(name, "OK").inc()
        return reply


async def _pass_on(
    exc: grpc.aio.AioRpcError, address: str, context: grpc.aio.ServicerContext
) -> None:
    """Answer the caller with the leader's error, or with "leader unreachable".

    An answer from an auditsvc replica carries its AIP-193 details and is passed
    on unchanged. Without them the failure is the transport's own (connection
    refused, reset, TLS): a leader that cannot be reached is, for the caller,
    no leader, so it gets the same UNAVAILABLE wording and metadata as one.
    """
    trailers = tuple(
        (k, v) for k, v in (exc.trailing_metadata() or ()) if k in (DETAILS_KEY, LEADER_TRAILER)
    )
    if any(k == DETAILS_KEY for k, _ in trailers):
        await context.abort(exc.code(), exc.details() or "", trailing_metadata=trailers)
    if exc.code() is grpc.StatusCode.UNAVAILABLE:
        log.warning("leader unreachable", extra={"leader": address, "error": exc.details()})
        await no_leader(
            f"no leader reachable: the leader at {address} did not answer ({exc.details()}); "
            "retry after the election",
            leader=address,
            reason="LEADER_UNREACHABLE",
        ).abort(context)
    await Problem(
        exc.code(), exc.details() or "forwarded call failed", "FORWARDING_FAILED", leader=address
    ).abort(context)


class ForwardingGate:
    """Routes mutating methods to the leader when this replica is not leading.

    Not an interceptor of its own: ``CallInterceptor`` asks it once per call, so
    reads pay no extra interceptor layer (``route`` is a set lookup for them).
    """

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

    def route(self, details: Any) -> Any:
        """A raw-bytes handler that relays or refuses the call, or None to serve it here."""
        method: str = details.method
        if method not in self._mutating or self._leadership.term() is not None:
            return None
        forwarded_by = dict(details.invocation_metadata or ()).get(FORWARDED_BY)
        # Only a leader whose lease has not expired is named: a dead one is no hint.
        live = self._leadership.last_known_address()
        forwarder = self._forwarder
        leader = self._leader_address()

        async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if forwarded_by:
                await no_leader(
                    f"not leader (forwarded by {forwarded_by}; no second hop)",
                    leader=live,
                    reason="NOT_LEADER",
                ).abort(context)
            await no_leader("no leader is known; retry after the election", leader=live).abort(
                context
            )
            raise AssertionError("unreachable")

        async def relay(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            assert leader is not None
            return await forwarder.relay(method, leader, request, context)

        behaviour = refuse if forwarded_by or not leader else relay
        return grpc.unary_unary_rpc_method_handler(behaviour)
