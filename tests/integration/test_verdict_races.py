"""The live verdict is never wrong: a cycle and the live tail racing in either order
end with the newest observation stored; take-office loses no insert; a future-dated
candle never holds a dead series LIVE; a tail that stops confirming turns every
answer UNKNOWN. Failpoint gates pause each writer at the exact point of the race."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import pytest
from bson import Timestamp

from auditpb.v1 import audit_pb2 as pb
from auditsvc.ops.failpoints import Failpoints
from tests.integration.live_feed import Feeder, candle, live_settings
from tests.support import eventually

TIMEOUT = 20.0
SEC = 1000
LIVE, LATE, UNKNOWN = pb.SERIES_STATE_LIVE, pb.SERIES_STATE_LATE, pb.SERIES_STATE_UNKNOWN


async def served(replica: Any, symbol: str) -> Any:
    reply = await replica.stub.ListHealthScores(
        pb.ListHealthScoresRequest(symbols=[symbol]), timeout=TIMEOUT
    )
    return reply.scores[0] if reply.scores else None


async def in_state(replica: Any, symbol: str, state: int) -> Any:
    s = await served(replica, symbol)
    return s if s is not None and s.state == state else None


def _dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


async def stored(feeder: Feeder, symbol: str) -> dict[str, Any]:
    doc = await feeder.coll.database["audit_series"].find_one({"_id": f"{symbol}|1s"})
    assert doc is not None
    return dict(doc)


def run_audit(replica: Any, symbol: str) -> asyncio.Task[Any]:
    request = pb.RunAuditRequest(symbols=[symbol], timeframes=["1s"])
    return asyncio.ensure_future(replica.stub.RunAudit(request, timeout=2 * TIMEOUT))


class TestCycleAgainstTail:
    """A cycle paused between its scan and its store never replaces the tail's verdict."""

    async def test_stall_during_a_cycle_stays_late(
        self, make_settings: Any, start_replica: Any, feeder: Feeder
    ) -> None:
        """The cycle saw LIVE; the feed stops and the tail stores LATE; the cycle's store
        after it leaves LATE stored and served."""
        await feeder.backfill("BTCUSDT", 150)
        feeder.symbols.add("BTCUSDT")
        fp = Failpoints()
        replica = await start_replica(live_settings(make_settings, "poll"), failpoints=fp)
        await eventually(lambda: in_state(replica, "BTCUSDT", LIVE), TIMEOUT)
        gate = fp.gate("cycle.before_store")
        audit = run_audit(replica, "BTCUSDT")
        await asyncio.wait_for(gate.arrived.wait(), TIMEOUT)
        feeder.symbols.discard("BTCUSDT")
        await eventually(lambda: in_state(replica, "BTCUSDT", LATE), TIMEOUT)
        gate.released.set()
        reply = await asyncio.wait_for(audit, TIMEOUT)
        assert reply.cycle.series[0].health.state == LIVE  # what the cycle itself saw
        assert (await stored(feeder, "BTCUSDT"))["state"] == "late"
        assert (await served(replica, "BTCUSDT")).state == LATE

    async def test_recovery_during_a_cycle_stays_live(
        self, make_settings: Any, start_replica: Any, feeder: Feeder
    ) -> None:
        """The cycle saw LATE; the feed resumes and the tail stores LIVE; the cycle's
        store after it leaves LIVE stored and served."""
        await feeder.backfill("BTCUSDT", 150)
        fp = Failpoints()
        replica = await start_replica(live_settings(make_settings, "poll"), failpoints=fp)
        await eventually(lambda: in_state(replica, "BTCUSDT", LATE), TIMEOUT)
        gate = fp.gate("cycle.before_store")
        audit = run_audit(replica, "BTCUSDT")
        await asyncio.wait_for(gate.arrived.wait(), TIMEOUT)
        feeder.symbols.add("BTCUSDT")
        await eventually(lambda: in_state(replica, "BTCUSDT", LIVE), TIMEOUT)
        gate.released.set()
        reply = await asyncio.wait_for(audit, TIMEOUT)
        assert reply.cycle.series[0].health.state == LATE
        assert (await stored(feeder, "BTCUSDT"))["state"] == "live"
        assert (await served(replica, "BTCUSDT")).state == LIVE


