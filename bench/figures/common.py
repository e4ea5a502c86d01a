"""Helpers the figures share: timestamps for requests, the result record, verdicts."""

from __future__ import annotations

import math
import time
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from auditpb.v1 import audit_pb2 as pb

MET, STRETCH, MISSED = "met", "met (stretch)", "missed"


def ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def ms(stamp: Timestamp) -> int:
    return int(stamp.seconds) * 1000 + int(stamp.nanos) // 1_000_000


def audit_request(
    symbols: list[str], timeframe: str, start_ms: int | None = None, end_ms: int | None = None
) -> pb.RunAuditRequest:
    req = pb.RunAuditRequest(symbols=symbols, timeframes=[timeframe])
    if start_ms is not None:
        req.start_time.CopyFrom(ts(start_ms))
    if end_ms is not None:
        req.end_time.CopyFrom(ts(end_ms))
    return req


async def timed_audit(
    stub: Any, req: pb.RunAuditRequest, limit_s: float = 600
) -> tuple[float, Any]:
    """(wall seconds, reply) of one RunAudit; raises if the cycle did not succeed."""
    began = time.perf_counter()
    reply = await stub.RunAudit(req, timeout=limit_s)
    took = time.perf_counter() - began
    if reply.cycle.status != pb.CYCLE_STATUS_SUCCEEDED:
        raise RuntimeError(f"cycle failed: {reply.cycle.error}")
    return took, reply


def verdict_at_most(value: float, target: float, stretch: float | None = None) -> str:
    if math.isnan(value):
        return MISSED
    if stretch is not None and value < stretch:
        return STRETCH
    return MET if value <= target else MISSED


def verdict_at_least(value: float, target: float) -> str:
    return MISSED if math.isnan(value) or value < target else MET


def result(
    *,
    target: str,
    summary: str,
    verdict: str,
    ratio: float | None,
    ratio_of: str,
    details: dict[str, Any],
) -> dict[str, Any]:
    """The record every measured figure returns (the runner adds key, title, timing)."""
    return {
        "measured": True,
        "target": target,
        "summary": summary,
        "verdict": verdict,
        "ratio": None if ratio is None or math.isnan(ratio) else round(ratio, 3),
        "ratio_of": ratio_of,
        "details": details,
    }
