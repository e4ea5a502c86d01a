"""A closed-loop unary load generator over raw bytes (no client-side protobuf work)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc

from bench.stats import percentile


@dataclass(frozen=True)
class Load:
    calls: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, float]:
        return {
            "calls_per_s": round(self.per_second, 1),
            "p50_ms": round(percentile(self.latencies, 50) * 1000, 3),
            "p99_ms": round(percentile(self.latencies, 99) * 1000, 3),
            "calls": self.calls,
            "errors": self.errors,
        }


async def closed_loop(
    channel: grpc.aio.Channel, method: str, payload: bytes, in_flight: int, seconds: float
) -> Load:
    """``in_flight`` workers each call ``method`` back to back until ``seconds`` pass."""
    call = channel.unary_unary(method)
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                await call(payload, timeout=30)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return Load(len(latencies), errors, time.perf_counter() - began, latencies)
