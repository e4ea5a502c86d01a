"""What the healing figures (17, 18) share: market-like `1h` series with seeded gaps,
the feed that keeps them live, a simulated backfill writer and the replicas'
settings (their view of the gaps is ``bench.gap_watch``).

Every series is generated whole up front (``auditsvc.devtools.market_data``: heavy
tails, volatility clustering, quiet stretches), 48 closed hourly slots and a few
to come, and stored without its gaps' candles in ``klines_1h`` (the indexes
``setup-db`` makes for symbols sharing a collection). Each series has one or two
gaps inside the default window (30 slots; AUDIT_LOOKBACK at its default): a
MEDIUM one is one slot, a HIGH one two to eight (over an hour). ``HourFeed``
writes each new slot just after it closes, so no gap grows at the live edge.

The writer fills a request with the very candles the gap withheld (only slots
that hold none), as a real writer re-fetching the exchange's klines would, and
then closes it (``open: false, status: done``: the documented writer loop).

Limits: times are this process's wall clock, the one the replicas read on the
same machine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from auditsvc.devtools.market_data import MarketModel, generate
from auditsvc.domain.candle import Candle
from auditsvc.domain.timeframes import parse_timeframe
from bench.context import Context, NotMeasured
from bench.stats import percentile

TIMEFRAME = "1h"
TF = parse_timeframe(TIMEFRAME)
HOUR = 3_600_000
COLLECTION = "klines_1h"
HISTORY = 48  # closed slots stored before the replicas start
AHEAD = 3  # slots generated for HourFeed, should the run cross an hour
# Gaps lie in [last closed - 26 h, last closed - 1 h): inside the default window
# (30 slots) even after the window moves on by an hour or two.
OLDEST, NEWEST = 26, 1
HIGH_SHARE = 0.35

Key = tuple[str, int]  # (symbol, gap start ms): a gap's identity in ListGaps


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def symbols(n: int) -> list[str]:
    return [f"H{i:04d}USDT" for i in range(n)]


@dataclass(frozen=True)
class SeededGap:
    symbol: str
    start_ms: int
    end_ms: int

    @property
    def key(self) -> Key:
        return (self.symbol, self.start_ms)

    @property
    def missing(self) -> int:
        return (self.end_ms - self.start_ms) // HOUR

    @property
    def high(self) -> bool:
        return self.end_ms - self.start_ms > HOUR


def _doc(symbol: str, c: Candle) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "timestamp": dt.datetime.fromtimestamp(c.open_time_ms / 1000, tz=dt.UTC),
        "open": c.open,
        "high": c.high,
        "low": c.low,
        "close": c.close,
        "volume": c.volume,
    }


class Market:
    """The series, their gaps, and the candles each gap withheld."""

    def __init__(self, syms: list[str], seed: int) -> None:
        rng = random.Random(seed)
        self.symbols = syms
        self.last_closed = now_ms() // HOUR * HOUR - HOUR
        first = self.last_closed - (HISTORY - 1) * HOUR
        self.candles: dict[str, dict[int, dict[str, Any]]] = {}
        self.gaps: list[SeededGap] = []
        for i, sym in enumerate(syms):
            model = MarketModel(start_price=round(rng.lognormvariate(3.5, 2.0), 4) or 1.0)
            series = generate(seed * 100_003 + i, TF, first, HISTORY + AHEAD, model)
            self.candles[sym] = {c.open_time_ms: _doc(sym, c) for c in series}
            self.gaps += self._gaps(rng, sym)
        self.withheld = {t for g in self.gaps for t in _slots(g.symbol, g.start_ms, g.end_ms)}

    def _gaps(self, rng: random.Random, sym: str) -> list[SeededGap]:
        # One or two, in separate halves of the range, so they never touch.
        halves = [(OLDEST, 14), (13, NEWEST)] if rng.random() < 0.5 else [(OLDEST, NEWEST)]
        out = []
        for old, new in halves:
            length = rng.randint(2, 8) if rng.random() < HIGH_SHARE else 1
            back = rng.randint(new + length, old)  # slots before the last closed one
            start = self.last_closed - (back - 1) * HOUR
            out.append(SeededGap(sym, start, start + length * HOUR))
        return out

    @property
    def by_key(self) -> dict[Key, SeededGap]:
        return {g.key: g for g in self.gaps}

    async def seed(self, db: Any) -> int:
        coll = db[COLLECTION]
        await coll.create_index([("symbol", 1), ("timestamp", 1)])
        await coll.create_index([("timestamp", 1)])
        docs = [
            d
            for sym, series in self.candles.items()
            for t, d in series.items()
            if t <= self.last_closed and (sym, t) not in self.withheld
        ]
        for i in range(0, len(docs), 10_000):
            await coll.insert_many(docs[i : i + 10_000], ordered=False)
        return len(docs)

    def docs(self, symbol: str, opens: list[int]) -> list[dict[str, Any]]:
        series = self.candles.get(symbol, {})
        return [dict(series[t]) for t in opens if t in series]


def _slots(symbol: str, start: int, end: int) -> list[tuple[str, int]]:
    return [(symbol, t) for t in range(start, end, HOUR)]


class Loop:
    """A background loop with an idempotent ``close``."""

    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        raise NotImplementedError


class HourFeed(Loop):
    """Writes every series' candle of each slot that closes during the run."""

    def __init__(self, db: Any, market: Market) -> None:
        self.coll = db[COLLECTION]
        self.market = market
        self.written = 0

    async def _run(self) -> None:
        slot = self.market.last_closed + HOUR
        while True:
            # One second after the slot closes: well inside AUDIT_INGEST_GRACE (10 s).
            await asyncio.sleep(max(0.0, (slot + HOUR + 1000 - now_ms()) / 1000))
            docs = [d for s in self.market.symbols for d in self.market.docs(s, [slot])]
            if docs:
                await self.coll.insert_many(docs, ordered=False)
                self.written += len(docs)
            slot += HOUR


