"""TLS, mTLS and the bearer token, end to end over real sockets.

In-process replicas (``start_replica``) cover the transport and the token
rules; two real replica processes cover forwarding from a follower to the
leader under TLS plus a token, and their log files are searched for the token.
Certificates are throwaway ones from ``tests.security.certs``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from auditclient import AuditClient, ClientOptions
from auditclient.errors import Unauthenticated
from auditpb.v1 import audit_pb2 as pb
from auditpb.v1 import audit_pb2_grpc as pb_grpc
from auditsvc.devtools.demo import demo_series
from auditsvc.storage.mongo.database import connect
from auditsvc.transport.server import SERVICE_NAME
from tests.cluster.harness import ReplicaProcess
from tests.security.certs import Certs, make_certs
from tests.support import SecantusDB, eventually

TIMEOUT = 10.0
Code = grpc.StatusCode
END_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SLOTS = 240
# Distinctive, so that a search of logs and details cannot miss it.
TOKEN = f"tok-{uuid.uuid4().hex}-SECRET"
WRONG_TOKENS = ("", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), f"x{TOKEN}")


def ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


WINDOW = {"start_time": ts(END_MS - SLOTS * 60_000), "end_time": ts(END_MS)}


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def code_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    """The status of a unary call (OK or the error's code) and its details; bounded."""
    try:
        await asyncio.wait_for(call, TIMEOUT + 5)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return Code.OK, ""


async def stream_code(call: Any) -> tuple[grpc.StatusCode, str]:
    """The status of a stream's first read: OK if a message or nothing arrives within 1 s."""
    try:
        await asyncio.wait_for(call.read(), 1.0)
    except TimeoutError:
        return Code.OK, ""
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    finally:
        call.cancel()
    return Code.OK, ""


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


def tls_env(certs: Certs, *, mtls: bool = False) -> dict[str, str]:
    env = {
        "GRPC_TLS_CERT_FILE": str(certs.server_cert_file),
        "GRPC_TLS_KEY_FILE": str(certs.server_key_file),
    }
    if mtls:
        env["GRPC_TLS_CLIENT_CA_FILE"] = str(certs.ca_file)
    return env


def tls_channel(
    target: str,
    certs: Certs,
    *,
    client_cert: bool = False,
    stranger: bool = False,
    token: str | None = None,
) -> grpc.aio.Channel:
    if stranger:
        credentials = grpc.ssl_channel_credentials(
            certs.ca, private_key=certs.stranger_key, certificate_chain=certs.stranger_cert
        )
    elif client_cert:
        credentials = grpc.ssl_channel_credentials(
            certs.ca, private_key=certs.client_key, certificate_chain=certs.client_cert
        )
    else:
        credentials = grpc.ssl_channel_credentials(certs.ca)
    if token is not None:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )
    return grpc.aio.secure_channel(target, credentials)


@pytest.fixture
async def channels() -> AsyncIterator[Callable[[grpc.aio.Channel], grpc.aio.Channel]]:
    """Registers channels made in a test so that they are closed after it."""
    made: list[grpc.aio.Channel] = []

    def keep(channel: grpc.aio.Channel) -> grpc.aio.Channel:
        made.append(channel)
        return channel

    yield keep
    for channel in made:
        await channel.close()


async def seed(settings: Any) -> None:
    docs, _ = demo_series("BTCUSDT", "1m", END_MS, SLOTS)
    database = connect(settings.mongo.uri, settings.mongo.database, 2000)
    try:
        await database.db[settings.audit.collection_for("BTCUSDT", "1m")].insert_many(docs)
    finally:
        await database.close()


def assert_no_token(text: str) -> None:
    assert TOKEN not in text
    assert TOKEN[4:-7] not in text  # not even the random middle part


# --------------------------------------------------------------------------- transport


