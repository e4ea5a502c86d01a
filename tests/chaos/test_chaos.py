"""The bounded chaos run at a size that fits ``make test`` (6 rounds: each fault
kind and the database restart once, under a minute here), and a check that its
end-of-run checks can fail at all. ``python -m tests.chaos --rounds 30`` is the
long version; set CHAOS_SEED to replay a printed seed."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from bson import ObjectId

from auditsvc.storage.mongo.database import connect
from tests.chaos.chaos import FAULTS, ChaosConfig, ChaosRun, LeaseSampler, run_chaos
from tests.support import SecantusDB

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

ROUNDS = 6


@pytest.mark.timeout(360)
async def test_faults_keep_invariants(tmp_path: Path) -> None:
    """SIGKILL/SIGSTOP/SIGTERM of replicas and one database restart, under client load:
    one leader again within the bound each time, no write outlives its epoch, no candle
    lost, one open backfill per gap, clients see only OK/UNAVAILABLE/DEADLINE_EXCEEDED."""
    seed = os.environ.get("CHAOS_SEED")
    cfg = ChaosConfig(rounds=ROUNDS, seed=int(seed) if seed else None, settle=3.0, workdir=tmp_path)
    report = await run_chaos(cfg)
    print(report.render())
    assert report.ok, f"seed {report.seed}:\n" + "\n".join(report.violations)
    assert report.faults["db_restart"] == 1
    assert all(report.faults[kind] >= 1 for kind in FAULTS)
    assert sum(report.faults.values()) == ROUNDS
    assert sum(report.writes_checked.values()) > 0 and report.candles_checked > 0
    assert report.calls and report.replies_checked > 0


async def test_checks_report_violations(mongo: SecantusDB, db_name: str, tmp_path: Path) -> None:
    """A write after the next epoch's acquisition, one before its own, a lost candle, a
    changed archive copy and a second open backfill for one gap are each reported."""
    run = ChaosRun(ChaosConfig(rounds=0, symbols=("AAA",), verbose=False, workdir=tmp_path))
    run.handle = connect(mongo.uri, db_name, 2000)
    try:
        t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        sampler = LeaseSampler(run.handle)
        sampler.epochs = {1: ("r1", t0), 2: ("r2", t0 + dt.timedelta(seconds=10))}
        db = run.handle.db
        await db["audit_log"].insert_many(
            [
                {"epoch": 1, "at": t0 + dt.timedelta(seconds=9)},
                {"epoch": 1, "at": t0 + dt.timedelta(seconds=11)},
            ]
        )
        await db["audit_cycles"].insert_one({"epoch": 2, "finished_at": t0})
        candles = [
            {"_id": ObjectId(), "symbol": "AAA", "timestamp": t0 + dt.timedelta(minutes=i)}
            for i in range(3)
        ]
        for doc in candles:
            run.originals[doc["_id"]] = ("candles_AAA_1m", dict(doc))
        await db["candles_AAA_1m"].insert_one(candles[0])
        fine = {"epoch": 1, "removed_at": t0, "created_at": t0}
        await db["duplicate_archive"].insert_one(
            {"collection": "candles_AAA_1m", "document": {**candles[1], "close": 1.0}, **fine}
        )
        await db["backfill_requests"].insert_many(
            [{"gap_key": "AAA|1m|0", "open": True, **fine} for _ in range(2)]
        )
        await run._check_fencing(sampler)
        await run._check_candles()
        await run._check_backfills()
    finally:
        await run.handle.close()
    found = "\n".join(run.report.violations)
    assert "ms after epoch 2 was acquired" in found
    assert "before epoch 2 was acquired" in found
    assert "archived with different content" in found
    assert f"candle {candles[2]['_id']}" in found and "lost" in found
    assert "has no candle left" in found
    assert "2 open backfill requests" in found
    assert len(run.report.violations) == 7  # 2 fencing, 2 candles, 2 empty slots, 1 backfill


def test_plan_has_one_database_restart_and_every_fault() -> None:
    for seed in range(20):
        plan = ChaosRun(ChaosConfig(rounds=ROUNDS, seed=seed, workdir=Path("/nonexistent")))._plan()
        assert len(plan) == ROUNDS and plan.count("db_restart") == 1
        assert all(kind in plan for kind in FAULTS)
