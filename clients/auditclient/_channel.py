"""Build gRPC channels (aio and sync) from :class:`ClientOptions`.

Guarantees: TLS channels carry the bearer token as call credentials
(``authorization: Bearer <token>``); insecure channels carry none, because gRPC refuses
call credentials there: callers add ``ClientOptions.call_metadata()`` to each call.
"""

from __future__ import annotations

import grpc
import grpc.aio

from .options import ClientOptions, channel_options


def _credentials(options: ClientOptions) -> grpc.ChannelCredentials:
    creds: grpc.ChannelCredentials = grpc.ssl_channel_credentials(
        root_certificates=options.root_certificates,
        private_key=options.private_key,
        certificate_chain=options.cert_chain,
    )
    if options.token:
        call_creds: grpc.CallCredentials = grpc.access_token_call_credentials(options.token)
        creds = grpc.composite_channel_credentials(creds, call_creds)
    return creds


def aio_channel(options: ClientOptions) -> grpc.aio.Channel:
    """Return a new ``grpc.aio`` channel; it connects lazily, on the first call."""
    if options.tls:
        return grpc.aio.secure_channel(
            options.target, _credentials(options), options=channel_options(options)
        )
    return grpc.aio.insecure_channel(options.target, options=channel_options(options))


def sync_channel(options: ClientOptions) -> grpc.Channel:
    """Return a new blocking channel; it connects lazily, on the first call."""
    if options.tls:
        return grpc.secure_channel(
            options.target, _credentials(options), options=channel_options(options)
        )
    return grpc.insecure_channel(options.target, options=channel_options(options))