class TestTransport:
    """A TLS replica serves only TLS clients that trust it, and only certified ones under mTLS."""

    async def test_plaintext_client_refused(self, make_settings, start_replica, certs):
        """An insecure channel to a TLS server gets UNAVAILABLE."""
        replica = await start_replica(make_settings(**tls_env(certs)))
        code, _ = await code_of(replica.stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT))
        assert code == Code.UNAVAILABLE

    async def test_tls_client_with_ca(self, make_settings, start_replica, certs, channels):
        """A client trusting the CA reaches every method over TLS."""
        replica = await start_replica(make_settings(**tls_env(certs)))
        stub = pb_grpc.AuditServiceStub(channels(tls_channel(replica.target, certs)))
        status = await stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT)
        assert status.replica_id == "test-1"
        reply = await stub.RunAudit(pb.RunAuditRequest(**WINDOW), timeout=TIMEOUT)
        assert reply.cycle.served_by == "test-1"

    async def test_tls_client_without_the_ca(self, make_settings, start_replica, certs, channels):
        """A client that trusts only the system roots refuses the throwaway certificate."""
        replica = await start_replica(make_settings(**tls_env(certs)))
        channel = channels(grpc.aio.secure_channel(replica.target, grpc.ssl_channel_credentials()))
        stub = pb_grpc.AuditServiceStub(channel)
        code, _ = await code_of(stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT))
        assert code == Code.UNAVAILABLE

    async def test_tls_name_mismatch(self, make_settings, start_replica, certs, channels):
        """A client expecting another server name refuses the certificate."""
        replica = await start_replica(make_settings(**tls_env(certs)))
        channel = channels(
            grpc.aio.secure_channel(
                replica.target,
                grpc.ssl_channel_credentials(certs.ca),
                options=[("grpc.ssl_target_name_override", "other.example")],
            )
        )
        stub = pb_grpc.AuditServiceStub(channel)
        code, _ = await code_of(stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT))
        assert code == Code.UNAVAILABLE

    async def test_mtls_refuses_client_without_certificate(
        self, make_settings, start_replica, certs, channels
    ):
        """Under mTLS a client with no certificate is refused, plaintext too."""
        replica = await start_replica(make_settings(**tls_env(certs, mtls=True)))
        stub = pb_grpc.AuditServiceStub(channels(tls_channel(replica.target, certs)))
        code, _ = await code_of(stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT))
        assert code == Code.UNAVAILABLE
        code, _ = await code_of(replica.stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT))
        assert code == Code.UNAVAILABLE

    async def test_mtls_refuses_certificate_from_another_ca(
        self, make_settings, start_replica, certs, channels
    ):
        """Under mTLS a client certificate signed by a foreign CA is refused."""
        replica = await start_replica(make_settings(**tls_env(certs, mtls=True)))
        channel = channels(tls_channel(replica.target, certs, stranger=True))
        stub = pb_grpc.AuditServiceStub(channel)
        code, _ = await code_of(stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT))
        assert code == Code.UNAVAILABLE

    async def test_mtls_accepts_client_certificate(
        self, make_settings, start_replica, certs, channels
    ):
        """Under mTLS a client certificate from the CA is accepted for reads and mutations."""
        replica = await start_replica(make_settings(**tls_env(certs, mtls=True)))
        channel = channels(tls_channel(replica.target, certs, client_cert=True))
        stub = pb_grpc.AuditServiceStub(channel)
        status = await stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT)
        assert status.replica_id == "test-1"
        reply = await stub.RunAudit(pb.RunAuditRequest(**WINDOW), timeout=TIMEOUT)
        assert reply.cycle.served_by == "test-1"

    async def test_auditclient_over_mtls_with_token(self, make_settings, start_replica, certs):
        """The shipped client's TLS, certificate and token options work against the server."""
        settings = make_settings(**tls_env(certs, mtls=True), AUDIT_API_TOKEN=TOKEN)
        await seed(settings)
        replica = await start_replica(settings)
        options = ClientOptions(
            target=replica.target,
            timeout=TIMEOUT,
            tls=True,
            root_certificates=certs.ca,
            cert_chain=certs.client_cert,
            private_key=certs.client_key,
            token=TOKEN,
        )
        async with AuditClient(options=options) as client:
            reply = await asyncio.wait_for(client.run_audit(["BTCUSDT"], ["1m"]), TIMEOUT + 5)
            assert reply.cycle.served_by == "test-1"
        wrong = ClientOptions(
            target=replica.target,
            timeout=TIMEOUT,
            tls=True,
            root_certificates=certs.ca,
            cert_chain=certs.client_cert,
            private_key=certs.client_key,
            token=TOKEN + "x",
            mutating_max_attempts=1,
        )
        async with AuditClient(options=wrong) as client:
            with pytest.raises(Unauthenticated) as err:
                await asyncio.wait_for(client.run_audit(["BTCUSDT"], ["1m"]), TIMEOUT + 5)
        assert_no_token(str(err.value))


