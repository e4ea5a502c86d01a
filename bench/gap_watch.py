"""Figure 17's view of the gaps: ListGaps of every state on one replica, and a
probe per fill that asks for that gap alone until it shows FILLED.

Limits: a sighting is dated when its reply arrived, so it is late by up to one
poll (``GapWatch.every``, or ``PROBE_EVERY`` for a probe) and its reply:
against the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from auditpb.v1 import audit_pb2 as pb
from bench.healing import TIMEFRAME, Key, Loop, now_ms

ALL_STATES = (
    pb.GAP_STATE_OPEN,
    pb.GAP_STATE_BACKFILL_REQUESTED,
    pb.GAP_STATE_FILLED,
    pb.GAP_STATE_UNFILLABLE,
    pb.GAP_STATE_ACKNOWLEDGED,
)


def ms(stamp: Any) -> int:
    """A protobuf Timestamp in ms (bench.figures.common's, which this module
    cannot import: the figures import it)."""
    return int(stamp.seconds) * 1000 + int(stamp.nanos) // 1_000_000


@dataclass
class Sighting:
    """One gap as ListGaps showed it over the run."""

    first: dict[int, int] = field(default_factory=dict)  # state -> first reply ms
    changes: list[tuple[int, int]] = field(default_factory=list)  # (reply ms, state)
    detected_ms: int = 0
    filled_ms: int = 0
    attempts: int = 0
    missing: int = 0
    high: bool = False
    probed_ms: int = 0  # the fill probe's first reply showing FILLED

    @property
    def filled_seen_ms(self) -> int:
        """When ListGaps first showed it FILLED (the probe or the listing), else 0."""
        seen = [t for t in (self.probed_ms, self.first.get(pb.GAP_STATE_FILLED, 0)) if t]
        return min(seen, default=0)

    @property
    def state(self) -> int:
        return self.changes[-1][1] if self.changes else pb.GAP_STATE_UNSPECIFIED

    @property
    def reopened(self) -> int:
        """Times the gap left FILLED for a missing state."""
        states = [s for _, s in self.changes]
        return sum(1 for a, _ in itertools.pairwise(states) if a == pb.GAP_STATE_FILLED)


class GapWatch(Loop):
    """ListGaps of every state on one replica, all pages, every ``every`` seconds
    (each gap's states over the run); and, once told of a fill (``probe``), that
    gap alone until it shows FILLED (when it was first seen so). The probes run
    one at a time in rounds of at least ``PROBE_EVERY`` seconds, so the watcher
    never has more than two calls in flight, whatever the backlog."""

    PROBE_EVERY = 0.1
    PROBE_FOR_S = 60.0

    def __init__(self, stub: Any, every: float = 1.0) -> None:
        self.stub = stub
        self.every = every
        self.seen: dict[Key, Sighting] = {}
        self.polls = 0
        self.poll_ms: list[float] = []
        self.probes = 0
        self.probe_ms: list[float] = []
        self.errors: list[str] = []
        self._changed = asyncio.Event()
        self._pending: dict[Key, float] = {}  # probed gap -> monotonic deadline
        self._prober: asyncio.Task[None] | None = None

    def start(self) -> None:
        super().start()
        self._prober = asyncio.create_task(self._probe_rounds())

    def probe(self, key: Key) -> None:
        self._pending.setdefault(key, time.monotonic() + self.PROBE_FOR_S)

    async def close(self) -> None:
        await super().close()
        task, self._prober = self._prober, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            began = time.perf_counter()
            try:
                rows = await list_gaps(self.stub, ALL_STATES)
            except grpc.aio.AioRpcError as exc:
                self.errors.append(f"{exc.code().name}: {exc.details()}"[:200])
                rows = None
            if rows is not None:
                at = now_ms()
                self.polls += 1
                self.poll_ms.append((time.perf_counter() - began) * 1000)
                for g in rows:
                    self._note(g, at)
                self._changed.set()
            await asyncio.sleep(max(0.0, self.every - (time.perf_counter() - began)))

    async def _probe_rounds(self) -> None:
        while True:
            began = time.perf_counter()
            for key, deadline in list(self._pending.items()):
                if await self._shows_filled(key) or time.monotonic() > deadline:
                    del self._pending[key]
            await asyncio.sleep(max(0.0, self.PROBE_EVERY - (time.perf_counter() - began)))

    async def _shows_filled(self, key: Key) -> bool:
        sym, start = key
        req = pb.ListGapsRequest(symbol=sym, timeframe=TIMEFRAME, states=[pb.GAP_STATE_FILLED])
        req.start_time.FromMilliseconds(start)
        req.end_time.FromMilliseconds(start + 1)
        began = time.perf_counter()
        try:
            reply = await self.stub.ListGaps(req, timeout=10)
        except grpc.aio.AioRpcError as exc:
            self.errors.append(f"{exc.code().name}: {exc.details()}"[:200])
            return False
        self.probes += 1
        self.probe_ms.append((time.perf_counter() - began) * 1000)
        if not any(ms(g.start_time) == start for g in reply.gaps):
            return False
        self.seen.setdefault(key, Sighting()).probed_ms = now_ms()
        self._changed.set()
        return True

    def _note(self, g: Any, at: int) -> None:
        s = self.seen.setdefault((g.symbol, ms(g.start_time)), Sighting())
        s.first.setdefault(g.state, at)
        if s.state != g.state:
            s.changes.append((at, g.state))
        s.detected_ms = ms(g.detected_at)
        s.filled_ms = ms(g.filled_at) if g.HasField("filled_at") else 0
        s.attempts, s.missing = g.attempts, g.missing_candles
        s.high = g.severity == pb.SEVERITY_HIGH

    async def until(self, check: Callable[[], bool], within: float) -> bool:
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() >= deadline:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 1.0)
        return True


async def list_gaps(stub: Any, states: tuple[int, ...]) -> list[Any]:
    rows: list[Any] = []
    token = ""
    while True:
        reply = await stub.ListGaps(
            pb.ListGapsRequest(states=states, page_size=1000, page_token=token), timeout=10
        )
        rows += reply.gaps
        token = reply.next_page_token
        if not token:
            return rows
