"""The outermost server interceptor: decoding guard and request metrics.

A frame that is not a valid request message gets INVALID_ARGUMENT from us
rather than UNKNOWN from grpc, and every unary call is counted and timed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

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


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Outermost, one layer for every call: requests that do not decode get
    INVALID_ARGUMENT (not grpc's UNKNOWN), and unary calls are counted by method
    and code and timed. Wrapped handlers are built once per method."""

    def __init__(self, service_prefix: str, metrics: Metrics) -> None:
        self._prefix = service_prefix
        self._metrics = metrics
        self._wrapped: dict[Any, Any] = {}

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        if handler.request_deserializer is None:  # the follower's per-call raw relay
            return self._wrap(handler, details.method)
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
