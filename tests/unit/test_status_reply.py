"""GetStatus reuses its reply only while nothing in the status changed."""

from __future__ import annotations

import dataclasses
from typing import Any

from auditpb.v1 import audit_pb2 as pb
from auditsvc.domain.records import Cycle, Status
from auditsvc.domain.values import Role
from auditsvc.transport.servicer import AuditServicer


class FakeService:
    """Answers GetStatus with whatever status the test put in."""

    def __init__(self, status: Status) -> None:
        self.status_now = status

    async def status(self, full: bool = False) -> Status:
        return self.status_now


def _status(cycle: Cycle) -> Status:
    return Status(
        replica_id="r1",
        role=Role.LEADER,
        auditor_enabled=True,
        last_cycle=cycle,
        next_cycle_ms=1_000,
        series_count=4,
        version="0.1.0",
        database_reachable=True,
        leader_id="r1",
        epoch=3,
    )


async def test_reply_reused_until_the_status_or_the_cycle_changes() -> None:
    cycle = Cycle("c-1", 1, 2, "r1", 3, "schedule")
    service = FakeService(_status(cycle))
    servicer = AuditServicer(service)  # type: ignore[arg-type]
    context: Any = None
    request = pb.GetStatusRequest()

    first = await servicer.GetStatus(request, context)
    assert await servicer.GetStatus(request, context) is first
    assert (first.epoch, first.role, first.last_cycle.cycle_id) == (3, pb.ROLE_LEADER, "c-1")

    service.status_now = dataclasses.replace(service.status_now, role=Role.FOLLOWER, epoch=4)
    demoted = await servicer.GetStatus(request, context)
    assert (demoted.epoch, demoted.role) == (4, pb.ROLE_FOLLOWER)

    # A new cycle (a new read) is converted again.
    service.status_now = dataclasses.replace(
        service.status_now, last_cycle=Cycle("c-2", 5, 6, "r1", 4, "rpc")
    )
    renewed = await servicer.GetStatus(request, context)
    assert renewed.last_cycle.cycle_id == "c-2" and renewed is not demoted