# --------------------------------------------------------------------------- token


class TestToken:
    """The bearer token guards mutations (and reads when asked), never health, and never leaks."""

    async def check_mutations_guarded(self, stub: Any, caplog: pytest.LogCaptureFixture) -> None:
        """No, malformed or wrong tokens get UNAUTHENTICATED; the right one gets OK."""
        mutations = {
            "RunAudit": pb.RunAuditRequest(**WINDOW),
            "ResolveDuplicates": pb.ResolveDuplicatesRequest(
                symbol="BTCUSDT", timeframe="1m", dry_run=True, **WINDOW
            ),
        }
        denied: list[tuple[tuple[str, str], ...]] = [
            (),
            *(bearer(t) for t in WRONG_TOKENS),
            (("authorization", TOKEN),),  # no scheme
            (("authorization", f"bearer {TOKEN}"),),  # wrong case
            (("authorization", f"Basic {TOKEN}"),),
            (("authorization", f"Bearer  {TOKEN}"),),  # two spaces
            (("x-authorization", f"Bearer {TOKEN}"),),
            (*bearer("nope"), *bearer(TOKEN)),  # the first header is the one read
        ]
        for name, request in mutations.items():
            method = getattr(stub, name)
            for metadata in denied:
                code, details = await code_of(method(request, timeout=TIMEOUT, metadata=metadata))
                assert code == Code.UNAUTHENTICATED, (name, metadata, code, details)
                assert_no_token(details)
                assert "nope" not in details
            code, details = await code_of(method(request, timeout=TIMEOUT, metadata=bearer(TOKEN)))
            assert code == Code.OK, (name, details)
        assert_no_token(caplog.text)

    async def test_mutations_need_the_token(self, make_settings, start_replica, caplog):
        """With AUDIT_API_TOKEN, RunAudit and ResolveDuplicates need exactly the right token."""
        caplog.set_level(logging.DEBUG)
        settings = make_settings(AUDIT_API_TOKEN=TOKEN)
        await seed(settings)
        replica = await start_replica(settings)
        await self.check_mutations_guarded(replica.stub, caplog)

    async def test_token_file_works_the_same(self, make_settings, start_replica, tmp_path, caplog):
        """AUDIT_API_TOKEN_FILE (with a trailing newline) guards mutations exactly the same."""
        caplog.set_level(logging.DEBUG)
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        settings = make_settings(AUDIT_API_TOKEN_FILE=str(token_file))
        assert TOKEN not in repr(settings)
        await seed(settings)
        replica = await start_replica(settings)
        await self.check_mutations_guarded(replica.stub, caplog)

    async def test_token_over_tls_as_call_credentials(
        self, make_settings, start_replica, certs, channels
    ):
        """Over TLS the token works as access-token call credentials."""
        settings = make_settings(**tls_env(certs), AUDIT_API_TOKEN=TOKEN)
        replica = await start_replica(settings)
        with_token = pb_grpc.AuditServiceStub(
            channels(tls_channel(replica.target, certs, token=TOKEN))
        )
        reply = await with_token.RunAudit(pb.RunAuditRequest(**WINDOW), timeout=TIMEOUT)
        assert reply.cycle.served_by == "test-1"
        without = pb_grpc.AuditServiceStub(channels(tls_channel(replica.target, certs)))
        code, details = await code_of(without.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT))
        assert code == Code.UNAUTHENTICATED
        assert_no_token(details)

    async def test_reads_open_by_default(self, make_settings, start_replica):
        """Without AUDIT_READS_REQUIRE_TOKEN every read works with no token."""
        replica = await start_replica(make_settings(AUDIT_API_TOKEN=TOKEN))
        stub = replica.stub
        for call in (
            stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT),
            stub.GetLeader(pb.GetLeaderRequest(), timeout=TIMEOUT),
            stub.ListGaps(pb.ListGapsRequest(), timeout=TIMEOUT),
        ):
            assert (await code_of(call))[0] == Code.OK
        stream = stub.StreamHealthScores(pb.StreamHealthScoresRequest(), timeout=TIMEOUT)
        assert (await stream_code(stream))[0] == Code.OK

    @pytest.mark.parametrize("source", ["env", "file"])
    async def test_reads_require_token_when_asked(
        self, make_settings, start_replica, tmp_path, caplog, source
    ):
        """With AUDIT_READS_REQUIRE_TOKEN=true every read, the stream included, needs it."""
        caplog.set_level(logging.DEBUG)
        if source == "env":
            env = {"AUDIT_API_TOKEN": TOKEN}
        else:
            (tmp_path / "token").write_text(TOKEN)
            env = {"AUDIT_API_TOKEN_FILE": str(tmp_path / "token")}
        replica = await start_replica(make_settings(AUDIT_READS_REQUIRE_TOKEN="true", **env))
        stub = replica.stub
        reads: dict[str, Callable[..., Any]] = {
            "GetStatus": lambda md: stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT, **md),
            "GetLeader": lambda md: stub.GetLeader(pb.GetLeaderRequest(), timeout=TIMEOUT, **md),
            "ListGaps": lambda md: stub.ListGaps(pb.ListGapsRequest(), timeout=TIMEOUT, **md),
        }
        for name, read in reads.items():
            for metadata in ({}, {"metadata": bearer(TOKEN + "x")}):
                code, details = await code_of(read(metadata))
                assert code == Code.UNAUTHENTICATED, (name, code, details)
                assert_no_token(details)
            assert (await code_of(read({"metadata": bearer(TOKEN)})))[0] == Code.OK, name
        for metadata in ((), bearer("x")):
            stream = stub.StreamHealthScores(
                pb.StreamHealthScoresRequest(), timeout=TIMEOUT, metadata=metadata
            )
            code, details = await stream_code(stream)
            assert code == Code.UNAUTHENTICATED, (code, details)
            assert_no_token(details)
        stream = stub.StreamHealthScores(
            pb.StreamHealthScoresRequest(), timeout=TIMEOUT, metadata=bearer(TOKEN)
        )
        assert (await stream_code(stream))[0] == Code.OK
        code, _ = await code_of(stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT))
        assert code == Code.UNAUTHENTICATED
        assert_no_token(caplog.text)

    async def test_health_and_reflection_stay_open(self, make_settings, start_replica):
        """Health Check and reflection need no token even when reads do."""
        settings = make_settings(AUDIT_API_TOKEN=TOKEN, AUDIT_READS_REQUIRE_TOKEN="true")
        replica = await start_replica(settings)
        health = health_pb2_grpc.HealthStub(replica.channel)
        for service in ("", SERVICE_NAME):
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(replica.channel)
        call = reflection.ServerReflectionInfo(timeout=TIMEOUT)
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        response = await asyncio.wait_for(call.read(), TIMEOUT)
        await call.done_writing()
        names = {s.name for s in response.list_services_response.service}
        assert SERVICE_NAME in names


