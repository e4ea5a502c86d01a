"""Every error carries AIP-193 details (google.rpc.Status in grpc-status-details-bin),
read back with the standard grpc-status library and with auditclient."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from auditclient import AuditClient, InvalidArgument, NotFound, Unauthenticated
from auditpb.v1 import audit_pb2 as pb

TIMEOUT = 10.0


def details_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status from the trailer, as grpc-status parses it."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            parsed = status_pb2.Status.FromString(value)
            # grpc-status's own check: the Status must agree with the call's code and message.
            assert parsed.code == error.code().value[0]
            assert parsed.message == error.details()
            return parsed
    raise AssertionError(f"no grpc-status-details-bin trailer on {error!r}")


def unpack(status: status_pb2.Status) -> tuple[error_details_pb2.ErrorInfo, list[str]]:
    """The ErrorInfo and the BadRequest's violated fields."""
    info, fields = None, []
    for any_detail in status.details:
        candidate = error_details_pb2.ErrorInfo()
        if any_detail.Unpack(candidate):
            info = candidate
        bad = error_details_pb2.BadRequest()
        if any_detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    assert info is not None, status
    return info, fields


async def fail(call: object, request: object, stream: bool = False) -> grpc.aio.AioRpcError:
    """Make the call and return its error."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        if stream:
            async for _ in call(request, timeout=TIMEOUT):  # type: ignore[operator]
                pass
        else:
            await call(request, timeout=TIMEOUT)  # type: ignore[operator]
    return err.value


CASES = [
    ("ListGaps", pb.ListGapsRequest(symbol="NOPE"), "UNKNOWN_SYMBOL", "symbol"),
    ("ListGaps", pb.ListGapsRequest(timeframe="1M"), "UNKNOWN_TIMEFRAME", "timeframe"),
    ("ListGaps", pb.ListGapsRequest(page_size=-1), "INVALID_ARGUMENT", "page_size"),
    ("ListGaps", pb.ListGapsRequest(page_token="garbage"), "INVALID_PAGE_TOKEN", "page_token"),
    ("ListGaps", pb.ListGapsRequest(states=[99]), "INVALID_ARGUMENT", "states"),  # type: ignore[list-item]
    ("ListGaps", pb.ListGapsRequest(states=[0]), "INVALID_ARGUMENT", "states"),  # type: ignore[list-item]
    ("RunAudit", pb.RunAuditRequest(symbols=["NOPE"]), "UNKNOWN_SYMBOL", "symbols"),
    (
        "StreamHealthScores",
        pb.StreamHealthScoresRequest(symbols=["NOPE"]),
        "UNKNOWN_SYMBOL",
        "symbols",
    ),
    (
        "ResolveDuplicates",
        pb.ResolveDuplicatesRequest(symbol="BTCUSDT", timeframe="1m", strategy=99),  # type: ignore[arg-type]
        "INVALID_ARGUMENT",
        "strategy",
    ),
]


class TestStatusDetails:
    """The trailer holds ErrorInfo (domain auditsvc) and BadRequest.FieldViolation."""

    @pytest.mark.parametrize(("method", "request_msg", "reason", "field"), CASES)
    async def test_bad_field(
        self, make_settings, start_replica, method, request_msg, reason, field
    ):
        """A bad field gets ErrorInfo(reason, domain, field) and a FieldViolation; message kept."""
        replica = await start_replica(make_settings())
        error = await fail(
            getattr(replica.stub, method), request_msg, stream=method == "StreamHealthScores"
        )
        assert error.details().startswith(f"{field}: "), error.details()
        info, fields = unpack(details_of(error))
        assert (info.reason, info.domain, info.metadata["field"]) == (reason, "auditsvc", field)
        assert fields == [field]

    async def test_grpc_status_library_reads_it(self, make_settings, start_replica):
        """grpc-status's from_call finds the same Status on a real call."""
        replica = await start_replica(make_settings())
        call = replica.stub.ListGaps(pb.ListGapsRequest(symbol="NOPE"), timeout=TIMEOUT)
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        status = await rpc_status.aio.from_call(call)
        assert status is not None and status.code == grpc.StatusCode.NOT_FOUND.value[0]
        assert unpack(status)[0].reason == "UNKNOWN_SYMBOL"

    async def test_undecodable_request(self, make_settings, start_replica):
        """Bytes that are not a request are INVALID_ARGUMENT with reason MALFORMED_REQUEST."""
        replica = await start_replica(make_settings())
        raw = replica.channel.unary_unary(f"/{pb.DESCRIPTOR.package}.AuditService/ListGaps")
        error = await fail(raw, b"\xff\xff\xff")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert unpack(details_of(error))[0].reason == "MALFORMED_REQUEST"

    async def test_unauthenticated(self, make_settings, start_replica):
        """A missing token is UNAUTHENTICATED with reason UNAUTHENTICATED."""
        replica = await start_replica(make_settings(AUDIT_API_TOKEN="s3cret"))
        error = await fail(replica.stub.RunAudit, pb.RunAuditRequest())
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert unpack(details_of(error))[0].reason == "UNAUTHENTICATED"

    async def test_health_check_unknown_service(self, make_settings, start_replica):
        """grpc.health.v1 Check of an unknown service carries details too."""
        replica = await start_replica(make_settings())
        stub = health_pb2_grpc.HealthStub(replica.channel)
        error = await fail(stub.Check, health_pb2.HealthCheckRequest(service="nope"))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert unpack(details_of(error))[0].reason == "UNKNOWN_SERVICE"


class TestClientErrors:
    """auditclient exposes reason and field on its exceptions."""

    async def test_reason_and_field(self, make_settings, start_replica):
        """NotFound/InvalidArgument/Unauthenticated carry the server's reason and field."""
        replica = await start_replica(make_settings(AUDIT_API_TOKEN="s3cret"))
        async with AuditClient(replica.target, timeout=TIMEOUT) as client:
            with pytest.raises(NotFound) as missing:
                [g async for g in client.list_gaps("NOPE")]
            with pytest.raises(InvalidArgument) as bad:
                [g async for g in client.list_gaps(timeframe="1x")]
            with pytest.raises(Unauthenticated) as denied:
                await client.run_audit()
        assert (missing.value.reason, missing.value.field) == ("UNKNOWN_SYMBOL", "symbol")
        assert (bad.value.reason, bad.value.field) == ("INVALID_ARGUMENT", "timeframe")
        assert (denied.value.reason, denied.value.field) == ("UNAUTHENTICATED", None)
        assert missing.value.details == "symbol: symbol 'NOPE' is not configured (AUDIT_SYMBOLS)"
