"""Cycles check candle content (issue 21), against SecantusDB with the real Auditor:
market-like series (auditsvc.devtools.market_data) with faults injected at random
positions (fault_injection), each found exactly; a corrected candle's finding
resolved by the next cycle; the score's content fields; and fenced writes."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest

from auditsvc.devtools.fault_injection import inject, inject_mismatches
from auditsvc.devtools.market_data import aggregate_up, generate
from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.candle import Candle
from auditsvc.domain.errors import Fenced
from auditsvc.domain.records import AnomalyQuery
from auditsvc.domain.timeframes import parse_timeframe
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo import connect
from auditsvc.storage.mongo.anomaly_store import MongoAnomalyStore
from auditsvc.storage.mongo.database import ANOMALIES, SERIES, Database, ensure_indexes, to_dt
from auditsvc.usecases.auditing import Auditor
from tests.integration.standalone import standalone_auditor

TIMEOUT = 30.0
MIN = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SLOTS = 400
BTC = "BTCUSDT"
R = AnomalyRule
M1, M5 = parse_timeframe("1m"), parse_timeframe("5m")
# Every optional field the documents carry, so every exact rule can fire.
FIELDS = {
    "CANDLE_CLOSE_TIME_FIELD": "close_time",
    "CANDLE_TRADES_FIELD": "trades",
    "CANDLE_TAKER_BUY_VOLUME_FIELD": "taker_buy_volume",
    "CANDLE_QUOTE_VOLUME_FIELD": "quote_volume",
}
# TIME_IN_FUTURE is the live tail's: a cycle never reads past the settled edge.
CYCLE_EXACT = tuple(
    r for r in R if r not in (R.PRICE_SPIKE, R.FROZEN_FEED, R.AGGREGATE_MISMATCH, R.TIME_IN_FUTURE)
)


def doc(symbol: str, c: Candle) -> dict[str, Any]:
    """A data-manager candle document, as Binance klines are stored."""
    return {
        "symbol": symbol,
        "timestamp": to_dt(c.open_time_ms),
        "open": c.open,
        "high": c.high,
        "low": c.low,
        "close": c.close,
        "volume": c.volume,
        "close_time": c.close_time_ms,
        "trades": c.trade_count,
        "taker_buy_volume": c.taker_buy_volume,
        "quote_volume": c.quote_volume,
    }


@pytest.fixture
async def database(make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    settings = make_settings()
    handle = connect(settings.mongo.uri, settings.mongo.database, 2000)
    await asyncio.wait_for(ensure_indexes(handle), TIMEOUT)
    yield handle
    await handle.close()


def settings_for(make_settings: Callable[..., Settings], **env: str) -> Settings:
    return make_settings(**{"AUDIT_SYMBOLS": BTC, "AUDIT_TIMEFRAMES": "1m", **FIELDS, **env})


async def store(database: Database, timeframe: str, candles: Iterable[Candle]) -> None:
    docs = [doc(BTC, c) for c in candles]
    await asyncio.wait_for(database.db[f"candles_{BTC}_{timeframe}"].insert_many(docs), TIMEOUT)


async def cycle(audits: Auditor, timeframe: str = "1m", slots: int = SLOTS) -> Any:
    tf = parse_timeframe(timeframe)
    selection = audits.select([BTC], [timeframe], T0, tf.shift(T0, slots))
    return await asyncio.wait_for(audits.run_cycle(selection, trigger="rpc"), TIMEOUT)


async def findings(database: Database, timeframe: str = "1m") -> dict[int, set[AnomalyRule]]:
    """Stored findings by candle open time."""
    found = await asyncio.wait_for(
        MongoAnomalyStore(database).list(AnomalyQuery(timeframe=timeframe, limit=100_000)),
        TIMEOUT,
    )
    out: dict[int, set[AnomalyRule]] = {}
    for f in found:
        out.setdefault(f.anomaly.open_time_ms, set()).add(f.anomaly.rule)
    return out


def by_time(truth: dict[int, AnomalyRule]) -> dict[int, set[AnomalyRule]]:
    return {t: {rule} for t, rule in truth.items()}


class TestFound:
    """A cycle finds each injected fault exactly: its candle and its rule, nothing else."""

    @pytest.mark.parametrize("rule", CYCLE_EXACT, ids=lambda r: r.value)
    async def test_each_exact_rule(
        self, make_settings: Callable[..., Settings], database: Database, rule: AnomalyRule
    ) -> None:
        """Two bad candles of one exact kind in a clean series are its only findings."""
        clean = generate(11, M1, T0, SLOTS)
        faulty = inject(clean, M1, T0 + SLOTS * MIN, seed=5, per_rule=2, rules=[rule])
        await store(database, "1m", faulty.candles)
        audits = standalone_auditor(settings_for(make_settings), database, content=True)
        done = await cycle(audits)
        assert done.succeeded
        assert await findings(database) == by_time(faulty.truth)
        report = done.series[0]
        assert report.health.anomaly_count == 2
        present = report.present_candles
        assert report.health.validity == pytest.approx(100.0 * (present - 2) / present)

    async def test_spike_and_frozen_run(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """A spike the next candle reverts and a frozen run are found, candle by candle."""
        clean = generate(12, M1, T0, SLOTS)
        rules = [R.PRICE_SPIKE, R.FROZEN_FEED]
        faulty = inject(clean, M1, T0 + SLOTS * MIN, seed=7, per_rule=1, rules=rules)
        assert set(faulty.truth.values()) == set(rules)
        await store(database, "1m", faulty.candles)
        audits = standalone_auditor(settings_for(make_settings), database, content=True)
        await cycle(audits)
        assert await findings(database) == by_time(faulty.truth)

    async def test_aggregate_mismatch_and_incomplete(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """A 5m candle that is not its 1m children's aggregate is a mismatch; one whose
        child is missing is never one, however it differs."""
        children = generate(13, M1, T0, SLOTS)
        higher = aggregate_up(children, M1, M5)
        faulty = inject_mismatches(higher, seed=3, count=3)
        # Another 5m candle, changed too, but one of its children is missing.
        spare = next(c for c in faulty.candles if c.open_time_ms not in faulty.truth)
        assert spare.high is not None
        changed = dataclasses.replace(spare, high=spare.high * 1.01)
        tampered = [changed if c is spare else c for c in faulty.candles]
        gone = spare.open_time_ms + 2 * MIN
        await store(database, "1m", [c for c in children if c.open_time_ms != gone])
        await store(database, "5m", tampered)
        settings = settings_for(make_settings, AUDIT_TIMEFRAMES="1m,5m")
        audits = standalone_auditor(settings, database, content=True)
        await cycle(audits, "5m", SLOTS // 5)
        assert await findings(database, "5m") == by_time(faulty.truth)
        stored = await database.db[ANOMALIES].find_one({"timeframe": "5m"})
        assert stored is not None and stored["field"] in ("open", "high", "low", "close", "volume")
        assert stored["observed"] != stored["expected"]


class TestResolved:
    """A finding whose candle is corrected or removed is resolved by the next cycle."""

    async def test_corrected_and_removed(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """Fix one bad candle and delete another: both findings are gone after the next cycle."""
        clean = generate(14, M1, T0, SLOTS)
        faulty = inject(clean, M1, T0 + SLOTS * MIN, seed=9, per_rule=2, rules=[R.HIGH_BELOW_BODY])
        await store(database, "1m", faulty.candles)
        audits = standalone_auditor(settings_for(make_settings), database, content=True)
        await cycle(audits)
        fixed, removed = sorted(faulty.truth)
        assert set(await findings(database)) == {fixed, removed}
        good = next(c for c in clean if c.open_time_ms == fixed)
        col = database.db[f"candles_{BTC}_1m"]
        await col.replace_one({"timestamp": to_dt(fixed)}, doc(BTC, good))
        await col.delete_one({"timestamp": to_dt(removed)})
        await cycle(audits)
        assert await findings(database) == {}

    async def test_live_edge_scores(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """Through the incremental sweep: a bad candle near the live edge makes the series
        suspect with its count and validity; once corrected, the next cycle clears them."""
        settings = settings_for(make_settings, AUDIT_LOOKBACK="14400", AUDIT_INGEST_GRACE="0")
        now = int(time.time() * 1000)
        edge = M1.floor(now)
        clean = generate(15, M1, M1.shift(edge, -400), 400)
        bad_at = M1.shift(edge, -5)
        (i,) = [k for k, c in enumerate(clean) if c.open_time_ms == bad_at]
        c = clean[i]
        assert c.open is not None and c.close is not None and c.low is not None
        broken = dataclasses.replace(c, high=min(c.open, c.close) * 0.999)
        await store(database, "1m", [*clean[:i], broken, *clean[i + 1 :]])
        audits = standalone_auditor(settings, database, content=True)

        async def run() -> Any:
            selection = audits.select([BTC], ["1m"], None, None)
            return await asyncio.wait_for(
                audits.run_cycle(selection, trigger="rpc", default_window=True), TIMEOUT
            )

        first = (await run()).series[0].health
        assert (first.anomaly_count, first.suspect) == (1, True)
        assert first.validity < 100.0
        stored = await database.db[SERIES].find_one({"_id": f"{BTC}|1m"})
        assert stored is not None and (stored["suspect"], stored["anomaly_count"]) == (True, 1)
        col = database.db[f"candles_{BTC}_1m"]
        await col.replace_one({"timestamp": to_dt(bad_at)}, doc(BTC, c))
        second = (await run()).series[0].health
        assert (second.anomaly_count, second.suspect, second.validity) == (0, False, 100.0)
        assert await findings(database) == {}


class DeposedFence:
    """A fence whose term is over: every write is refused before it runs."""

    async def check(self, epoch: int) -> None:
        raise Fenced("a newer epoch has written")

    async def write_fenced(self, epoch: int, work: Callable[[Any], Any]) -> Any:
        raise Fenced("a newer epoch has written")


class TestFenced:
    """A cycle of a deposed leader stores no finding."""

    async def test_stale_epoch_writes_nothing(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """Every finding write goes through the fence, so a refused epoch stores none."""
        clean = generate(16, M1, T0, SLOTS)
        faulty = inject(clean, M1, T0 + SLOTS * MIN, seed=2, per_rule=1, rules=[R.PRICE_INVALID])
        await store(database, "1m", faulty.candles)
        audits = standalone_auditor(
            settings_for(make_settings), database, content=True, fence=DeposedFence()
        )
        with pytest.raises(Fenced):
            await cycle(audits)
        assert await database.db[ANOMALIES].count_documents({}) == 0
