"""What a reader of the verdicts saw, for figures 13 and 14: every message of one
StreamHealthScores subscriber, ListHealthScores polled, and the leader's
heartbeat read straight from the database.

Each observation is stamped with this process's wall clock (ms) when the bench
handled it, so a starved bench makes the service look slower, never faster.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from auditpb.v1 import audit_pb2 as pb
from auditsvc.storage.mongo.database import VERDICTS
from auditsvc.storage.mongo.live_store import HEARTBEAT_ID

LIVE, LATE = pb.SERIES_STATE_LIVE, pb.SERIES_STATE_LATE
UNKNOWN = pb.SERIES_STATE_UNKNOWN
KNOWN = (LIVE, LATE)


# bench.figures.common and bench.live have these two; importing either here would
# import every figure (and figure 13 imports this module).
def ms(stamp: Any) -> int:
    return int(stamp.seconds) * 1000 + int(stamp.nanos) // 1_000_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Seen:
    """One served score: when the bench got it, and what it said."""

    at: int
    state: int
    candle: int  # last_candle_open, ms (0: unset)
    verdict: int  # verdict_time, ms (0: unset)
    late: int

    @classmethod
    def of(cls, at: int, s: Any) -> Seen:
        candle = ms(s.last_candle_open) if s.HasField("last_candle_open") else 0
        verdict = ms(s.verdict_time) if s.HasField("verdict_time") else 0
        return cls(at, int(s.state), candle, verdict, int(s.late_candles))

    def describe(self, origin: int) -> str:
        name = pb.SeriesState.Name(self.state).removeprefix("SERIES_STATE_")
        parts = [f"{(self.at - origin) / 1000:+.2f}s {name}"]
        if self.candle:
            parts.append(f"candle {(self.candle - origin) / 1000:+.2f}s")
        if self.verdict:
            parts.append(f"verdict_time {(self.verdict - origin) / 1000:+.2f}s")
        if self.late:
            parts.append(f"late {self.late}")
        return " ".join(parts)


@dataclass
class Subscriber:
    """One StreamHealthScores stream for every series; ``log[symbol]`` is each
    message in arrival order. ``error`` is set if the stream ends."""

    stub: Any
    log: dict[str, list[Seen]] = field(default_factory=dict)
    error: str = ""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def state(self, symbol: str) -> int | None:
        seen = self.log.get(symbol)
        return seen[-1].state if seen else None

    def count(self, states: tuple[int, ...], symbols: list[str]) -> int:
        return sum(self.state(s) in states for s in symbols)

    async def _run(self) -> None:
        try:
            async for msg in self.stub.StreamHealthScores(
                pb.StreamHealthScoresRequest(), timeout=3600
            ):
                self.log.setdefault(msg.score.symbol, []).append(Seen.of(now_ms(), msg.score))
                self._changed.set()
        except grpc.aio.AioRpcError as exc:
            self.error = f"{exc.code().name}: {exc.details()}"
            self._changed.set()

    async def until(self, check: Any, within: float) -> bool:
        """Whether ``check()`` held within ``within`` seconds (re-checked per message)."""
        deadline = time.monotonic() + within
        while not check():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.error:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
        return True


def first_after(log: list[Seen], since: int, states: tuple[int, ...]) -> Seen | None:
    """The first message at or after ``since`` in one of ``states``."""
    return next((m for m in log if m.at >= since and m.state in states), None)


def state_at(log: list[Seen], t: int, start: int = 0) -> tuple[int | None, int]:
    """(state held at ``t``, index to resume from), ``log`` walked from ``start``
    (callers ask in increasing ``t``)."""
    i = start
    while i < len(log) and log[i].at <= t:
        i += 1
    return (log[i - 1].state if i else None), i


@dataclass
class ListPoll:
    """ListHealthScores on one replica every ``every`` seconds: each reply with the
    instants it was asked (``sent``) and answered (``got``)."""

    stub: Any
    every: float
    replies: list[tuple[int, int, dict[str, Seen]]] = field(default_factory=list)
    errors: int = 0
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            sent = now_ms()
            try:
                reply = await self.stub.ListHealthScores(
                    pb.ListHealthScoresRequest(page_size=1000), timeout=5
                )
                got = now_ms()
                rows = {s.symbol: Seen.of(got, s) for s in reply.scores}
                self.replies.append((sent, got, rows))
            except grpc.aio.AioRpcError:
                self.errors += 1
            await asyncio.sleep(max(0.0, self.every - (now_ms() - sent) / 1000))


@dataclass
class Heartbeats:
    """The live tail's heartbeat document read every ``every`` seconds: each change
    as (read at, epoch, confirmed_at ms on the database's clock)."""

    db: Any
    every: float = 0.05
    seen: list[tuple[int, int, int]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def first_of_epoch_after(self, epoch: int) -> tuple[int, int, int] | None:
        return next((h for h in self.seen if h[1] > epoch), None)

    def first_after(self, t: int) -> tuple[int, int, int] | None:
        return next((h for h in self.seen if h[2] >= t), None)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a slow read is just a later sample
                doc = await self.db[VERDICTS].find_one({"_id": HEARTBEAT_ID})
                if doc is not None:
                    at = doc["confirmed_at"]
                    mark = (now_ms(), int(doc.get("epoch", 0)), _ms_of(at))
                    if not self.seen or self.seen[-1][1:] != mark[1:]:
                        self.seen.append(mark)
            await asyncio.sleep(self.every)


def _ms_of(value: dt.datetime) -> int:
    # PyMongo returns naive UTC datetimes unless tz_aware is set.
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return round(value.timestamp() * 1000)
