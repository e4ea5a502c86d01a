"""Bad input gets a precise status naming the field; a dead database gets
UNAVAILABLE; nothing ever comes back UNKNOWN."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auditpb.v1 import audit_pb2 as pb
from auditsvc.transport.server import SERVICE_NAME
from tests.support import free_port

TIMEOUT = 10.0
INVALID = grpc.StatusCode.INVALID_ARGUMENT

CASES = [
    ("RunAudit", pb.RunAuditRequest(timeframes=["2m"]), INVALID, "timeframe"),
    ("RunAudit", pb.RunAuditRequest(timeframes=["1M"]), grpc.StatusCode.NOT_FOUND, "timeframes"),
    ("RunAudit", pb.RunAuditRequest(symbols=["DOGEUSDT"]), grpc.StatusCode.NOT_FOUND, "symbols"),
    (
        "RunAudit",
        pb.RunAuditRequest(start_time=Timestamp(seconds=200), end_time=Timestamp(seconds=100)),
        INVALID,
        "start_time",
    ),
    (
        "RunAudit",
        pb.RunAuditRequest(start_time=Timestamp(seconds=0), end_time=Timestamp(seconds=10**9)),
        INVALID,
        "AUDIT_MAX_RANGE_CANDLES",
    ),
    (
        "RunAudit",
        pb.RunAuditRequest(start_time=Timestamp(seconds=0, nanos=-1)),
        INVALID,
        "start_time",
    ),
    ("ListGaps", pb.ListGapsRequest(page_size=-1), INVALID, "page_size"),
    ("ListGaps", pb.ListGapsRequest(page_size=1001), INVALID, "page_size"),
    ("ListGaps", pb.ListGapsRequest(page_token="garbage"), INVALID, "page_token"),
    ("ListGaps", pb.ListGapsRequest(timeframe="1x"), INVALID, "timeframe"),
    (
        "ResolveDuplicates",
        pb.ResolveDuplicatesRequest(symbol="BTCUSDT", timeframe="1m", strategy=99),  # type: ignore[arg-type]
        INVALID,
        "strategy",
    ),
    ("ResolveDuplicates", pb.ResolveDuplicatesRequest(timeframe="1m"), INVALID, "symbol"),
    ("StreamHealthScores", pb.StreamHealthScoresRequest(timeframes=["7m"]), INVALID, "timeframe"),
    # One rule for unconfigured series: NOT_FOUND naming the field, on every RPC.
    ("ListGaps", pb.ListGapsRequest(symbol="NOPE"), grpc.StatusCode.NOT_FOUND, "symbol"),
    ("ListGaps", pb.ListGapsRequest(timeframe="1M"), grpc.StatusCode.NOT_FOUND, "timeframe"),
    (
        "StreamHealthScores",
        pb.StreamHealthScoresRequest(symbols=["BTCUSDT", "NOPE"]),
        grpc.StatusCode.NOT_FOUND,
        "symbols",
    ),
    (
        "StreamHealthScores",
        pb.StreamHealthScoresRequest(timeframes=["1M"]),
        grpc.StatusCode.NOT_FOUND,
        "timeframes",
    ),
]


class TestBadInput:
    """Each malformed request fails with its own code and names the field."""

    @pytest.mark.parametrize(("method", "request_msg", "code", "needle"), CASES)
    async def test_status_names_the_field(
        self, make_settings, start_replica, method, request_msg, code, needle
    ):
        """The status code is precise and the details mention the offending field."""
        replica = await start_replica(make_settings())
        call = getattr(replica.stub, method)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            if method == "StreamHealthScores":
                async for _ in call(request_msg, timeout=TIMEOUT):
                    pass
            else:
                await call(request_msg, timeout=TIMEOUT)
        assert err.value.code() == code, err.value.details()
        assert needle in err.value.details()
        assert "Traceback" not in err.value.details()


class TestDatabaseDown:
    """With no database the replica stays up, is not ready, and answers UNAVAILABLE."""

    async def test_unavailable_and_not_ready(self, make_settings, start_replica):
        """Mutations get UNAVAILABLE and readiness is NOT_SERVING while liveness is SERVING."""
        settings = make_settings(
            MONGODB_URI=f"mongodb://127.0.0.1:{free_port()}", MONGODB_TIMEOUT_MS="300"
        )
        replica = await start_replica(settings, wait_ready=False)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await replica.stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        health = health_pb2_grpc.HealthStub(replica.channel)
        ready = await health.Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=TIMEOUT
        )
        live = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        assert ready.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert live.status == health_pb2.HealthCheckResponse.SERVING
        status = await replica.stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT)
        assert not status.database_reachable
