"""Sustained load: ``python -m tests.chaos.load --seconds 120``. Not part of ``make test``.

One replica (standalone by default, ``--elected`` for a one-replica election)
over SecantusDB with demo candles and the scheduler on (AUDIT_INTERVAL=1),
and ``--in-flight`` (50) calls outstanding at all times on one channel, at
most ``--mutating`` (4) of them RunAudit/ResolveDuplicates: GetStatus,
GetLeader, ListGaps, StreamHealthScores (the snapshot), RunAudit and
ResolveDuplicates (each with a fresh request_id), plus *intended* errors that
must come back with exactly their code (a tampered page token:
INVALID_ARGUMENT; an unconfigured symbol: NOT_FOUND; a reused request_id with
another body: FAILED_PRECONDITION).

It reports calls, errors and p50/p99 latency per method, cycles by trigger,
and the replica's RSS (psutil) after the warm-up ("start"), at the end, and
the peak. It exits 1 if any call ended other than as intended (a 30 s
deadline included), if no cycle completed, with ``--elected`` if the replica
ever stopped leading (nothing else competes for the lease), or if RSS grew by
more than ``--rss-growth-mb`` (default 64 MiB) from start to end. The start
is taken after a warm-up (``--warmup``, 10 s, same load) so that caches
filled by the first calls do not count as growth.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil

from auditpb.v1 import audit_pb2 as pb
from auditpb.v1 import audit_pb2_grpc as pb_grpc
from auditsvc.devtools.demo import demo_series
from auditsvc.storage.mongo.database import connect, ensure_candle_index
from tests.cluster.harness import ReplicaProcess
from tests.support import SecantusDB, eventually

MB = 1024 * 1024
DATABASE = "load"
TIMEFRAME = "1m"
DEADLINE = 30.0
SERIES_READY = {pb.ROLE_LEADER, pb.ROLE_STANDALONE}
# (name, weight, the code it must end with, Mix method)
PLAN = (
    ("GetStatus", 25, "OK", "get_status"),
    ("GetLeader", 15, "OK", "get_leader"),
    ("ListGaps", 25, "OK", "list_gaps"),
    ("StreamHealthScores", 5, "OK", "stream"),
    ("RunAudit", 5, "OK", "run_audit"),
    ("ResolveDuplicates", 5, "OK", "resolve"),
    ("ListGaps[bad token]", 3, "INVALID_ARGUMENT", "bad_token"),
    ("RunAudit[unknown symbol]", 3, "NOT_FOUND", "unknown_symbol"),
    ("ResolveDuplicates[reused id]", 3, "FAILED_PRECONDITION", "reused_id"),
)
MUTATING = frozenset({"RunAudit", "ResolveDuplicates"})


@dataclass
class LoadConfig:
    seconds: float = 120.0
    warmup: float = 10.0
    in_flight: int = 50
    # Of those, at most this many RunAudit/ResolveDuplicates (cycles never overlap, so
    # more would only queue on the cycle lock and turn the mix into waiting).
    mutating_in_flight: int = 4
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    slots: int = 720
    elected: bool = False
    rss_growth_mb: float = 64.0
    seed: int = 0
    workdir: Path | None = None


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    def record(self, method: str, code: str, seconds: float, expected: str = "OK") -> None:
        self.codes[(method, code)] += 1
        if code == expected:
            self.latencies[method].append(seconds)
        elif len(self.unexpected) < 1000:
            self.unexpected.append(f"{method}: {code} (expected {expected})")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class Mix:
    """The call mix; each call returns the status code name it ended with."""

    def __init__(self, stub: Any, cfg: LoadConfig, window: tuple[int, int]) -> None:
        self._stub = stub
        self._cfg = cfg
        self._rng = random.Random(cfg.seed)
        start_s, end_s = window
        self._window = {"start_time": {"seconds": start_s}, "end_time": {"seconds": end_s}}
        self._used_id = f"load-dedupe-{uuid.uuid4().hex}"

    def pick(self, reads_only: bool) -> tuple[str, str, Callable[[], Awaitable[None]]]:
        plan = [p for p in PLAN if not (reads_only and p[0] in MUTATING)]
        name, _, expected, attr = self._rng.choices(plan, [w for _, w, _, _ in plan])[0]
        return name, expected, getattr(self, attr)

    async def get_status(self) -> None:
        await self._stub.GetStatus(pb.GetStatusRequest(), timeout=DEADLINE)

    async def get_leader(self) -> None:
        await self._stub.GetLeader(pb.GetLeaderRequest(), timeout=DEADLINE)

    async def list_gaps(self) -> None:
        symbol = self._rng.choice(["", *self._cfg.symbols])
        request = pb.ListGapsRequest(symbol=symbol, page_size=self._rng.randint(1, 50))
        await self._stub.ListGaps(request, timeout=DEADLINE)

    async def stream(self) -> None:
        """Opens the stream and reads the snapshot (one score per series), then cancels."""
        call = self._stub.StreamHealthScores(pb.StreamHealthScoresRequest(), timeout=DEADLINE)
        try:
            want = len(self._cfg.symbols)
            got = 0
            async for _ in call:
                got += 1
                if got >= want:
                    break
        finally:
            call.cancel()

    async def run_audit(self) -> None:
        await self._stub.RunAudit(
            pb.RunAuditRequest(request_id=f"load-{uuid.uuid4().hex}"), timeout=DEADLINE
        )

    async def resolve(self) -> None:
        request = self._dedupe(f"load-{uuid.uuid4().hex}")
        await self._stub.ResolveDuplicates(request, timeout=DEADLINE)

    def _dedupe(self, request_id: str, dry_run: bool = False) -> pb.ResolveDuplicatesRequest:
        return pb.ResolveDuplicatesRequest(
            symbol=self._rng.choice(self._cfg.symbols),
            timeframe=TIMEFRAME,
            dry_run=dry_run,
            request_id=request_id,
            **self._window,
        )

    async def bad_token(self) -> None:
        await self._stub.ListGaps(pb.ListGapsRequest(page_token="not-a-token"), timeout=DEADLINE)

    async def unknown_symbol(self) -> None:
        await self._stub.RunAudit(pb.RunAuditRequest(symbols=["NOPEUSDT"]), timeout=DEADLINE)

    async def prime(self) -> None:
        """Stores the request_id that ``reused_id`` sends again with another body."""
        request = self._dedupe(self._used_id, dry_run=True)
        request.symbol = self._cfg.symbols[0]
        await self._stub.ResolveDuplicates(request, timeout=DEADLINE)

    async def reused_id(self) -> None:
        request = self._dedupe(self._used_id, dry_run=False)
        request.symbol = self._cfg.symbols[0]
        await self._stub.ResolveDuplicates(request, timeout=DEADLINE)


async def _worker(mix: Mix, stats: Stats, until: float, mutating: asyncio.Semaphore) -> None:
    while time.monotonic() < until:
        name, expected, call = mix.pick(reads_only=mutating.locked())
        began = time.perf_counter()
        try:
            async with mutating if name in MUTATING else contextlib.nullcontext():
                # The call's own deadline bounds it; this is only a backstop.
                await asyncio.wait_for(call(), DEADLINE + 5)
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        except TimeoutError:
            code = "HUNG"
        stats.record(name, code, time.perf_counter() - began, expected)


async def _sample_rss(proc: psutil.Process, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            peak[0] = max(peak[0], proc.memory_info().rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def _seed(handle: Any, cfg: LoadConfig) -> tuple[int, int]:
    now_ms = int(time.time() * 1000)
    end_s = now_ms // 60_000 * 60
    for symbol in cfg.symbols:
        docs, _ = demo_series(symbol, TIMEFRAME, now_ms, cfg.slots)
        collection = f"candles_{symbol}_{TIMEFRAME}"
        await asyncio.wait_for(handle.db[collection].insert_many(docs), 120)
        await asyncio.wait_for(ensure_candle_index(handle, collection), 30)
    return end_s - cfg.slots * 60, end_s + 600


async def _ready(replica: ReplicaProcess) -> bool:
    status = await replica.status()
    return status.role in SERIES_READY and status.database_reachable


async def _cycles_since(handle: Any, since: dt.datetime) -> Counter[str]:
    """Succeeded cycles started since then, by trigger (schedule or rpc)."""
    query = {"succeeded": True, "started_at": {"$gte": since}}
    cursor = handle.db["audit_cycles"].find(query, {"trigger": 1})
    docs = await asyncio.wait_for(cursor.to_list(None), 30)
    return Counter(str(d.get("trigger", "")) for d in docs)


async def run_load(cfg: LoadConfig) -> int:
    workdir = cfg.workdir or Path(tempfile.mkdtemp(prefix="load-"))
    db = SecantusDB(storage=str(workdir / "db"))
    replica: ReplicaProcess | None = None
    handle: Any = None
    channel: grpc.aio.Channel | None = None
    failed = True
    try:
        await asyncio.to_thread(db.start)
        handle = connect(db.uri, DATABASE, 5000)
        window = await _seed(handle, cfg)
        replica = ReplicaProcess(
            "load-1",
            db.uri,
            DATABASE,
            workdir,
            ENABLE_LEADER_ELECTION="true" if cfg.elected else "false",
            LEADER_ELECTION_HEARTBEAT_INTERVAL="1",
            LEADER_ELECTION_TIMEOUT="5",
            MONGODB_TIMEOUT_MS="5000",
            ENABLE_AUDITOR="true",
            AUDIT_INTERVAL="1",
            AUDIT_STARTUP_DELAY="0",
            AUDIT_SYMBOLS=",".join(cfg.symbols),
            AUDIT_TIMEFRAMES=TIMEFRAME,
            AUDIT_LOOKBACK=str((cfg.slots - 60) * 60),
            ENABLE_DUPLICATE_REMOVAL="true",
            ENABLE_AUTO_BACKFILL="true",
            MIN_AUTO_BACKFILL_GAP="60",
            MAX_AUTO_BACKFILL_JOBS="1000",
            LOG_LEVEL="INFO",
        )
        await asyncio.to_thread(replica.start)
        assert replica.proc is not None
        await eventually(lambda: _ready(replica), within=60, interval=0.2)
        proc = psutil.Process(replica.proc.pid)
        idle_rss = proc.memory_info().rss
        channel = grpc.aio.insecure_channel(replica.target)
        mix = Mix(pb_grpc.AuditServiceStub(channel), cfg, window)
        await mix.prime()
        mode = "elected" if cfg.elected else "standalone"
        print(
            f"[load] {mode} replica pid {proc.pid}, {cfg.in_flight} in flight (at most "
            f"{cfg.mutating_in_flight} mutating), warm-up "
            f"{cfg.warmup:g}s, then {cfg.seconds:g}s; idle RSS {idle_rss / MB:.1f} MiB",
            flush=True,
        )
        warm = Stats()
        until = time.monotonic() + cfg.warmup
        gate = asyncio.Semaphore(cfg.mutating_in_flight)
        await asyncio.gather(*(_worker(mix, warm, until, gate) for _ in range(cfg.in_flight)))
        start_rss = proc.memory_info().rss
        since = dt.datetime.now(dt.UTC)
        stats, peak, stop = Stats(), [start_rss], asyncio.Event()
        sampler = asyncio.create_task(_sample_rss(proc, peak, stop))
        began = time.monotonic()
        until = began + cfg.seconds
        await asyncio.gather(*(_worker(mix, stats, until, gate) for _ in range(cfg.in_flight)))
        elapsed = time.monotonic() - began
        stop.set()
        await asyncio.wait_for(sampler, 5)
        end_rss = proc.memory_info().rss
        cycles = await _cycles_since(handle, since)
        log = replica.log_path.read_text(errors="replace")
        lost = log.count('"event": "stopped leading')
        failed = _report(cfg, stats, warm, elapsed, (start_rss, end_rss, peak[0]), cycles, lost)
    finally:
        if channel is not None:
            await channel.close()
        if replica is not None:
            await replica.close()
        if handle is not None:
            await handle.close()
        await asyncio.to_thread(db.close)
        if cfg.workdir is None and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
        elif failed:
            print(f"[load] logs and database kept in {workdir}", flush=True)
    return 1 if failed else 0


def _report(
    cfg: LoadConfig,
    stats: Stats,
    warm: Stats,
    elapsed: float,
    rss: tuple[int, int, int],
    cycles: Counter[str],
    lost: int,
) -> bool:
    """Prints the results; True when the run failed."""
    total = sum(stats.codes.values())
    by_trigger = ", ".join(f"{k or '?'} {n}" for k, n in sorted(cycles.items())) or "none"
    print(f"[load] {total} calls in {elapsed:.1f}s ({total / elapsed:.0f}/s); cycles: {by_trigger}")
    print(f"  {'method':<30} {'calls':>7} {'ok/as-meant':>11} {'p50 ms':>8} {'p99 ms':>8}")
    for name, _, expected, _ in PLAN:
        calls = sum(n for (m, _), n in stats.codes.items() if m == name)
        lat = stats.latencies.get(name, [])
        print(
            f"  {name:<30} {calls:>7} {len(lat):>11} "
            f"{percentile(lat, 50) * 1000:>8.1f} {percentile(lat, 99) * 1000:>8.1f}"
            + ("" if expected == "OK" else f"  (expects {expected})")
        )
    start, end, peak = rss
    growth = (end - start) / MB
    print(
        f"[load] RSS start {start / MB:.1f} MiB (after warm-up), end {end / MB:.1f} MiB, "
        f"peak {peak / MB:.1f} MiB; growth {growth:+.1f} MiB (bound {cfg.rss_growth_mb:g} MiB)"
    )
    failures = []
    if stats.unexpected:
        kinds = Counter(stats.unexpected)
        failures.append(
            f"{len(stats.unexpected)} unexpected outcomes: "
            + ", ".join(f"{k} x{n}" for k, n in kinds.most_common(10))
        )
    if warm.unexpected:
        kinds = Counter(warm.unexpected)
        failures.append(
            f"{len(warm.unexpected)} unexpected outcomes during the warm-up: "
            + ", ".join(f"{k} x{n}" for k, n in kinds.most_common(10))
        )
    if growth > cfg.rss_growth_mb:
        failures.append(f"RSS grew {growth:.1f} MiB > {cfg.rss_growth_mb:g} MiB")
    if not cycles:
        failures.append("no audit cycle completed during the run")
    if cfg.elected:
        print(f"[load] leadership lost {lost} times (no fault was injected)")
        if lost:
            failures.append(f"the only replica stopped leading {lost} times under load")
    for failure in failures:
        print(f"[load] FAIL: {failure}")
    if not failures:
        print("[load] OK: no errors other than the intended ones; RSS within bound")
    return bool(failures)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.load", description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0, help="measured run (default 120)")
    parser.add_argument("--warmup", type=float, default=10.0, help="unmeasured load first")
    parser.add_argument("--in-flight", type=int, default=50, help="calls outstanding (50)")
    parser.add_argument("--mutating", type=int, default=4, help="of which RunAudit/Resolve")
    parser.add_argument("--slots", type=int, default=720, help="1m candles per symbol")
    parser.add_argument(
        "--elected", action="store_true", help="leader election instead of standalone"
    )
    parser.add_argument("--rss-growth-mb", type=float, default=64.0, help="allowed RSS growth")
    parser.add_argument("--seed", type=int, default=0, help="call-mix RNG seed")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and database here")
    args = parser.parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    cfg = LoadConfig(
        seconds=args.seconds,
        warmup=args.warmup,
        in_flight=args.in_flight,
        mutating_in_flight=args.mutating,
        slots=args.slots,
        elected=args.elected,
        rss_growth_mb=args.rss_growth_mb,
        seed=args.seed,
        workdir=args.workdir,
    )
    return asyncio.run(run_load(cfg))


if __name__ == "__main__":
    sys.exit(main())
