"""Several processes race for one lease over hundreds of rounds: no epoch is
ever held by two replicas, and no epoch goes backwards."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict

import pytest

from tests.support import SecantusDB

pytestmark = pytest.mark.slow

RACERS = 3
ROUNDS = 200


class TestLeaseRace:
    """The atomic conditional upsert is the only arbiter, across processes."""

    async def test_epochs_unique_and_monotonic(self, mongo: SecantusDB, db_name: str):
        """Each epoch has one holder; each racer's epochs rise; DB-time order is epoch order."""
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.cluster.lease_racer",
                mongo.uri,
                db_name,
                f"racer-{i}",
                str(ROUNDS),
                stdout=asyncio.subprocess.PIPE,
            )
            for i in range(RACERS)
        ]
        outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 240)
        assert all(p.returncode == 0 for p in procs)
        holders: dict[int, set[str]] = defaultdict(set)
        grants = []
        for i, (out, _) in enumerate(outputs):
            seen = [json.loads(line) for line in out.decode().splitlines()]
            mine = [g for g in seen if "epoch" in g]
            assert all(g["holder"] == f"racer-{i}" for g in mine)
            epochs = [g["epoch"] for g in mine]
            assert epochs == sorted(epochs), f"racer-{i} saw its epoch go backwards"
            for g in mine:
                holders[g["epoch"]].add(g["holder"])
            grants += mine
        assert len(grants) > ROUNDS // 2, "too few grants to say anything"
        assert all(len(h) == 1 for h in holders.values()), "an epoch had two holders"
        by_time = sorted(grants, key=lambda g: (g["now"], g["epoch"]))
        assert [g["epoch"] for g in by_time] == sorted(g["epoch"] for g in grants)
        assert len(holders) > RACERS, "the lease never changed hands"
