"""The grpc.aio server: AuditService, grpc.health.v1 and reflection.

Health: service "" is SERVING while the process runs (liveness); the
AuditService's full name is SERVING only while the database answers
(readiness). ``stop`` turns readiness off first, then drains.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from auditpb.v1 import audit_pb2 as pb
from auditpb.v1 import audit_pb2_grpc as pb_grpc
from auditsvc.config import Settings
from auditsvc.metrics import Metrics

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["AuditService"].full_name
MUTATING = frozenset({f"/{SERVICE_NAME}/RunAudit", f"/{SERVICE_NAME}/ResolveDuplicates"})
ALL_METHODS = frozenset(
    f"/{SERVICE_NAME}/{m.name}" for m in pb.DESCRIPTOR.services_by_name["AuditService"].methods
)


def tls(
    settings: Settings,
) -> tuple[grpc.ServerCredentials | None, grpc.ChannelCredentials | None]:
    """Server credentials, and the matching ones replicas use to forward to each other."""
    if not settings.tls_cert_file or not settings.tls_key_file:
        return None, None
    cert = Path(settings.tls_cert_file).read_bytes()
    key = Path(settings.tls_key_file).read_bytes()
    ca = Path(settings.tls_client_ca_file).read_bytes() if settings.tls_client_ca_file else None
    server = grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )
    # Peers trust the client CA (which signs replica certificates under mTLS) and
    # present their own certificate, so forwarding works under the same TLS.
    peer = grpc.ssl_channel_credentials(
        root_certificates=ca or cert, private_key=key, certificate_chain=cert
    )
    return server, peer


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


class Server:
    def __init__(
        self,
        servicer: pb_grpc.AuditServiceServicer,
        *,
        host: str,
        port: int,
        max_message_bytes: int,
        interceptors: list[grpc.aio.ServerInterceptor],
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.health = health.aio.HealthServicer()
        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ],
        )
        pb_grpc.add_AuditServiceServicer_to_server(servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        address = f"{host}:{port}"
        if credentials is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, credentials)

    async def start(self) -> None:
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.start()

    async def set_ready(self, ready: bool) -> None:
        status = health_pb2.HealthCheckResponse
        await self.health.set(SERVICE_NAME, status.SERVING if ready else status.NOT_SERVING)

    async def stop(self, grace: float) -> None:
        await self.set_ready(False)
        await self._server.stop(grace)
        await self.health.enter_graceful_shutdown()

    async def wait(self) -> None:
        await self._server.wait_for_termination()