class TestTailAgainstCycle:
    """The tail paused between its judgement and its store; a cycle runs in between."""

    async def test_newest_observation_wins(
        self, make_settings: Any, start_replica: Any, feeder: Feeder
    ) -> None:
        """The tail judged LATE and waits; the feed resumes and a whole cycle stores
        without touching the verdict; once released the tail stores LATE, then LIVE."""
        await feeder.backfill("BTCUSDT", 150)
        feeder.symbols.add("BTCUSDT")
        fp = Failpoints()
        settings = live_settings(make_settings, "poll")
        replica = await start_replica(settings, failpoints=fp)
        await eventually(lambda: in_state(replica, "BTCUSDT", LIVE), TIMEOUT)
        before = await stored(feeder, "BTCUSDT")
        gate = fp.gate("live.before_store")
        feeder.symbols.discard("BTCUSDT")
        await asyncio.wait_for(gate.arrived.wait(), TIMEOUT)  # the tail judged LATE
        feeder.symbols.add("BTCUSDT")
        await asyncio.wait_for(run_audit(replica, "BTCUSDT"), TIMEOUT)
        during = await stored(feeder, "BTCUSDT")
        assert (during["state"], during["verdict_at"]) == (before["state"], before["verdict_at"])
        assert during["cycle_id"] != before.get("cycle_id")  # the cycle did store its fields
        gate.released.set()

        async def relived() -> bool:
            doc = await stored(feeder, "BTCUSDT")
            return doc["state"] == "live" and doc["verdict_at"] > before["verdict_at"]

        await eventually(relived, TIMEOUT)
        back = await served(replica, "BTCUSDT")
        assert (back.state, back.late_candles) == (LIVE, 0)


@pytest.mark.parametrize("time_index", [False, True], ids=["symbol_index", "time_index"])
class TestTakeOffice:
    """A candle inserted while a new leader takes office is seen, whichever way the
    snapshot reads the newest candles (one by one, or one time-range read)."""

    async def test_insert_after_snapshot_is_seen(
        self, make_settings: Any, start_replica: Any, feeder: Feeder, time_index: bool
    ) -> None:
        """Candles inserted between the snapshot and the first judgement are the newest
        the tail knows: the series turns LATE after the last of them, with no live gap
        and no backfill request; a stalled series sharing the collection reads LATE at
        its own newest candle."""
        if time_index:
            await feeder.coll.create_index([("timestamp", 1)])
        await feeder.backfill("ETHUSDT", 150)
        eth_newest = feeder.newest["ETHUSDT"] - 60 * SEC
        await feeder.coll.delete_many({"symbol": "ETHUSDT", "timestamp": {"$gt": _dt(eth_newest)}})
        await feeder.backfill("BTCUSDT", 150)
        fp = Failpoints()
        gate = fp.gate("live.take_office")
        settings = live_settings(make_settings, "change_stream")
        replica = await start_replica(settings, failpoints=fp)
        await asyncio.wait_for(gate.arrived.wait(), TIMEOUT)
        newest = feeder.newest["BTCUSDT"]
        # Up to now, and at least two slots (within one slot + grace of now).
        inserted = max(int(time.time()) * SEC, newest + 2 * SEC)
        docs = [candle("BTCUSDT", t) for t in range(newest + SEC, inserted + 1, SEC)]
        await feeder.coll.insert_many(docs)
        gate.released.set()
        late = await eventually(lambda: in_state(replica, "BTCUSDT", LATE), TIMEOUT)
        assert late.last_candle_open.ToMilliseconds() == inserted
        stalled = await eventually(lambda: in_state(replica, "ETHUSDT", LATE), TIMEOUT)
        assert stalled.last_candle_open.ToMilliseconds() == eth_newest
        gaps = await replica.stub.ListGaps(pb.ListGapsRequest(symbol="BTCUSDT"), timeout=TIMEOUT)
        assert [g for g in gaps.gaps if g.detected_live] == []
        assert await feeder.coll.database["backfill_requests"].count_documents({}) == 0


HOSTILE = {
    "year_2100": (dt.datetime(2100, 1, 1, tzinfo=dt.UTC), "future"),
    "bson_timestamp": (Timestamp(2_000_000_000, 1), "wrong_type"),
}