# --------------------------------------------------------------------------- forwarding


async def _role(stub: Any) -> int | None:
    try:
        return (await stub.GetStatus(pb.GetStatusRequest(), timeout=2)).role
    except grpc.aio.AioRpcError:
        return None


async def one_leader(stubs: dict[str, Any], within: float) -> str:
    """The name of the only replica reporting ROLE_LEADER, polled over TLS."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        roles = {name: await _role(stub) for name, stub in stubs.items()}
        leading = [name for name, role in roles.items() if role == pb.ROLE_LEADER]
        if len(leading) == 1 and all(r is not None for r in roles.values()):
            return leading[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no single leader within {within}s")


async def _knows(stub: Any, leader: str) -> bool:
    """The follower's own view (GetStatus), not the lease GetLeader reads, names the leader."""
    status = await stub.GetStatus(pb.GetStatusRequest(), timeout=2)
    return status.role == pb.ROLE_FOLLOWER and status.leader_id == leader


@pytest.mark.slow
class TestForwardingUnderTls:
    """A follower forwards mutations to the leader over TLS, carrying the caller's token."""

    @pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls"])
    async def test_follower_forwards_with_token(self, mongo: SecantusDB, tmp_path, certs, mtls):
        """With the token the leader serves; without it the follower refuses; no log has it."""
        database = f"fw_{uuid.uuid4().hex[:10]}"
        handle = connect(mongo.uri, database, 2000)
        docs, _ = demo_series("BTCUSDT", "1m", END_MS, SLOTS)
        await handle.db["candles_BTCUSDT_1m"].insert_many(docs)
        await handle.close()
        env = {
            **tls_env(certs, mtls=mtls),
            "AUDIT_API_TOKEN": TOKEN,
            "AUDIT_SYMBOLS": "BTCUSDT",
            "AUDIT_TIMEFRAMES": "1m",
            "LOG_LEVEL": "DEBUG",
        }
        replicas = [ReplicaProcess(f"s{i}", mongo.uri, database, tmp_path, **env) for i in (1, 2)]
        opened: list[grpc.aio.Channel] = []
        try:
            for replica in replicas:
                replica.start()
            stubs = {}
            for replica in replicas:
                opened.append(tls_channel(replica.target, certs, client_cert=mtls))
                stubs[replica.name] = pb_grpc.AuditServiceStub(opened[-1])
            leader = await one_leader(stubs, within=20)
            follower = next(name for name in stubs if name != leader)
            stub = stubs[follower]
            await eventually(lambda: _knows(stub, leader), within=10)

            reply = await stub.RunAudit(
                pb.RunAuditRequest(**WINDOW), timeout=TIMEOUT, metadata=bearer(TOKEN)
            )
            assert reply.cycle.served_by == leader
            dedupe = await stub.ResolveDuplicates(
                pb.ResolveDuplicatesRequest(
                    symbol="BTCUSDT", timeframe="1m", dry_run=True, **WINDOW
                ),
                timeout=TIMEOUT,
                metadata=bearer(TOKEN),
            )
            assert dedupe.served_by == leader
            for metadata in ((), bearer(TOKEN + "x")):
                code, details = await code_of(
                    stub.RunAudit(pb.RunAuditRequest(**WINDOW), timeout=TIMEOUT, metadata=metadata)
                )
                assert code == Code.UNAUTHENTICATED, (code, details)
                assert_no_token(details)
        finally:
            for channel in opened:
                await channel.close()
            for replica in replicas:
                await replica.close()
        for replica in replicas:
            text = replica.log_path.read_text(errors="replace")
            assert text, f"{replica.name} wrote no log"
            assert_no_token(text)
            # The formatter would redact it; nothing should even try to log it.
            assert "[redacted]" not in text, f"{replica.name} tried to log the token"
