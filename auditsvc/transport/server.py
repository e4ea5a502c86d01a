"""The grpc.aio server: AuditService, grpc.health.v1 and reflection.

Health: service "" is SERVING while the process runs (liveness); the
AuditService's full name is SERVING only while the database answers
(readiness). ``stop`` turns readiness off first, then drains.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from auditpb.v1 import audit_pb2 as pb
from auditpb.v1 import audit_pb2_grpc as pb_grpc
from auditsvc.ops.ports import ensure_free
from auditsvc.ops.settings import ConfigError, Settings
from auditsvc.transport.health_service import NOT_SERVING, SERVING, HealthServicer

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["AuditService"].full_name
MUTATING = frozenset(
    f"/{SERVICE_NAME}/{name}"
    for name in ("RunAudit", "ResolveDuplicates", "AcknowledgeGaps", "DeleteAcknowledgement")
)
ALL_METHODS = frozenset(
    f"/{SERVICE_NAME}/{m.name}" for m in pb.DESCRIPTOR.services_by_name["AuditService"].methods
)


def tls(
    settings: Settings,
) -> tuple[grpc.ServerCredentials | None, grpc.ChannelCredentials | None]:
    """Server credentials, and the matching ones replicas use to forward to each other."""
    if not settings.security.tls_cert_file or not settings.security.tls_key_file:
        return None, None
    cert = Path(settings.security.tls_cert_file).read_bytes()
    key = Path(settings.security.tls_key_file).read_bytes()
    ca = (
        Path(settings.security.tls_client_ca_file).read_bytes()
        if settings.security.tls_client_ca_file
        else None
    )
    server = grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )
    # Peers trust the client CA (which signs replica certificates under mTLS) and
    # present their own certificate, so forwarding works under the same TLS.
    peer = grpc.ssl_channel_credentials(
        root_certificates=ca or cert, private_key=key, certificate_chain=cert
    )
    return server, peer


class _GenericOnly:
    """Takes the generated ``add_*_to_server`` registrations as generic handlers only.

    The generated code also registers each method with grpc-core
    (``add_registered_method_handlers``). Together with a server interceptor
    that cost server CPU per call: 350 against 319-323 µs for a trivial
    GetStatus server, 420 against 350 µs for the replica (medians of 8
    alternating rounds at 50 in flight, 2026-12-01; docs/PERFORMANCE.md, figure
    4). Every method is still served; reflection and health are unchanged.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, object]) -> None:
        """Not registered: the same handlers arrived as a generic handler first."""


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
        self.health = HealthServicer()
        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ],
        )
        handlers = _GenericOnly(self._server)
        pb_grpc.add_AuditServiceServicer_to_server(servicer, handlers)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, handlers)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), handlers
        )
        self.port = self._bind(host, port, credentials)

    def _bind(self, host: str, port: int, credentials: grpc.ServerCredentials | None) -> int:
        """Binds GRPC_PORT; a busy port raises ConfigError (one line, exit 2), not
        grpc's RuntimeError. The plain bind first also keeps grpc-core from
        printing its own error lines for the common case."""
        ensure_free("GRPC_PORT", host, port)
        address = f"{host}:{port}"
        try:
            if credentials is None:
                return int(self._server.add_insecure_port(address))
            return int(self._server.add_secure_port(address, credentials))
        except RuntimeError:
            ensure_free("GRPC_PORT", host, port)  # taken between the check and the bind?
            raise ConfigError("GRPC_PORT", f"cannot listen on {address}") from None

    async def start(self) -> None:
        await self.health.set("", SERVING)
        await self.health.set(SERVICE_NAME, NOT_SERVING)
        await self._server.start()

    async def set_ready(self, ready: bool) -> None:
        await self.health.set(SERVICE_NAME, SERVING if ready else NOT_SERVING)

    async def stop(self, grace: float) -> None:
        await self.set_ready(False)
        await self.health.close()  # ends open Watch streams with OK
        await self._server.stop(grace)

    async def wait(self) -> None:
        await self._server.wait_for_termination()
