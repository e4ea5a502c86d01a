"""What the live-state figures (10-12) share: a 1s candle feed, a StreamHealthScores
subscriber that notes when each series' first LATE arrives, and replica settings.

The feed writes, just after each 1-second slot closes, the candle of that slot
for every active symbol, in one insert_many into ``klines_1s`` (the symbols share
a collection, as CANDLE_COLLECTION_TEMPLATE=klines_{timeframe} makes them).
A stopped symbol's first missing slot closes one second after its last candle's
close; LATE is due AUDIT_INGEST_GRACE after that.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import random
import time
import zlib
from collections.abc import Callable
from typing import Any

import grpc

from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.market_data import MarketModel, _Market
from auditsvc.domain.candle import Candle
from auditsvc.domain.timeframes import parse_timeframe
from bench.figures.common import ms

_S1 = parse_timeframe("1s")
_HISTORY = 300

SEC = 1000
COLLECTION = "klines_1s"
GRACE_S = 1.0
# Inserted this long after a slot closes, as a kline writer would.
WRITE_DELAY_S = 0.05


def symbols(n: int, prefix: str = "L") -> list[str]:
    return [f"{prefix}{i:04d}USDT" for i in range(n)]


def live_env(syms: list[str], mode: str, poll_interval: float) -> dict[str, str]:
    return {
        "AUDIT_SYMBOLS": ",".join(syms),
        "AUDIT_TIMEFRAMES": "1s",
        "CANDLE_COLLECTION_TEMPLATE": "klines_{timeframe}",
        "AUDIT_INGEST_GRACE": f"{GRACE_S:g}",
        "LIVE_MODE": mode,
        "LIVE_POLL_INTERVAL": f"{poll_interval:g}",
    }


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def candle_doc(symbol: str, c: Candle) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "timestamp": dt.datetime.fromtimestamp(c.open_time_ms / 1000, tz=dt.UTC),
        "open": c.open,
        "high": c.high,
        "low": c.low,
        "close": c.close,
        "volume": c.volume,
    }


class Markets:
    """Market-like 1s candles per symbol (auditsvc.devtools.market_data), generated
    in order as the feed writes them: the content checks (on by default) see a
    market, never a frozen feed of identical candles."""

    def __init__(self) -> None:
        self._markets: dict[str, Any] = {}
        # The last candles generated per symbol (what was written, tampering aside).
        self.history: dict[str, collections.deque[Candle]] = {}

    def candle(self, symbol: str, t_ms: int) -> Candle:
        m = self._markets.get(symbol)
        if m is None:
            seed = zlib.crc32(symbol.encode())
            m = self._markets[symbol] = _Market(random.Random(seed), _S1, MarketModel())
            self.history[symbol] = collections.deque(maxlen=_HISTORY)
        c: Candle = m.candle(t_ms)
        self.history[symbol].append(c)
        return c

    def doc(self, symbol: str, t_ms: int) -> dict[str, Any]:
        return candle_doc(symbol, self.candle(symbol, t_ms))


def due_ms(last_open_ms: int) -> int:
    """When LATE is due for a series whose newest candle opened at ``last_open_ms``."""
    return last_open_ms + 2 * SEC + round(GRACE_S * 1000)


# Told of every insert: (symbol, open ms) of each candle, when the insert began
# and when it returned (ms). The ground truth of figures 13 and 14.
Journal = Callable[[list[tuple[str, int]], int, int], None]


class Feed:
    """The 1s feed; ``stop(symbol)`` ends a symbol's feed and returns its last open,
    ``resume(symbol)`` starts it again. ``journal``, when given, hears of every
    insert after it returns (the primed history excepted)."""

    def __init__(self, db: Any, syms: list[str], journal: Journal | None = None) -> None:
        self.coll = db[COLLECTION]
        self.journal = journal
        self.active = set(syms)
        self.newest: dict[str, int] = {}
        self.late_writes = 0  # ticks whose insert finished after the slot's grace
        self.markets = Markets()
        # symbol -> how to spoil its next candle (content figures); what was spoiled:
        # (symbol, open ms) -> when its insert returned (ms).
        self.tamper: dict[str, Callable[[Candle], Candle]] = {}
        self.tampered: dict[tuple[str, int], int] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def prime(self, seconds: int) -> None:
        """``seconds`` closed slots per active symbol, so each starts LIVE."""
        last = now_ms() // SEC * SEC - SEC
        docs = [
            self.markets.doc(s, last - i * SEC)
            for s in self.active
            for i in range(seconds - 1, -1, -1)
        ]
        # The indexes `auditsvc setup-db` makes for symbols sharing a collection.
        await self.coll.create_index([("symbol", 1), ("timestamp", 1)])
        await self.coll.create_index([("timestamp", 1)])
        for i in range(0, len(docs), 10_000):
            await self.coll.insert_many(docs[i : i + 10_000], ordered=False)
        self.newest = dict.fromkeys(self.active, last)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def stop(self, symbol: str) -> int:
        async with self._lock:
            self.active.discard(symbol)
            return self.newest[symbol]

    async def resume(self, symbol: str, *, fill: bool) -> None:
        """Feeds ``symbol`` again from the next tick. ``fill``: that tick also writes
        every slot it missed (a writer catching up); otherwise they stay a hole."""
        async with self._lock:
            if not fill:
                self.newest[symbol] = now_ms() // SEC * SEC - SEC
            self.active.add(symbol)

    async def write(self, symbol: str, t_ms: int) -> None:
        """One candle for a stopped symbol (a resume with a hole)."""
        began = now_ms()
        await self.coll.insert_one(self.markets.doc(symbol, t_ms))
        if self.journal is not None:
            self.journal([(symbol, t_ms)], began, now_ms())

    async def _run(self) -> None:
        while True:
            now = now_ms()
            await asyncio.sleep((SEC - now % SEC) / 1000 + WRITE_DELAY_S)
            slot = now_ms() // SEC * SEC - SEC
            async with self._lock:
                written: list[tuple[str, int]] = []
                for s in self.active:
                    first = self.newest.get(s, slot - SEC) + SEC
                    written.extend((s, t) for t in range(first, slot + 1, SEC))
                    self.newest[s] = slot
                if written:
                    began = now_ms()
                    docs, spoiled = [], []
                    for s, t in written:
                        c = self.markets.candle(s, t)
                        spoil = self.tamper.pop(s, None)
                        if spoil is not None:
                            c = spoil(c)
                            spoiled.append((s, t))
                        docs.append(candle_doc(s, c))
                    await self.coll.insert_many(docs, ordered=False)
                    for key in spoiled:
                        self.tampered[key] = now_ms()
                    if self.journal is not None:
                        self.journal(written, began, now_ms())
            if now_ms() > slot + SEC + GRACE_S * 1000:
                self.late_writes += 1


class LateWatch:
    """One StreamHealthScores stream (all series) noting each watched series' first
    LATE score whose last_candle_open is the one given, with its arrival time (ms)."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub
        self.expect: dict[str, int] = {}
        self.arrived: dict[str, int] = {}
        self.live: set[str] = set()
        self.error = ""
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            async for msg in self._stub.StreamHealthScores(
                pb.StreamHealthScoresRequest(), timeout=3600
            ):
                s = msg.score
                if s.state == pb.SERIES_STATE_LIVE:
                    self.live.add(s.symbol)
                else:
                    self.live.discard(s.symbol)
                if (
                    s.state == pb.SERIES_STATE_LATE
                    and s.symbol in self.expect
                    and s.symbol not in self.arrived
                    and ms(s.last_candle_open) == self.expect[s.symbol]
                ):
                    self.arrived[s.symbol] = now_ms()
                self._changed.set()
        except grpc.aio.AioRpcError as exc:
            self.error = f"{exc.code().name}: {exc.details()}"
            self._changed.set()

    async def until(self, check: Any, within: float) -> bool:
        deadline = time.monotonic() + within
        while not check():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.error:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
        return True


async def live_gap_visible(stub: Any, symbol: str, start_ms: int) -> bool:
    reply = await stub.ListGaps(pb.ListGapsRequest(symbol=symbol, timeframe="1s"), timeout=5)
    return any(g.detected_live and ms(g.start_time) == start_ms for g in reply.gaps)


async def count_live(stub: Any) -> int:
    """Stored scores in state LIVE, every page."""
    total, token = 0, ""
    while True:
        reply = await stub.ListHealthScores(
            pb.ListHealthScoresRequest(
                state=pb.SERIES_STATE_LIVE, page_size=1000, page_token=token
            ),
            timeout=10,
        )
        total += len(reply.scores)
        token = reply.next_page_token
        if not token:
            return total


async def until_all_live(stub: Any, n: int, within: float) -> float:
    """Seconds until ``n`` series are stored LIVE; raises TimeoutError with the count."""
    began = time.monotonic()
    seen = 0
    while time.monotonic() - began < within:
        with contextlib.suppress(grpc.aio.AioRpcError):
            seen = await count_live(stub)
            if seen >= n:
                return time.monotonic() - began
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{seen}/{n} series stored LIVE within {within:g} s")
