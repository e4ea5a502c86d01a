"""15. Take-office: how long a new leader takes to vouch for every series.

For each size in ``take_office_series``: that many ``1h`` series share one
collection (``{symbol, timestamp}`` and ``{timestamp}`` indexes, as ``setup-db``
makes), three candles each, the newest in the current hour. Two replicas with
election at the deployment's settings (heartbeat 10 s, lease 30 s),
LIVE_MODE=poll. The first leader's tail stores every series' verdict
and confirms them (its time from taking office is the *cold* figure: every
verdict is a write). Then it is SIGKILLed; measured on the database's clock:
the next term's ``acquired_at`` (lease document) to its first confirmation's
``written_at`` (``audit_verdicts``), which follows its snapshot of every
series' newest candle and the writes of the verdicts that changed (none here).
Until then every replica serves UNKNOWN once the old confirmation is older
than LIVE_STALE_AFTER. A report, no target.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from typing import Any

from bench.context import Context, NotMeasured
from bench.figures.common import MET, result
from bench.procs import Replica

KEY = "take_office"
TITLE = "Take-office (a new leader's first verdict for every series)"
TARGET = "reported: lease acquired -> first confirmation of every series, at 1,000 and 30,000"

HOUR = 3_600_000
_INSERT_BATCH = 20_000


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    rows: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for n in sz.take_office_series:
        try:
            rows[str(n)] = await _one(ctx, n)
        except NotMeasured as exc:  # keep the sizes that were measured
            missing[str(n)] = str(exc)
    if not rows:
        raise NotMeasured("; ".join(missing.values()))
    parts = [
        f"{n}: takeover {r['takeover_s']:.2f} s (cold {r['cold_s']:.2f} s)" for n, r in rows.items()
    ] + [f"not measured: {why}" for why in missing.values()]
    return result(
        target=TARGET,
        summary="; ".join(parts) + "; 1h series in one collection, LIVE_MODE=poll",
        verdict=MET,
        ratio=None,
        ratio_of="",
        details={**rows, "not_measured": missing},
    )


async def _one(ctx: Context, n: int) -> dict[str, Any]:
    name = ctx.database(f"take_office_{n}")
    db = ctx.client[name]
    coll = db["klines_1h"]
    await coll.create_index([("symbol", 1), ("timestamp", 1)])
    await coll.create_index([("timestamp", 1)])
    symbols = [f"T{i:05d}USDT" for i in range(n)]
    now = int(time.time() * 1000) // HOUR * HOUR
    docs: list[dict[str, Any]] = []
    for sym in symbols:
        docs += [_candle(sym, now - k * HOUR) for k in range(3)]
        if len(docs) >= _INSERT_BATCH:
            await coll.insert_many(docs)
            docs = []
    if docs:
        await coll.insert_many(docs)
    path = ctx.log_dir / f"take_office_{n}.symbols"
    path.write_text("\n".join(symbols))
    # By default the deployment's election settings (heartbeat 10 s, lease 30 s), not
    # figure 7's fast ones: at 30,000 series the snapshot's reads kept a 3 s lease
    # from being renewed on SecantusDB, and each new term stepped down before
    # confirming. (--tiny uses a short lease: it only proves the harness.)
    heartbeat, lease = ctx.sizes.take_office_election
    env = {
        "ENABLE_LEADER_ELECTION": "true",
        "LEADER_ELECTION_HEARTBEAT_INTERVAL": f"{heartbeat:g}",
        "LEADER_ELECTION_TIMEOUT": f"{lease:g}",
        "AUDIT_SYMBOLS_FILE": str(path),
        "AUDIT_TIMEFRAMES": "1h",
        "CANDLE_COLLECTION_TEMPLATE": "klines_{timeframe}",
        "LIVE_MODE": "poll",
        "MONGODB_TIMEOUT_MS": "30000",
    }
    first = await ctx.replica(f"to{n}a", name, **env)
    within = 60 + n / 100  # generous: seconds per thousand series on a loaded machine
    cold = await _confirmation(db, lambda e: True, within)
    if cold is None:
        raise NotMeasured(f"{n} series: no first confirmation within {within:.0f} s")
    first_lease = await db["leader_election"].find_one({"epoch": cold["epoch"]})
    second: Replica = await ctx.replica(f"to{n}b", name, **env)
    await asyncio.sleep(heartbeat * 2)  # the second replica is a follower by now
    first.signal(signal.SIGKILL)
    old = cold["epoch"]
    taken = await _confirmation(db, lambda e: e > old, within + lease)
    await second.close()
    await first.close()
    if taken is None or first_lease is None:
        raise NotMeasured(f"{n} series: the new leader confirmed nothing within {within:.0f} s")
    lease = await db["leader_election"].find_one({})
    if lease is None or int(lease["epoch"]) != int(taken["epoch"]):
        raise NotMeasured(f"{n} series: the lease moved on again during the measurement")
    return {
        "series": n,
        "cold_s": _seconds(first_lease["acquired_at"], cold["written_at"]),
        "takeover_s": _seconds(lease["acquired_at"], taken["written_at"]),
    }


async def _confirmation(db: Any, epoch_ok: Any, within: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        doc = await db["audit_verdicts"].find_one({})
        if doc is not None and epoch_ok(int(doc["epoch"])):
            return dict(doc)
        await asyncio.sleep(0.05)
    return None


def _seconds(start: dt.datetime, end: dt.datetime) -> float:
    return round((end - start).total_seconds(), 3)


def _candle(symbol: str, t_ms: int) -> dict[str, Any]:
    price = 100.0
    return {
        "symbol": symbol,
        "timestamp": dt.datetime.fromtimestamp(t_ms / 1000, tz=dt.UTC),
        "open": price,
        "high": price * 1.002,
        "low": price * 0.998,
        "close": price * 1.001,
        "volume": 12.5,
    }
