"""Connection options and the gRPC channel configuration they produce.

Guarantees:

* :class:`ClientOptions` is frozen and validated on construction; ``token`` and
  ``private_key`` never appear in its ``repr``.
* :func:`channel_options` always enables retries and installs :func:`service_config`,
  whose only retry policy retries UNAVAILABLE on the read methods GetLeader, GetStatus
  and ListGaps (``max_attempts`` attempts, backoff ``retry_initial_backoff`` doubling up
  to ``retry_max_backoff``: 5, 0.1 s and 2 s by default). Mutating methods are never
  retried by the channel.
* Keepalive pings are sent during calls even when no data flows, so a dead peer under
  a long ``StreamHealthScores`` call is detected within about
  ``keepalive_time_ms + keepalive_timeout_ms``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TARGET = "127.0.0.1:50051"
SERVICE_NAME = "auditpb.v1.AuditService"
RETRIED_READ_METHODS = ("GetLeader", "GetStatus", "ListGaps")


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """How to reach auditsvc; shared by :class:`AuditClient` and the blocking client."""

    target: str = DEFAULT_TARGET
    #: Default deadline in seconds of every unary call (and of each retry loop).
    timeout: float = 10.0
    keepalive_time_ms: int = 30_000
    keepalive_timeout_ms: int = 10_000
    #: Upper bound of the channel's own reconnect backoff after a lost connection.
    max_reconnect_backoff_ms: int = 10_000
    tls: bool = False
    root_certificates: bytes | None = None
    cert_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    #: Overrides the name the server certificate is checked against.
    tls_server_name: str | None = None
    #: Sent as ``authorization: Bearer <token>``.
    token: str | None = field(default=None, repr=False)
    #: Attempts of a read on UNAVAILABLE, by the channel's retry policy (gRPC caps it at 5).
    max_attempts: int = 5
    #: Attempts of RunAudit/ResolveDuplicates on UNAVAILABLE, only with a caller's request_id.
    mutating_max_attempts: int = 3
    #: Backoff of both retry kinds, doubling per attempt.
    retry_initial_backoff: float = 0.1
    retry_max_backoff: float = 2.0
    #: Backoff of ``watch_health`` between reconnects (with jitter).
    reconnect_initial_backoff: float = 0.5
    reconnect_max_backoff: float = 30.0
    #: Deadline of one health stream; when it passes the stream is reopened at once.
    stream_timeout: float = 3600.0

    def __post_init__(self) -> None:
        if not self.target:
            raise ValueError("target must not be empty")
        for name in (
            "timeout",
            "stream_timeout",
            "retry_initial_backoff",
            "reconnect_initial_backoff",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.retry_max_backoff < self.retry_initial_backoff:
            raise ValueError("retry_max_backoff must be >= retry_initial_backoff")
        if self.reconnect_max_backoff < self.reconnect_initial_backoff:
            raise ValueError("reconnect_max_backoff must be >= reconnect_initial_backoff")
        if not 1 <= self.max_attempts <= 5:
            raise ValueError("max_attempts must be between 1 and 5")
        if self.mutating_max_attempts < 1:
            raise ValueError("mutating_max_attempts must be >= 1")
        if (self.cert_chain is None) != (self.private_key is None):
            raise ValueError("cert_chain and private_key go together")
        uses_tls_material = self.root_certificates or self.cert_chain or self.tls_server_name
        if uses_tls_material and not self.tls:
            raise ValueError("certificates or tls_server_name given without tls=True")

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        """Per-call metadata: the bearer token on insecure channels, else nothing.

        On TLS channels the token travels as call credentials instead.
        """
        if self.token and not self.tls:
            return (("authorization", f"Bearer {self.token}"),)
        return ()


def with_overrides(
    options: ClientOptions | None,
    target: str | None = None,
    token: str | None = None,
    timeout: float | None = None,
) -> ClientOptions:
    """Return ``options`` (default: ``ClientOptions()``) with the given fields replaced."""
    base = options or ClientOptions()
    return dataclasses.replace(
        base,
        target=base.target if target is None else target,
        token=base.token if token is None else token,
        timeout=base.timeout if timeout is None else timeout,
    )


def service_config(options: ClientOptions) -> dict[str, Any]:
    """Return the gRPC service config: retry UNAVAILABLE on the read methods only."""
    config: dict[str, Any] = {}
    if options.max_attempts > 1:
        config["methodConfig"] = [
            {
                "name": [
                    {"service": SERVICE_NAME, "method": method} for method in RETRIED_READ_METHODS
                ],
                "retryPolicy": {
                    "maxAttempts": options.max_attempts,
                    "initialBackoff": f"{options.retry_initial_backoff:g}s",
                    "maxBackoff": f"{options.retry_max_backoff:g}s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return config


def channel_options(options: ClientOptions) -> list[tuple[str, str | int]]:
    """Return the ``options`` argument for ``grpc.(aio.)insecure_channel/secure_channel``."""
    result: list[tuple[str, str | int]] = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(service_config(options))),
        ("grpc.keepalive_time_ms", options.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", options.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_reconnect_backoff_ms", options.max_reconnect_backoff_ms),
    ]
    if options.tls_server_name:
        result.append(("grpc.ssl_target_name_override", options.tls_server_name))
    return result
