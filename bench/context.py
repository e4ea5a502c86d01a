"""What every figure gets: the database, sizes, trials, a process set, scratch dirs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from bench.procs import Processes, Replica


class NotMeasured(Exception):
    """A figure could not be measured; the message says why (it goes into the report)."""


@dataclass(frozen=True)
class Sizes:
    """Data sizes and durations; every field is a CLI flag (``--symbols`` etc.)."""

    trials: int = 3
    # 1. throughput
    symbols: int = 8
    days: float = 7.0
    # 2. memory
    memory_factor: int = 10
    # 3. incremental cost
    history_days: tuple[int, int] = (1, 30)
    incremental_repeats: int = 10
    # 4. RPC speed
    rpc_seconds: float = 3.0
    rpc_concurrency: tuple[int, ...] = (1, 50)
    # 5. forwarding
    forward_latency_calls: int = 100
    forward_calls: int = 1000
    # 6. stream fan-out
    subscribers: int = 1000
    stream_channels: int = 10
    stream_cycles: int = 3
    # 7. failover
    failover_trials: int = 5
    heartbeat: float = 1.0
    election_timeout: float = 3.0
    # 8. scale (1m series in one collection)
    scale_series: tuple[int, ...] = (480, 4800, 30000)
    scale_slots: int = 24
    scale_recheck: int = 300
    ratio_series: int = 480
    ratio_slots: int = 1440
    status_series: int = 48
    # 9. removal and restore
    removal_documents: int = 10_000
    # 10-12. live state (1s series, LIVE_POLL_INTERVAL=1)
    live_series: int = 200
    live_stopped: int = 20
    live_cost_series: tuple[int, ...] = (100, 1000)
    live_cost_seconds: float = 20.0
    live_failover_trials: int = 3
    # 13. wrong verdicts under churn (live_series fed, live_stopped of them churned)
    churn_seconds: float = 180.0
    churn_modes: tuple[str, ...] = ("change_stream", "poll")
    # 14. stale verdicts: the short freeze, and the election that outlasts it
    freeze_seconds: float = 20.0
    freeze_lease: float = 30.0
    freeze_heartbeat: float = 2.0
    freeze_stale_after: float = 5.0
    # 15. take-office (1h series in one collection)
    take_office_series: tuple[int, ...] = (1000, 30000)
    take_office_election: tuple[float, float] = (10.0, 30.0)  # heartbeat, lease
    # 16. cold audit by layout (1h series)
    cold_series: int = 2000
    cold_slots: int = 48
    # 17. heal loop (1h series with seeded gaps; LIVE_MODE values measured)
    heal_series: int = 200
    heal_cap: int = 20
    heal_interval: float = 5.0
    heal_writer_delay: tuple[float, float] = (0.5, 5.0)
    heal_live_modes: tuple[str, ...] = ("auto", "off")
    # 18. no jam (the same series, no writer; BACKFILL_TIMEOUT in seconds, well
    # above a cycle's period: 10 s was under two cycles of 291 expiries at load 4)
    jam_timeout: int = 30
    jam_interval: float = 2.0
    # 19. detection quality (the content rules on generated series; no database)
    quality_timeframes: tuple[str, ...] = ("1s", "1m", "1h", "1d")
    quality_candles: int = 250_000
    quality_per_rule: int = 300

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


TINY = Sizes(
    trials=1,
    symbols=2,
    days=0.25,
    memory_factor=10,
    history_days=(1, 2),
    incremental_repeats=2,
    rpc_seconds=0.3,
    rpc_concurrency=(1, 10),
    forward_latency_calls=5,
    forward_calls=30,
    subscribers=20,
    stream_channels=2,
    stream_cycles=1,
    failover_trials=1,
    heartbeat=0.3,
    election_timeout=1.2,
    scale_series=(4, 8, 16),
    removal_documents=200,
    live_series=8,
    live_stopped=2,
    live_cost_series=(4, 8),
    live_cost_seconds=1.0,
    live_failover_trials=1,
    churn_seconds=10.0,
    churn_modes=("change_stream",),
    # The short freeze must outlast LIVE_STALE_AFTER + 1 s yet stay inside the lease
    # less one heartbeat (the leader's own margin).
    freeze_seconds=3.5,
    freeze_lease=6.0,
    freeze_heartbeat=1.0,
    freeze_stale_after=2.0,
    take_office_series=(20,),
    take_office_election=(0.3, 1.2),
    cold_series=6,
    cold_slots=12,
    heal_series=6,
    heal_cap=3,
    heal_interval=0.5,
    heal_writer_delay=(0.1, 0.4),
    jam_timeout=1,
    jam_interval=0.3,
    quality_timeframes=("1m", "1h"),
    quality_candles=3_000,
    quality_per_rule=4,
    scale_slots=10,
    ratio_series=4,
    ratio_slots=60,
    status_series=2,
)


@dataclass
class Context:
    uri: str
    # The URI replicas get; may add options to ``uri`` (see --retryable-writes).
    service_uri: str
    sizes: Sizes
    work_dir: Path
    service_root: Path | None = None
    # True for the private SecantusDB: it is thrown away whole, nothing to drop.
    owns_server: bool = False
    profile_dir: Path | None = None
    figure: str = ""
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    databases: list[str] = field(default_factory=list)
    processes: Processes = field(default_factory=Processes)
    profilers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _client: Any = None

    @property
    def log_dir(self) -> Path:
        path = self.work_dir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def client(self) -> Any:
        """A bare PyMongo async client (driver defaults) for seeding and baselines."""
        if self._client is None:
            self._client = AsyncMongoClient(self.uri, serverSelectionTimeoutMS=10_000)
        return self._client

    def database(self, figure: str) -> str:
        """A fresh database name for one figure; dropped when the run ends."""
        name = f"bench_{self.run_id}_{figure}"
        self.databases.append(name)
        return name

    async def replica(self, name: str, database: str, **env: str) -> Replica:
        replica = Replica(name, self.service_uri, database, self.log_dir, self.service_root, **env)
        self.processes.add(replica)
        await replica.start()
        self.attach_profiler(replica.pid, name)
        return replica

    def attach_profiler(self, pid: int, name: str) -> None:
        if self.profile_dir is not None:
            from bench.profile import attach

            out = self.profile_dir / f"{self.figure}-{name}.txt"
            self.profilers.append(attach(pid, out))

    async def cleanup(self) -> None:
        await self.processes.close()
        spies, self.profilers = self.profilers, []
        for spy in spies:  # they write their output when the profiled process exits
            try:
                await asyncio.to_thread(spy.wait, 30)
            except subprocess.TimeoutExpired:
                spy.kill()

    async def close(self) -> None:
        await self.cleanup()
        if self._client is not None:
            for name in [] if self.owns_server else self.databases:
                with contextlib.suppress(Exception):  # best effort
                    await self._client.drop_database(name)
            client, self._client = self._client, None
            await client.close()