@pytest.mark.parametrize("mode", ["poll", "change_stream"])
@pytest.mark.parametrize("kind", sorted(HOSTILE))
class TestHostileCandles:
    """A hostile timestamp never steers the verdict, seen live or at take-office."""

    async def test_live_series_turns_late_on_time(
        self, make_settings: Any, start_replica: Any, feeder: Feeder, kind: str, mode: str
    ) -> None:
        """A live series given a hostile candle turns LATE on time once its feed stops,
        with its last real candle; no gap reaches into the future."""
        value, _ = HOSTILE[kind]
        await feeder.backfill("BTCUSDT", 150)
        feeder.symbols.add("BTCUSDT")
        replica = await start_replica(live_settings(make_settings, mode))
        await eventually(lambda: in_state(replica, "BTCUSDT", LIVE), TIMEOUT)
        await feeder.coll.insert_one({**candle("BTCUSDT", 0), "timestamp": value})
        feeder.symbols.discard("BTCUSDT")
        late = await eventually(lambda: in_state(replica, "BTCUSDT", LATE), TIMEOUT)
        assert late.last_candle_open.ToMilliseconds() == feeder.newest["BTCUSDT"]
        gaps = await replica.stub.ListGaps(pb.ListGapsRequest(symbol="BTCUSDT"), timeout=TIMEOUT)
        assert all(g.end_time.ToDatetime().year < 2100 for g in gaps.gaps)
        assert replica.app.livetail.mode == mode  # the stream did not fail over to polling

    async def test_take_office_skips_it(
        self, make_settings: Any, start_replica: Any, feeder: Feeder, kind: str, mode: str
    ) -> None:
        """A hostile candle already stored when the tail takes office is not the
        series' newest: the stopped series reads LATE at its last real candle, and the
        candle is counted by reason."""
        value, reason = HOSTILE[kind]
        await feeder.backfill("BTCUSDT", 150)
        await feeder.coll.insert_one({**candle("BTCUSDT", 0), "timestamp": value})
        replica = await start_replica(live_settings(make_settings, mode))
        late = await eventually(lambda: in_state(replica, "BTCUSDT", LATE), TIMEOUT)
        assert late.last_candle_open.ToMilliseconds() == feeder.newest["BTCUSDT"]
        registry = replica.app.metrics.registry
        counted = registry.get_sample_value("auditsvc_candles_ignored_total", {"reason": reason})
        assert counted is not None and counted >= 1


class TestUnknown:
    """Nobody vouching means UNKNOWN, on every read and on the stream, and back."""

    async def test_stopped_tail_turns_unknown_and_back(
        self, make_settings: Any, start_replica: Any, feeder: Feeder
    ) -> None:
        """With the tail stopped (a frozen leader) the fed series reads UNKNOWN in
        ListHealthScores, StreamHealthScores and GetStatus, with the last verdict's
        time; once the tail runs again it reads LIVE."""
        await feeder.backfill("BTCUSDT", 150)
        feeder.symbols.add("BTCUSDT")
        settings = live_settings(make_settings, "poll")
        replica = await start_replica(settings)
        live = await eventually(lambda: in_state(replica, "BTCUSDT", LIVE), TIMEOUT)
        assert live.HasField("verdict_time")
        stream = replica.stub.StreamHealthScores(
            pb.StreamHealthScoresRequest(symbols=["BTCUSDT"]), timeout=60
        )
        try:
            first = await asyncio.wait_for(stream.read(), TIMEOUT)
            assert first.score.state == LIVE
            await replica.app.livetail.stop()
            stopped_at = time.time()

            async def pushed(state: int) -> Any:
                while True:
                    msg = await stream.read()
                    if msg.score.state == state:
                        return msg.score

            unknown = await asyncio.wait_for(pushed(UNKNOWN), TIMEOUT)
            assert unknown.verdict_time.ToMilliseconds() <= stopped_at * 1000
            listed = await served(replica, "BTCUSDT")
            assert listed.state == UNKNOWN
            status = await replica.stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT)
            states = {c.state: c.count for c in status.summary.states}
            assert states.get(UNKNOWN) == 2 and status.summary.series_count == 2
            replica.app.livetail.start()
            back = await asyncio.wait_for(pushed(LIVE), TIMEOUT)
            assert back.verdict_time.ToMilliseconds() > stopped_at * 1000
        finally:
            stream.cancel()


class TestHole:
    """A feed back from an outage is not LIVE while the slot a gate relies on is in
    the hole its first candle revealed."""

    async def test_live_only_once_the_candle_after_the_hole_is_due(
        self, make_settings: Any, start_replica: Any, feeder: Feeder
    ) -> None:
        """Stalled, then resumed from now: every LIVE message names a present slot,
        never one inside the hole, and LIVE does come back."""
        await feeder.backfill("BTCUSDT", 150)
        feeder.symbols.add("BTCUSDT")
        replica = await start_replica(live_settings(make_settings, "change_stream"))
        await eventually(lambda: in_state(replica, "BTCUSDT", LIVE), TIMEOUT)
        stream = replica.stub.StreamHealthScores(
            pb.StreamHealthScoresRequest(symbols=["BTCUSDT"]), timeout=60
        )
        try:
            feeder.symbols.discard("BTCUSDT")
            stopped = feeder.newest["BTCUSDT"]
            await eventually(lambda: in_state(replica, "BTCUSDT", LATE), TIMEOUT)
            resumed = int(time.time()) * SEC
            feeder.newest["BTCUSDT"] = resumed - SEC  # the feed skips what it missed
            feeder.symbols.add("BTCUSDT")
            hole = range(stopped + SEC, resumed, SEC)
            assert len(hole) > 0

            async def back_live() -> Any:
                while True:
                    msg = await stream.read()
                    if msg.score.state == LIVE:
                        named = msg.score.last_candle_open.ToMilliseconds()
                        if named > stopped:
                            return named

            named = await asyncio.wait_for(back_live(), TIMEOUT)
            assert named >= resumed and named not in hole
        finally:
            stream.cancel()