@dataclass
class Fill:
    """One request as the writer handled it (bench ms; ``created_ms`` the service's)."""

    request_id: str
    key: Key
    created_ms: int
    seen_ms: int
    fill_ms: int | None = None
    written: int = 0


class Writer(Loop):
    """Fills each open request ``delay`` seconds (uniform in the range) after it
    first sees it, then closes it, as the documented writer loop does."""

    def __init__(
        self,
        db: Any,
        market: Market,
        delay: tuple[float, float],
        seed: int,
        on_fill: Callable[[Key], None] | None = None,
    ) -> None:
        self.db = db
        self.on_fill = on_fill
        self.market = market
        self.delay = delay
        self.rng = random.Random(seed)
        self.fills: dict[str, Fill] = {}
        self.errors: list[str] = []
        self._work: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        await super().close()
        for task in list(self._work):
            task.cancel()
        await asyncio.gather(*self._work, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                reqs = await self.db["backfill_requests"].find({"open": True}).to_list(None)
            except Exception as exc:  # a slow database must not end the writer
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                reqs = []
            for req in reqs:
                if req["_id"] in self.fills:
                    continue
                start = _ms(req["start_time"])
                fill = Fill(req["_id"], (req["symbol"], start), _ms(req["created_at"]), now_ms())
                self.fills[req["_id"]] = fill
                task = asyncio.create_task(self._fill(req, fill, self.rng.uniform(*self.delay)))
                self._work.add(task)
                task.add_done_callback(self._work.discard)
            await asyncio.sleep(0.1)

    async def _fill(self, req: dict[str, Any], fill: Fill, delay: float) -> None:
        await asyncio.sleep(delay)
        coll = self.db[COLLECTION]
        sym = req["symbol"]
        held = {
            _ms(d["timestamp"])
            for d in await coll.find(
                {"symbol": sym, "timestamp": {"$gte": req["start_time"], "$lt": req["end_time"]}},
                {"timestamp": 1},
            ).to_list(None)
        }
        opens = range(_ms(req["start_time"]), _ms(req["end_time"]), HOUR)
        docs = self.market.docs(sym, [t for t in opens if t not in held])
        if docs:
            await coll.insert_many(docs, ordered=False)
        fill.fill_ms, fill.written = now_ms(), len(docs)
        if docs and self.on_fill is not None:
            self.on_fill(fill.key)
        await self.db["backfill_requests"].update_one(
            {"_id": req["_id"], "open": True},
            {"$set": {"open": False, "status": "done", "closed_by": "bench-writer"}},
        )


def env(
    syms: list[str], *, live_mode: str, interval: float, cap: int, **more: str
) -> dict[str, str]:
    """Two replicas with election at its defaults; scheduled cycles over the default
    window; auto-backfill on for every gap (MIN_AUTO_BACKFILL_GAP at its default,
    3600 s: one `1h` slot qualifies)."""
    return {
        "ENABLE_LEADER_ELECTION": "true",
        "ENABLE_AUDITOR": "true",
        "AUDIT_INTERVAL": f"{interval:g}",
        "AUDIT_STARTUP_DELAY": "0",
        "AUDIT_SYMBOLS": ",".join(syms),
        "AUDIT_TIMEFRAMES": TIMEFRAME,
        "CANDLE_COLLECTION_TEMPLATE": "klines_{timeframe}",
        "ENABLE_AUTO_BACKFILL": "true",
        "MAX_AUTO_BACKFILL_JOBS": str(cap),
        "LIVE_MODE": live_mode,
        **more,
    }


async def start_replicas(ctx: Context, database: str, tag: str, env: dict[str, str]) -> list[Any]:
    """Two replicas with ``env``, started side by side."""
    try:
        return list(
            await asyncio.gather(*(ctx.replica(f"{tag}-{i}", database, **env) for i in (1, 2)))
        )
    except (RuntimeError, TimeoutError) as exc:
        raise NotMeasured(f"replicas did not start: {exc}") from exc


async def cycles(db: Any) -> list[tuple[int, int]]:
    """(started, finished) ms of every successful cycle, by start."""
    docs = await db["audit_cycles"].find({"succeeded": True}).to_list(None)
    return sorted((to_ms(d["started_at"]), to_ms(d["finished_at"])) for d in docs)


def summary(values: list[float]) -> dict[str, float]:
    """p50, p99 and max of ``values`` (seconds, rounded to ms) and their count."""
    return {
        "p50": round(percentile(values, 50), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3) if values else math.nan,
        "n": len(values),
    }


def _ms(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return round(value.timestamp() * 1000)


def to_ms(value: dt.datetime) -> int:
    return _ms(value)
