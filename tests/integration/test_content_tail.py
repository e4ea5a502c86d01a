"""The live tail checks candle content as candles arrive (issue 21): every exact rule,
a spike once the next candle reverts it (a persistent jump is none), a frozen run
at its length and a 1m -> 5m mismatch once the slot is whole, each listed on a
follower with detected_live; a cycle afterwards keeps the same findings; and a
tail-raised suspect reaches a follower's score stream, and so does its end."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest

from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.fault_injection import SERIES_RULES, inject
from auditsvc.devtools.market_data import aggregate_up, generate
from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.candle import Candle
from auditsvc.domain.timeframes import parse_timeframe
from tests.integration.test_content_cycle import FIELDS, doc
from tests.support import eventually

TIMEOUT = 30.0
BTC = "BTCUSDT"
R = AnomalyRule
S1, M1, M5 = parse_timeframe("1s"), parse_timeframe("1m"), parse_timeframe("5m")
FROZEN_RUN = 10


def settings_for(make_settings: Callable[..., Any], replica: str, **extra: str) -> Any:
    env = {
        "AUDIT_SYMBOLS": BTC,
        "AUDIT_TIMEFRAMES": "1s",
        "AUDIT_INGEST_GRACE": "2",
        "AUDIT_LOOKBACK": "3600",
        "AUDIT_MIN_CANDLES": "10",
        "LIVE_MODE": "change_stream",
        "LIVE_POLL_INTERVAL": "0.2",
        "ENABLE_LEADER_ELECTION": "true",
        "LEADER_ELECTION_HEARTBEAT_INTERVAL": "1",
        "LEADER_ELECTION_TIMEOUT": "5",
        "REPLICA_ID": replica,
        "ANOMALY_FROZEN_MIN_RUN": str(FROZEN_RUN),
        **FIELDS,
    }
    return make_settings(**{**env, **extra})


async def pair(make_settings: Callable[..., Any], start_replica: Any, **extra: str) -> Any:
    """A leader whose tail is up, then a follower; returns (leader, follower)."""
    leader = await start_replica(settings_for(make_settings, "lead", **extra))
    registry = leader.app.metrics.registry

    async def tailing() -> bool:
        return registry.get_sample_value("auditsvc_live_tail_up") == 1

    await eventually(tailing, within=TIMEOUT)
    follower = await start_replica(settings_for(make_settings, "follow", **extra))
    assert follower.app.leadership.term() is None
    return leader, follower


async def listed(replica: Any, rules: list[int] | None = None) -> list[Any]:
    request = pb.ListAnomaliesRequest(page_size=1000, rules=rules or [])
    reply = await replica.stub.ListAnomalies(request, timeout=TIMEOUT)
    return list(reply.anomalies)


def keys(found: list[Any]) -> set[tuple[int, str]]:
    return {(a.open_time.ToMilliseconds(), pb.AnomalyRule.Name(a.rule)[13:]) for a in found}


async def insert_in_order(col: Any, candles: list[Candle], symbol: str = BTC) -> None:
    """One insert per candle, ascending, as a feed writes them."""
    for c in candles:
        await asyncio.wait_for(col.insert_one(doc(symbol, c)), TIMEOUT)


class TestTailFindings:
    """Each kind of fault is found by the tail as its candles arrive."""

    @pytest.mark.parametrize("mode", ["change_stream", "poll"])
    async def test_every_single_series_rule(
        self, make_settings: Any, start_replica: Any, mode: str
    ) -> None:
        """Every exact rule, a spike, a frozen run, no jump: exactly the injected faults
        are listed on a follower, detected live; a cycle afterwards keeps them."""
        leader, follower = await pair(make_settings, start_replica, LIVE_MODE=mode)
        now = int(time.time() * 1000)
        clean = generate(7, S1, S1.shift(S1.floor(now), -400), 380)
        faulty = inject(
            clean, S1, now + 60_000, 3, 1, SERIES_RULES, frozen_run=(FROZEN_RUN + 2, FROZEN_RUN + 5)
        )
        # A jump that persists: every candle from 300 on moved up 40 %.
        jump_at = clean[300].open_time_ms
        assert not any(jump_at - 3000 <= t <= jump_at + 3000 for t in faulty.truth)
        candles = [
            dataclasses.replace(
                c,
                **{
                    k: getattr(c, k) * 1.4
                    for k in ("open", "high", "low", "close")
                    if getattr(c, k) is not None
                },
                quote_volume=None if c.quote_volume is None else c.quote_volume * 1.4,
            )
            if c.open_time_ms >= jump_at and c.open_time_ms < S1.floor(now)
            else c
            for c in faulty.candles
        ]
        col = leader.app.database.db[f"candles_{BTC}_1s"]
        await insert_in_order(col, candles)
        truth = {(t, rule.value) for t, rule in faulty.truth.items()}
        assert {r for _, r in truth} == {r.value for r in SERIES_RULES}

        async def all_found() -> list[Any]:
            found = await listed(follower)
            assert keys(found) >= truth, sorted(truth - keys(found))
            return found

        found = await eventually(all_found, within=TIMEOUT)
        assert keys(found) == truth  # no jump, no false finding
        assert all(a.detected_live for a in found)

        await leader.stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
        after = await listed(follower)
        assert keys(after) == truth
        assert len(after) == len(found)
        assert all(a.detected_live for a in after)
        registry = leader.app.metrics.registry
        spikes = registry.get_sample_value(
            "auditsvc_anomalies_found_total", {"rule": "PRICE_SPIKE", "timeframe": "1s"}
        )
        assert spikes == 1

    async def test_aggregate_mismatch_when_slot_is_whole(
        self, make_settings: Any, start_replica: Any
    ) -> None:
        """A 5m candle that is not its 1m children's aggregate is found when the last
        of them arrives, whichever comes last; a slot missing a child never is."""
        leader, follower = await pair(
            make_settings, start_replica, AUDIT_TIMEFRAMES="1m,5m", AUDIT_INGEST_GRACE="0"
        )
        now = int(time.time() * 1000)
        start = M5.shift(M5.floor(now), -8)
        children = generate(11, M1, start, 35)
        higher = aggregate_up(children, M1, M5)
        assert len(higher) == 7
        bad_high = dataclasses.replace(higher[1], high=(higher[1].high or 0) * 1.01)
        bad_volume = dataclasses.replace(higher[3], volume=(higher[3].volume or 0) * 1.02)
        incomplete = dataclasses.replace(higher[5], low=(higher[5].low or 0) * 0.99)
        higher[1], higher[3], higher[5] = bad_high, bad_volume, incomplete
        missing_child = children[5 * 5 + 2].open_time_ms
        c1 = leader.app.database.db[f"candles_{BTC}_1m"]
        c5 = leader.app.database.db[f"candles_{BTC}_5m"]
        for i, h in enumerate(higher):
            kids = [c for c in children[5 * i : 5 * i + 5] if c.open_time_ms != missing_child]
            if i % 2:  # the higher candle first, its last child last
                await insert_in_order(c5, [h])
                await insert_in_order(c1, kids)
            else:
                await insert_in_order(c1, kids)
                await insert_in_order(c5, [h])
        truth = {
            (bad_high.open_time_ms, "AGGREGATE_MISMATCH"),
            (bad_volume.open_time_ms, "AGGREGATE_MISMATCH"),
        }
        rules = [pb.ANOMALY_RULE_AGGREGATE_MISMATCH]

        async def found() -> list[Any]:
            got = await listed(follower, rules)
            assert keys(got) >= truth
            return got

        got = await eventually(found, within=TIMEOUT)
        # The whole pass that found them has also judged the incomplete slot.
        await asyncio.sleep(1.0)
        got = await listed(follower, rules)
        assert keys(got) == truth
        assert all(a.detected_live for a in got)
        by_open = {a.open_time.ToMilliseconds(): a for a in got}
        assert by_open[bad_volume.open_time_ms].observed == pytest.approx(bad_volume.volume)
        await leader.stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
        after = await listed(follower, rules)
        assert keys(after) == truth and all(a.detected_live for a in after)


class TestSuspectStream:
    """A suspect raised by the tail, and its end, reach a follower's score stream."""

    async def test_suspect_pushed_then_cleared(
        self, make_settings: Any, start_replica: Any
    ) -> None:
        """suspect=true is pushed within seconds of the bad candle's insert, and
        suspect=false within seconds of its horizon (slots + 1 + grace)."""
        leader, follower = await pair(make_settings, start_replica, VALIDITY_SUSPECT_SLOTS="2")
        col = leader.app.database.db[f"candles_{BTC}_1s"]
        now = int(time.time() * 1000)
        start = S1.shift(S1.floor(now), -30)
        market = generate(5, S1, start, 400)
        bad_at = S1.shift(S1.floor(now), 8)
        c = next(c for c in market if c.open_time_ms == bad_at)
        assert c.open is not None and c.close is not None
        bad = dataclasses.replace(c, high=min(c.open, c.close) * 0.999)
        inserted: dict[int, float] = {}

        async def feed() -> None:
            # Each candle as its slot closes, so the series stays LIVE and its document
            # unchanged: only the tail's suspect writes can make the stream push.
            for candle in market:
                delay = (S1.next_open(candle.open_time_ms) + 100) / 1000 - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await col.insert_one(doc(BTC, bad if candle.open_time_ms == bad_at else candle))
                inserted[candle.open_time_ms] = time.time()

        feeding = asyncio.create_task(feed())
        stream = follower.stub.StreamHealthScores(
            pb.StreamHealthScoresRequest(), timeout=3 * TIMEOUT
        )
        try:
            while not (await asyncio.wait_for(stream.read(), TIMEOUT)).score.suspect:
                pass
            assert bad_at in inserted
            assert time.time() - inserted[bad_at] < 2.0
            horizon_s = (S1.shift(bad_at, 3) + 2000) / 1000
            while True:
                pushed = await asyncio.wait_for(stream.read(), TIMEOUT)
                if not pushed.score.suspect:
                    break
            assert pushed.score.state == pb.SERIES_STATE_LIVE
            assert time.time() >= horizon_s - 0.2
            assert time.time() - horizon_s < 2.0
        finally:
            stream.cancel()
            feeding.cancel()
            await asyncio.gather(feeding, return_exceptions=True)
