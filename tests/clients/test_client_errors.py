"""The status-code → exception table, end to end and on its own."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2

from auditclient import (
    AuditClient,
    AuditError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NoLeader,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from auditclient.errors import ERRORS_BY_CODE

from .fakes import FakeAuditService

TABLE = [
    (grpc.StatusCode.INVALID_ARGUMENT, "bad symbol", InvalidArgument),
    (grpc.StatusCode.NOT_FOUND, "no such series", NotFound),
    (grpc.StatusCode.FAILED_PRECONDITION, "auditor disabled", FailedPrecondition),
    (grpc.StatusCode.UNAUTHENTICATED, "missing token", Unauthenticated),
    (grpc.StatusCode.UNAVAILABLE, "connection reset", Unavailable),
    (grpc.StatusCode.UNAVAILABLE, "no leader is known", NoLeader),
    (grpc.StatusCode.UNAVAILABLE, "not leader", NoLeader),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "too slow", DeadlineExceeded),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "too many audits", ResourceExhausted),
    (grpc.StatusCode.INTERNAL, "boom", AuditError),
    (grpc.StatusCode.PERMISSION_DENIED, "nope", AuditError),
]


class TestErrorTable:
    """A server abort with each code raises the matching typed exception."""

    @pytest.mark.parametrize(("code", "details", "expected"), TABLE)
    async def test_abort_maps_to_exception(
        self,
        client: AuditClient,
        service: FakeAuditService,
        code: grpc.StatusCode,
        details: str,
        expected: type[AuditError],
    ) -> None:
        """The exception's exact type, code and details come from the status."""
        service.always["RunAudit"] = (code, details, ())
        with pytest.raises(AuditError) as caught:
            await client.run_audit()
        assert type(caught.value) is expected
        assert (caught.value.code, caught.value.details) == (code, details)
        assert caught.value.leader_address is None

    async def test_no_leader_carries_leader_address(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """Trailing metadata x-audit-leader becomes NoLeader.leader_address."""
        service.always["RunAudit"] = (
            grpc.StatusCode.UNAVAILABLE,
            "not leader",
            (("x-audit-leader", "10.0.0.2:50051"),),
        )
        with pytest.raises(NoLeader) as caught:
            await client.run_audit()
        assert caught.value.leader_address == "10.0.0.2:50051"
        assert isinstance(caught.value, Unavailable)
        assert "leader: 10.0.0.2:50051" in str(caught.value)

    def test_table_covers_the_documented_codes(self) -> None:
        """The table maps exactly the seven documented codes."""
        assert set(ERRORS_BY_CODE) == {code for code, _, cls in TABLE if cls is not AuditError}

    @pytest.mark.parametrize(("code", "details", "expected"), TABLE)
    def test_from_rpc_error_on_aio_error(
        self, code: grpc.StatusCode, details: str, expected: type[AuditError]
    ) -> None:
        """from_rpc_error converts a bare AioRpcError the same way."""
        trailers = grpc.aio.Metadata(("x-audit-leader", "h:1"))
        error = from_rpc_error(grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, details))
        assert type(error) is expected
        assert error.leader_address == "h:1"


def _status_trailer(code: grpc.StatusCode, message: str, reason: str, field: str) -> bytes:
    """A serialized google.rpc.Status with one auditsvc ErrorInfo."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain="auditsvc", metadata={"field": field})
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(info)
    return status.SerializeToString()


class TestStatusDetails:
    """reason and field come from the grpc-status-details-bin trailer."""

    def test_reason_and_field_from_details(self) -> None:
        """ErrorInfo's reason and metadata field land on the exception."""
        blob = _status_trailer(grpc.StatusCode.NOT_FOUND, "x", "UNKNOWN_SYMBOL", "symbol")
        trailers = grpc.aio.Metadata(("grpc-status-details-bin", blob))
        error = from_rpc_error(
            grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), trailers, "x")
        )
        assert type(error) is NotFound
        assert (error.reason, error.field) == ("UNKNOWN_SYMBOL", "symbol")

    def test_no_leader_by_reason(self) -> None:
        """UNAVAILABLE with reason LEADER_UNREACHABLE is NoLeader whatever the wording."""
        blob = _status_trailer(grpc.StatusCode.UNAVAILABLE, "gone", "LEADER_UNREACHABLE", "")
        trailers = grpc.aio.Metadata(("grpc-status-details-bin", blob))
        error = from_rpc_error(
            grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), trailers, "gone")
        )
        assert type(error) is NoLeader

    def test_garbage_details_are_ignored(self) -> None:
        """An unparsable trailer leaves reason and field None."""
        trailers = grpc.aio.Metadata(("grpc-status-details-bin", b"\xff\x00garbage"))
        error = from_rpc_error(
            grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), trailers, "x")
        )
        assert (error.reason, error.field) == (None, None)
