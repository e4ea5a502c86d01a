"""Server interceptors: decoding guard and request metrics.

``DecodeInterceptor`` sits outermost so that a frame that is not a valid
request message gets INVALID_ARGUMENT from us rather than UNKNOWN from grpc.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from auditsvc.metrics import Metrics


class _Undecodable:
    """Stands in for a request whose bytes are not a valid message of its type."""


_UNDECODABLE = _Undecodable()
_UNDECODABLE_DETAILS = "request is not a valid protobuf message for this method"


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, RecursionError...
            return _UNDECODABLE

    return decode


class DecodeInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Outermost: a request that does not decode gets INVALID_ARGUMENT, not grpc's UNKNOWN."""

    def __init__(self, service_prefix: str) -> None:
        self._prefix = service_prefix

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if (
            handler is None
            or handler.request_deserializer is None  # the follower's raw-bytes relay
            or not details.method.startswith(self._prefix)  # health, reflection
        ):
            return handler
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if request is _UNDECODABLE:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _UNDECODABLE_DETAILS)
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
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _UNDECODABLE_DETAILS)
                async for reply in stream(request, context):
                    yield reply

            return grpc.unary_stream_rpc_method_handler(
                guarded_stream,
                request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts requests by method and code and times them."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary
        metrics = self._metrics

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            began = time.perf_counter()
            code = "OK"
            try:
                return await inner(request, context)
            except BaseException:
                code = _code_name(context)
                raise
            finally:
                metrics.grpc_requests.labels(method, code).inc()
                metrics.grpc_seconds.labels(method).observe(time.perf_counter() - began)

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _code_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
