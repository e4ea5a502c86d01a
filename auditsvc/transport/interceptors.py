"""The one server interceptor: decoding guard, request metrics, and the gates.

A frame that is not a valid request message gets INVALID_ARGUMENT from us
rather than UNKNOWN from grpc, and every unary call is counted and timed. The
bearer-token check and the follower's forwarding are gates this interceptor
asks in turn, not interceptors of their own: each grpc.aio interceptor layer
costs every call a coroutine, and reads (GetStatus) are the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc

from auditsvc.ops.metrics import Metrics
from auditsvc.transport.status_table import undecodable


class _Undecodable:
    """Stands in for a request whose bytes are not a valid message of its type."""


_UNDECODABLE = _Undecodable()


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, RecursionError...
            return _UNDECODABLE

    return decode


class Authenticator(Protocol):
    def allows(self, details: Any) -> bool:
        """Whether the call may go on."""

    def denial(self, method: str, handler: Any) -> Any:
        """A handler shaped like ``handler`` that refuses the call."""


class Router(Protocol):
    def route(self, details: Any) -> Any:
        """A handler serving the call elsewhere (raw bytes), or None to serve it here."""


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The only interceptor, one layer for every call: the token check, then the
    forwarding route, then the handler; requests that do not decode get
    INVALID_ARGUMENT (not grpc's UNKNOWN), and unary calls are counted by method
    and code and timed. Wrapped handlers are built once per handler, except the
    per-call relays (they carry the call's leader and metadata)."""

    def __init__(
        self,
        service_prefix: str,
        metrics: Metrics,
        *,
        auth: Authenticator | None = None,
        router: Router | None = None,
    ) -> None:
        self._prefix = service_prefix
        self._metrics = metrics
        self._auth = auth
        self._router = router
        self._wrapped: dict[Any, Any] = {}

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        if self._auth is not None and not self._auth.allows(details):
            handler = await continuation(details)
            if handler is None:
                return None
            handler = self._auth.denial(details.method, handler)  # refused: never forwarded
        else:
            routed = None if self._router is None else self._router.route(details)
            if routed is not None:  # the follower's per-call raw relay or refusal
                return self._wrap(routed, details.method)
            handler = await continuation(details)
            if handler is None:
                return None
        wrapped = self._wrapped.get(handler)
        if wrapped is None:
            wrapped = self._wrapped[handler] = self._wrap(handler, details.method)
        return wrapped

    def _wrap(self, handler: Any, method: str) -> Any:
        if method.startswith(self._prefix) and handler.request_deserializer is not None:
            handler = _guard(handler)
        if handler.unary_unary is None:
            return handler
        return _timed(handler, method.rsplit("/", 1)[-1], self._metrics)


def _guard(handler: Any) -> Any:
    """The handler, with undecodable requests answered INVALID_ARGUMENT."""
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if request is _UNDECODABLE:
                await undecodable().abort(context)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        stream = handler.unary_stream

        async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if request is _UNDECODABLE:
                await undecodable().abort(context)
            async for reply in stream(request, context):
                yield reply

        return grpc.unary_stream_rpc_method_handler(
            guarded_stream,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    return handler


def _timed(handler: Any, method: str, metrics: Metrics) -> Any:
    """The unary handler, counted by method and code and timed."""
    inner = handler.unary_unary
    requests = metrics.grpc_requests
    seconds = metrics.grpc_seconds.labels(method)
    ok = requests.labels(method, "OK")

    async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        began = time.perf_counter()
        try:
            reply = await inner(request, context)
        except BaseException:
            requests.labels(method, _code_name(context)).inc()
            seconds.observe(time.perf_counter() - began)
            raise
        ok.inc()
        seconds.observe(time.perf_counter() - began)
        return reply

    return grpc.unary_unary_rpc_method_handler(
        timed,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _code_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
