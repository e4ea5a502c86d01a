"""The bearer token reaches the server and never shows up in reprs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import trustme

from auditclient import AuditClient, ClientOptions

from .conftest import fast_options
from .fakes import FakeAuditService, FakeServer


@pytest.fixture
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture
async def tls_server(service: FakeAuditService, ca: trustme.CA) -> AsyncIterator[FakeServer]:
    """The fake servicer behind TLS with a certificate for 127.0.0.1."""
    cert = ca.issue_cert("127.0.0.1")
    credentials = grpc.ssl_server_credentials(
        [(cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes())]
    )
    server = await FakeServer(service, credentials=credentials).start()
    try:
        yield server
    finally:
        await server.stop()


class TestToken:
    """``authorization: Bearer <token>`` is sent on insecure and TLS channels."""

    async def test_insecure_channel_sends_metadata(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """On an insecure channel the token goes as per-call metadata on every method."""
        async with AuditClient(options=fast_options(server.target, token="s3cret")) as client:
            await client.get_status()
            await client.run_audit()
        assert [m.get("authorization") for m in service.metadata] == ["Bearer s3cret"] * 2

    async def test_no_token_sends_no_authorization(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """Without a token no authorization header is sent."""
        await client.get_leader()
        assert "authorization" not in service.metadata[0]

    async def test_tls_channel_sends_call_credentials(
        self, tls_server: FakeServer, service: FakeAuditService, ca: trustme.CA
    ) -> None:
        """Over TLS the token travels as call credentials, once per call."""
        options = fast_options(
            tls_server.target, tls=True, root_certificates=ca.cert_pem.bytes(), token="s3cret"
        )
        async with AuditClient(options=options) as client:
            assert (await client.get_leader()).leader_id == "replica-a"
        assert service.metadata[0]["authorization"] == "Bearer s3cret"
        assert options.call_metadata() == ()

    def test_secrets_are_not_in_repr(self) -> None:
        """repr() of options and clients hides the token and the private key."""
        options = ClientOptions(
            token="s3cret", tls=True, cert_chain=b"CHAIN", private_key=b"PRIVATE"
        )
        for text in (repr(options), repr(AuditClient(options=options))):
            assert "s3cret" not in text
            assert "PRIVATE" not in text
