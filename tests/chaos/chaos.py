"""The bounded chaos run: three replicas and SecantusDB, random faults, invariants
checked from the database at the end.

Set-up: demo candles (gaps and duplicates) for a few symbols, three replicas
with the scheduler on (1 s interval), duplicate removal and auto-backfill on,
heartbeat 0.5 s and lease 2 s. A background client load sends mixed reads and
mutating calls (with request_ids) to random replicas, and a sampler reads the
lease document every 100 ms to learn when each epoch was acquired and by whom.

Each round injects one fault, chosen by a seeded RNG: SIGKILL a replica (then
restart it), SIGSTOP the leader past its lease (then SIGCONT), SIGTERM a
replica (then restart it), crash the leader inside a fenced batch
(failpoint ``fence.before_commit``, then restart it), or a concurrent writer
(while a removal runs on the leader, a data writer deletes the newest copy of
duplicated slots); exactly one round restarts the database. After
each fault the run waits for exactly one leader within
``timeout + heartbeat + margin`` and records the time, then lets the load run
for ``settle`` seconds. Every round also inserts a few new duplicate candles
(as a data writer would), so that removals keep happening across epochs.

Invariants, checked at the end (``ChaosReport.violations``):

* fencing: no write carrying epoch E (duplicate_archive.removed_at,
  backfill_requests.created_at, audit_log.at, audit_cycles.finished_at, and
  audit_gaps.detected_at, audit_series.computed_at) is stamped later than
  the acquisition of the next epoch, nor earlier than E's own acquisition.
  Both clocks are this machine's (the replicas' wall clock, the database's
  ``$$NOW``), and BSON truncates both to the millisecond, so no tolerance;
* no candle lost: every seeded document is still in its collection
  unchanged, or archived with identical content, and every slot that had a
  candle still has one;
* no slot emptied by a removal: in a writer round, the change stream's order
  of deletes never shows a removal's delete taking a slot to zero documents
  (the writer may empty a slot itself; such slots are judged only this way);
* at most one open backfill request per gap_key;
* after each fault, one leader again within the bound;
* clients saw only OK, UNAVAILABLE or DEADLINE_EXCEEDED, and no wrong data:
  every RunAudit/ResolveDuplicates reply's (served_by, epoch), every leader
  named by GetLeader/GetStatus matches the lease holder of that epoch; every
  RunAudit over the fixed window reports the seeded gaps exactly; ListGaps
  pages are in order; health streams never go back in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from bson import ObjectId

from auditclient import AuditClient, AuditError, ClientOptions
from auditpb.v1 import audit_pb2 as pb
from auditpb.v1 import audit_pb2_grpc as pb_grpc
from auditsvc.devtools.demo import demo_series
from auditsvc.storage.mongo.database import connect, ensure_candle_index
from tests.cluster.harness import ReplicaProcess
from tests.slots import SlotWatch
from tests.support import SecantusDB

DATABASE = "chaos"
TIMEFRAME = "1m"
SLOT_MS = 60_000
ELECTION = "auditsvc"
ALLOWED_CODES = frozenset({"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"})
FAULTS = ("sigkill", "sigstop", "sigterm", "crash_in_batch", "writer")
# Writes that carry the writer's epoch, and the field stamped when they were made.
EPOCH_WRITES = (
    ("duplicate_archive", "removed_at"),
    ("backfill_requests", "created_at"),
    ("audit_log", "at"),
    ("audit_cycles", "finished_at"),
    # detected_at is an incident's first sighting, kept by later epochs' writes.
    ("audit_gaps", "written_at"),
    ("audit_series", "computed_at"),
)
# The fixed RunAudit/ResolveDuplicates window covers the seed and this many slots after it.
TAIL_SLOTS = 10
# Control-plane channels reconnect fast after a restart so recovery times are not inflated.
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)


@dataclass
class ChaosConfig:
    rounds: int = 8
    seed: int | None = None
    heartbeat: float = 0.5
    timeout: float = 2.0
    # Slack over timeout + heartbeat: a pure-Python database and three replicas share 2 cores.
    margin: float = 4.0
    settle: float = 2.0
    workers: int = 3
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    slots: int = 300
    # New duplicate candles per symbol and round: two removal batches' worth.
    duplicates_per_round: int = 24
    call_timeout: float = 8.0
    # Where logs and the database live; a temporary directory when None.
    workdir: Path | None = None
    keep_workdir: bool = False
    verbose: bool = True

    @property
    def bound(self) -> float:
        return self.timeout + self.heartbeat + self.margin


@dataclass
class Recovery:
    round: int
    kind: str
    target: str
    seconds: float
    bound: float
    leader: str
    epoch: int

    @property
    def ok(self) -> bool:
        return self.seconds <= self.bound and bool(self.leader or self.kind == "db_down")


@dataclass
class ChaosReport:
    seed: int
    rounds: int
    workdir: str = ""
    seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    recoveries: list[Recovery] = field(default_factory=list)
    writes_checked: Counter[str] = field(default_factory=Counter)
    candles_checked: int = 0
    archive_entries_checked: int = 0
    open_backfills_checked: int = 0
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    replies_checked: int = 0
    fired: Counter[str] = field(default_factory=Counter)
    repeats: int = 0
    unverifiable: int = 0
    epochs_sampled: int = 0
    epochs_missed: list[int] = field(default_factory=list)
    lease_samples: int = 0
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def render(self) -> str:
        out = [
            f"chaos: seed={self.seed} rounds={self.rounds} duration={self.seconds:.1f}s "
            f"workdir={self.workdir}",
            "faults injected: "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items()))
            + f" (total {sum(self.faults.values())})",
            "recoveries (one leader again, seconds / bound):",
        ]
        for r in self.recoveries:
            mark = "ok " if r.ok else "BAD"
            who = f"-> {r.leader} epoch {r.epoch}" if r.leader else "-> no leader"
            out.append(
                f"  {mark} round {r.round:>2} {r.kind:<10} {r.target:<4} "
                f"{r.seconds:6.2f}s / {r.bound:.2f}s {who}"
            )
        times = [r.seconds for r in self.recoveries if r.kind != "db_down"]
        if times:
            out.append(f"  max {max(times):.2f}s, mean {sum(times) / len(times):.2f}s")
        out.append(
            "writes checked (epoch fencing): "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.writes_checked.items()))
            + f" (total {sum(self.writes_checked.values())}); epochs sampled "
            f"{self.epochs_sampled} from {self.lease_samples} lease reads, missed "
            f"{self.epochs_missed or 'none'}"
        )
        out.append(
            f"candles checked: {self.candles_checked} (archive entries "
            f"{self.archive_entries_checked}); open backfills checked: "
            f"{self.open_backfills_checked}"
        )
        by_method: dict[str, Counter[str]] = defaultdict(Counter)
        for (method, code), n in self.calls.items():
            by_method[method][code] += n
        total = sum(self.calls.values())
        out.append(
            f"client calls: {total}; replies checked {self.replies_checked} (of which "
            f"{self.repeats} repeats of a request_id that had succeeded)"
        )
        for method in sorted(by_method):
            codes = ", ".join(f"{c}={n}" for c, n in sorted(by_method[method].items()))
            out.append(f"  {method:<18} {codes}")
        if self.fired:
            out.append(
                "removals sent just before a SIGKILL/SIGSTOP of the leader: "
                + ", ".join(f"{c}={n}" for c, n in sorted(self.fired.items()))
            )
        if self.unverifiable:
            out.append(f"claims not verifiable (epoch never sampled): {self.unverifiable}")
        for note in self.notes:
            out.append(f"note: {note}")
        if self.violations:
            out.append(f"VIOLATIONS ({len(self.violations)}):")
            out.extend(f"  - {v}" for v in self.violations[:50])
        else:
            out.append("invariants: all held")
        return "\n".join(out)


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _ms(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


async def _bounded(awaitable: Awaitable[Any], within: float) -> Any:
    return await asyncio.wait_for(awaitable, within)


class LeaseSampler:
    """Reads the lease document every ``interval`` and keeps each epoch's holder and
    acquisition time (the document is overwritten by every new term)."""

    def __init__(self, handle: Any, interval: float = 0.1) -> None:
        self.handle = handle
        self._col = handle.db["leader_election"]
        self._interval = interval
        self.epochs: dict[int, tuple[str, dt.datetime]] = {}
        self.samples = 0
        self.failures = 0
        self.violations: list[str] = []

    async def sample(self) -> None:
        doc = await _bounded(self._col.find_one({"_id": ELECTION}), 1.0)
        self.samples += 1
        if doc is None or "epoch" not in doc:
            return
        # replica_id is the display name (served_by); holder is the per-process identity.
        name = str(doc.get("replica_id") or doc["holder"])
        epoch, seen = int(doc["epoch"]), (name, doc["acquired_at"])
        known = self.epochs.setdefault(epoch, seen)
        if known != seen:
            self.violations.append(
                f"epoch {epoch} seen twice with different terms: {known} then {seen}"
            )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sample()
            except Exception:
                self.failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    def holder(self, epoch: int) -> str | None:
        known = self.epochs.get(epoch)
        return known[0] if known else None

    def acquired(self, epoch: int) -> dt.datetime | None:
        known = self.epochs.get(epoch)
        return known[1] if known else None

    def next_acquired(self, epoch: int) -> tuple[int, dt.datetime] | None:
        """The first sampled epoch after ``epoch`` and when it was acquired."""
        later = [e for e in self.epochs if e > epoch]
        if not later:
            return None
        first = min(later)
        return first, self.epochs[first][1]

    def missed(self) -> list[int]:
        if not self.epochs:
            return []
        return [e for e in range(1, max(self.epochs) + 1) if e not in self.epochs]


@dataclass
class World:
    """What the client load needs to know to build valid requests and judge replies."""

    symbols: tuple[str, ...]
    window_start: dt.datetime
    window_end: dt.datetime
    # For a RunAudit over the fixed window: (expected, present, missing, gap_count) per series.
    expected_report: tuple[int, int, int, int]


class ClientLoad:
    """Mixed reads and mutating calls against random replicas, with their outcomes."""

    WEIGHTS = (
        ("GetStatus", 3),
        ("GetLeader", 2),
        ("ListGaps", 3),
        ("StreamHealthScores", 1),
        ("RunAudit", 2),
        ("ResolveDuplicates", 1),
    )

    def __init__(
        self, cfg: ChaosConfig, seed: int, targets: list[str], world: World, rng: random.Random
    ) -> None:
        self._cfg = cfg
        self._seed = seed
        self._world = world
        self._rng = rng
        self._targets = targets
        self._clients = {
            t: AuditClient(
                options=ClientOptions(
                    target=t, timeout=cfg.call_timeout, max_reconnect_backoff_ms=1000
                )
            )
            for t in targets
        }
        self._n = 0
        self._retries: list[tuple[str, str, dict[str, Any]]] = []
        self._retried: set[str] = set()
        # Requests that succeeded, and what their first reply said.
        self._done: list[tuple[str, str, dict[str, Any]]] = []
        self._first: dict[str, tuple[Any, ...]] = {}
        self.repeats = 0
        self._fired: set[asyncio.Task[None]] = set()
        # Outcomes of the removals sent just before a fault (non-OK: cut by it).
        self.fired: Counter[str] = Counter()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.violations: list[str] = []
        # (what, replica, epoch): a replica named as leader of an epoch.
        self.claims: list[tuple[str, str, int]] = []
        # (method, request_id, served_by, epoch, cycle_id)
        self.replies: list[tuple[str, str, str, int, str]] = []

    async def connect(self) -> None:
        for client in self._clients.values():
            await client.connect()

    def fire(self, target: str, method: str) -> None:
        """One mutating call at ``target`` now, in the background (to be cut by a fault)."""
        client = self._clients[target]
        task = asyncio.create_task(
            self._call(method, target, self._op(client, method), tally=self.fired)
        )
        self._fired.add(task)
        task.add_done_callback(self._fired.discard)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await asyncio.gather(*(self._worker(stop) for _ in range(self._cfg.workers)))
            # Each is bounded by _call's own outer limit.
            await asyncio.gather(*self._fired)
        finally:
            for client in self._clients.values():
                await client.close(grace=0.5)

    async def _worker(self, stop: asyncio.Event) -> None:
        methods = [m for m, _ in self.WEIGHTS]
        weights = [w for _, w in self.WEIGHTS]
        while not stop.is_set():
            target = self._rng.choice(self._targets)
            client = self._clients[target]
            if self._retries and self._rng.random() < 0.5:
                method, rid, kwargs = self._retries.pop(0)
                await self._call(method, target, self._mutate(client, method, rid, kwargs))
            elif self._done and self._rng.random() < 0.1:
                # A repeat of a request that succeeded, maybe under another leader or
                # before a database restart: it must return the very same result.
                method, rid, kwargs = self._rng.choice(self._done)
                self.repeats += 1
                await self._call(method, target, self._mutate(client, method, rid, kwargs))
            else:
                method = self._rng.choices(methods, weights)[0]
                await self._call(method, target, self._op(client, method))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)

    async def _call(
        self, method: str, target: str, op: Awaitable[str], tally: Counter[str] | None = None
    ) -> None:
        # Far above any deadline the client sets: hitting it means a call ignored its deadline.
        outer = self._cfg.call_timeout * 6 + 5
        try:
            code = await asyncio.wait_for(op, outer)
        except AuditError as exc:
            code = exc.code.name if exc.code is not None else "UNKNOWN"
            if code not in ALLOWED_CODES:
                self.violations.append(f"{method} on {target}: {code} {exc.details!r}")
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            if code not in ALLOWED_CODES:
                self.violations.append(f"{method} on {target}: {code} {exc.details()!r}")
        except TimeoutError:
            code = "HUNG"
            self.violations.append(f"{method} on {target}: no outcome within {outer:g}s")
        except Exception as exc:
            code = type(exc).__name__
            self.violations.append(f"{method} on {target}: client raised {exc!r}")
        self.calls[(method, code)] += 1
        if tally is not None:
            tally[code] += 1

    def _wrong(self, what: str) -> None:
        self.violations.append(f"wrong data: {what}")

    async def _op(self, client: AuditClient, method: str) -> str:
        w = self._world
        if method == "GetStatus":
            s = await client.get_status()
            if s.role == pb.ROLE_LEADER:
                self.claims.append(("GetStatus role", s.replica_id, s.epoch))
            if s.leader_id:
                self.claims.append(("GetStatus leader_id", s.leader_id, s.epoch))
            return "OK"
        if method == "GetLeader":
            r = await client.get_leader()
            if r.leader_id:
                self.claims.append(("GetLeader", r.leader_id, r.epoch))
            return "OK"
        if method == "ListGaps":
            symbol = self._rng.choice(["", *w.symbols])
            keys: list[tuple[str, str, int]] = []
            async for gap in client.list_gaps(symbol=symbol, page_size=self._rng.randint(1, 4)):
                key = (gap.symbol, gap.timeframe, gap.start_time.ToMilliseconds())
                if keys and key <= keys[-1]:
                    self._wrong(f"ListGaps out of order: {keys[-1]} then {key}")
                keys.append(key)
                if (symbol and gap.symbol != symbol) or gap.symbol not in w.symbols:
                    self._wrong(f"ListGaps(symbol={symbol!r}) returned {gap.symbol}")
                if gap.end_time.ToMilliseconds() <= key[2] or gap.missing_candles < 1:
                    self._wrong(f"ListGaps returned an empty gap {key}")
            return "OK"
        if method == "StreamHealthScores":
            return await self._stream(client)
        self._n += 1
        if method == "RunAudit":
            kwargs: dict[str, Any] = {}
            if self._rng.random() < 0.5:
                kwargs = {"start": w.window_start, "end": w.window_end}
            return await self._mutate(client, method, f"ra-{self._seed}-{self._n}", kwargs)
        kwargs = {"symbol": self._rng.choice(w.symbols)}
        return await self._mutate(client, method, f"rd-{self._seed}-{self._n}", kwargs)

    async def _mutate(
        self, client: AuditClient, method: str, rid: str, kwargs: dict[str, Any]
    ) -> str:
        w = self._world
        try:
            if method == "RunAudit":
                reply = await client.run_audit(request_id=rid, **kwargs)
                self._check_cycle(rid, reply.cycle, fixed="start" in kwargs)
                c = reply.cycle
                outcome: tuple[Any, ...] = (c.cycle_id, c.served_by, c.epoch)
            else:
                report = await client.resolve_duplicates(
                    kwargs["symbol"],
                    TIMEFRAME,
                    start=w.window_start,
                    end=w.window_end,
                    strategy="keep_newest",
                    dry_run=False,
                    request_id=rid,
                )
                self._check_dedupe(rid, report)
                outcome = (
                    report.served_by,
                    report.epoch,
                    report.duplicate_groups,
                    report.documents_removed,
                    report.documents_archived,
                )
        except AuditError as exc:
            # Retried once more later, with the same id and body, as a caller would.
            retryable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if exc.code in retryable and rid not in self._retried and len(self._retries) < 50:
                self._retried.add(rid)
                self._retries.append((method, rid, kwargs))
            raise
        first = self._first.setdefault(rid, outcome)
        if first == outcome:
            self._done.append((method, rid, kwargs))
        else:
            self._wrong(f"{method} {rid} repeated returned {outcome}, first {first}")
        return "OK"

    def _check_cycle(self, rid: str, c: pb.AuditCycle, *, fixed: bool) -> None:
        self.replies.append(("RunAudit", rid, c.served_by, c.epoch, c.cycle_id))
        if c.status != pb.CYCLE_STATUS_SUCCEEDED:
            self._wrong(f"RunAudit {rid} returned a cycle with status {c.status}")
        if sorted(s.symbol for s in c.series) != sorted(self._world.symbols):
            self._wrong(f"RunAudit {rid} audited {[s.symbol for s in c.series]}")
        if not fixed:
            return
        seeded_total, seeded_present, _, seeded_gaps = self._world.expected_report
        start_ms = int(self._world.window_start.timestamp() * 1000)
        for s in c.series:
            got = (s.expected_candles, s.present_candles, s.missing_candles, s.gap_count)
            # The fixed window reaches TAIL_SLOTS past the seed, into slots not yet due
            # when the run starts: the service cuts it at the settled edge
            # (AUDIT_INGEST_GRACE), so the window's own end decides what is expected.
            total = (s.window_end.ToMilliseconds() - start_ms) // SLOT_MS
            # A writer round may empty slots itself, so fewer present slots are not a
            # wrong answer; with all seeded slots present the gaps must match exactly.
            tail_gap = 1 if total > seeded_total - TAIL_SLOTS else 0
            ok = (
                total <= seeded_total
                and s.expected_candles == total
                and s.present_candles + s.missing_candles == total
                and s.present_candles <= seeded_present
                and (
                    s.present_candles < seeded_present or s.gap_count == seeded_gaps - 1 + tail_gap
                )
            )
            if not ok:
                self._wrong(
                    f"RunAudit {rid} {s.symbol}: (expected, present, missing, gaps) = {got}, "
                    f"seeded {self._world.expected_report} over {total} slots"
                )

    def _check_dedupe(self, rid: str, r: pb.ResolveDuplicatesResponse) -> None:
        self.replies.append(("ResolveDuplicates", rid, r.served_by, r.epoch, ""))
        if r.request_id != rid or r.dry_run or not r.removal_enabled:
            self._wrong(f"ResolveDuplicates {rid}: echoed {r.request_id!r}, dry_run {r.dry_run}")
        if r.documents_removed > r.surplus_documents:
            self._wrong(
                f"ResolveDuplicates {rid}: removed {r.documents_removed} "
                f"> surplus {r.surplus_documents}"
            )

    async def _stream(self, client: AuditClient) -> str:
        symbols = self._rng.choice([[], [self._rng.choice(self._world.symbols)]])
        call = client.stub.StreamHealthScores(
            pb.StreamHealthScoresRequest(symbols=symbols), timeout=self._cfg.call_timeout
        )
        last: dict[tuple[str, str], int] = {}
        got = 0
        try:
            async with asyncio.timeout(2.0):
                async for response in call:
                    s = response.score
                    key = (s.symbol, s.timeframe)
                    # A verdict may change without a new cycle (same computed_at);
                    # a cycle's score older than one already sent never comes.
                    at = s.computed_at.ToMilliseconds()
                    if key in last and at < last[key]:
                        self._wrong(f"health stream went back in time for {key}")
                    last[key] = at
                    if (symbols and s.symbol not in symbols) or not 0.0 <= s.quality <= 100.0:
                        self._wrong(f"health stream sent {s.symbol} quality {s.quality}")
                    got += 1
                    if got >= 8:
                        break
        except TimeoutError:
            # Our own reading budget ran out: fine with data, like a deadline without.
            return "OK" if got else "DEADLINE_EXCEEDED"
        finally:
            call.cancel()
        return "OK"


class ChaosRun:
    def __init__(self, cfg: ChaosConfig) -> None:
        self.cfg = cfg
        self.seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(1 << 32)
        self.rng = random.Random(self.seed)
        self.report = ChaosReport(seed=self.seed, rounds=cfg.rounds)
        self._own_dir = cfg.workdir is None
        self.workdir = cfg.workdir or Path(tempfile.mkdtemp(prefix="chaos-"))
        self.report.workdir = str(self.workdir)
        self.db = SecantusDB(storage=str(self.workdir / "db"))
        self.replicas: list[ReplicaProcess] = []
        self.paused: set[str] = set()
        self.leader: ReplicaProcess | None = None
        self.originals: dict[Any, tuple[str, dict[str, Any]]] = {}
        self._control: dict[str, Any] = {}
        self._channels: list[grpc.aio.Channel] = []
        self.handle: Any = None
        self._lookback = 0
        self.load: ClientLoad | None = None
        # Polls that saw two replicas claim leadership at different epochs.
        self.dual_claims = 0
        # Slots a writer round deleted from: judged by the slot watch, not the final check.
        self.writer_slots: dict[str, set[dt.datetime]] = defaultdict(set)

    def say(self, text: str) -> None:
        if self.cfg.verbose:
            print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)

    def violation(self, text: str) -> None:
        self.report.violations.append(text)
        self.say(f"VIOLATION: {text}")

    # -- set-up ------------------------------------------------------------------------

    async def _seed(self) -> World:
        now_ms = int(time.time() * 1000)
        end = now_ms - now_ms % SLOT_MS
        start = end - self.cfg.slots * SLOT_MS
        report: tuple[int, int, int, int] = (0, 0, 0, 0)
        for symbol in self.cfg.symbols:
            docs, expected = demo_series(symbol, TIMEFRAME, now_ms, self.cfg.slots)
            collection = f"candles_{symbol}_{TIMEFRAME}"
            for doc in docs:
                doc["_id"] = ObjectId()
                self.originals[doc["_id"]] = (collection, dict(doc))
            await _bounded(self.handle.db[collection].insert_many(docs), 60)
            await _bounded(ensure_candle_index(self.handle, collection), 30)
            present = len({d["timestamp"] for d in docs})
            total = self.cfg.slots + TAIL_SLOTS
            report = (total, present, total - present, len(expected.gaps) + 1)
        # Keep the scheduled (default) window inside the seeded data for the whole run.
        self._lookback = (self.cfg.slots - max(60, self.cfg.slots // 5)) * 60
        return World(
            symbols=self.cfg.symbols,
            window_start=_utc(start),
            window_end=_utc(end + TAIL_SLOTS * SLOT_MS),
            expected_report=report,
        )

    def _env(self) -> dict[str, str]:
        c = self.cfg
        return {
            "AUDIT_SYMBOLS": ",".join(c.symbols),
            "AUDIT_TIMEFRAMES": TIMEFRAME,
            "AUDIT_LOOKBACK": str(self._lookback),
            "AUDIT_MIN_CANDLES": "30",
            "ENABLE_AUDITOR": "true",
            "AUDIT_INTERVAL": "1",
            "AUDIT_STARTUP_DELAY": "0",
            "ENABLE_DUPLICATE_REMOVAL": "true",
            "DUPLICATE_RESOLUTION_STRATEGY": "keep_newest",
            "ENABLE_AUTO_BACKFILL": "true",
            "MIN_AUTO_BACKFILL_GAP": "60",
            "MAX_AUTO_BACKFILL_JOBS": "100000",
            "LEADER_ELECTION_HEARTBEAT_INTERVAL": f"{c.heartbeat:g}",
            "LEADER_ELECTION_TIMEOUT": f"{c.timeout:g}",
            "MONGODB_TIMEOUT_MS": "1000",
            "SHUTDOWN_GRACE": "2",
            "LOG_LEVEL": "INFO",
        }

    def _stub(self, replica: ReplicaProcess) -> Any:
        stub = self._control.get(replica.name)
        if stub is None:
            channel = grpc.aio.insecure_channel(replica.target, options=FAST_RECONNECT)
            self._channels.append(channel)
            stub = self._control[replica.name] = pb_grpc.AuditServiceStub(channel)
        return stub

    # -- leadership --------------------------------------------------------------------

    def _running(self, exclude: set[str]) -> list[ReplicaProcess]:
        return [
            r
            for r in self.replicas
            if r.alive and r.name not in exclude and r.name not in self.paused
        ]

    async def _status(self, replica: ReplicaProcess) -> Any:
        try:
            return await self._stub(replica).GetStatus(pb.GetStatusRequest(), timeout=1.0)
        except grpc.aio.AioRpcError:
            return None

    async def _leaders(self, exclude: set[str]) -> tuple[list[tuple[str, int]], bool]:
        """(name, epoch) of each running replica that says it leads; and whether all answered."""
        running = self._running(exclude)
        answers = await asyncio.gather(*(self._status(r) for r in running))
        leading = [
            (r.name, int(a.epoch))
            for r, a in zip(running, answers, strict=True)
            if a is not None and a.role == pb.ROLE_LEADER
        ]
        if len(leading) > 1:
            epochs = [e for _, e in leading]
            if len(set(epochs)) < len(epochs):
                self.violation(f"two replicas lead the same epoch: {leading}")
            else:
                self.dual_claims += 1
        return leading, all(a is not None for a in answers)

    async def _wait_leader(
        self, exclude: set[str], since: float, hard: float
    ) -> tuple[ReplicaProcess | None, int, float]:
        """Polls until every running replica answers and exactly one leads."""
        while True:
            leading, everyone = await self._leaders(exclude)
            elapsed = time.monotonic() - since
            if everyone and len(leading) == 1:
                name, epoch = leading[0]
                return next(r for r in self.replicas if r.name == name), epoch, elapsed
            if elapsed > hard:
                return None, 0, elapsed
            await asyncio.sleep(0.05)

    async def _recover(
        self, round_: int, kind: str, target: str, exclude: set[str], since: float
    ) -> None:
        bound = self.cfg.bound
        leader, epoch, elapsed = await self._wait_leader(exclude, since, max(30.0, 4 * bound))
        rec = Recovery(round_, kind, target, elapsed, bound, leader.name if leader else "", epoch)
        self.report.recoveries.append(rec)
        self.leader = leader
        if not rec.ok:
            self.violation(
                f"round {round_} {kind} {target}: no single leader within {bound:.2f}s "
                f"(took {elapsed:.2f}s, leader {rec.leader or 'none'})"
            )
        else:
            self.say(
                f"round {round_} {kind} {target}: one leader ({rec.leader}, epoch {epoch}) "
                f"after {elapsed:.2f}s (bound {bound:.2f}s)"
            )

    async def _rejoin(self, round_: int, replica: ReplicaProcess) -> None:
        """After a restart: the replica answers and there is still exactly one leader."""
        leader, _, _ = await self._wait_leader(set(), time.monotonic(), 30.0)
        if leader is None:
            self.violation(f"round {round_}: {replica.name} restarted but no single leader")
        self.leader = leader or self.leader

    # -- faults ------------------------------------------------------------------------

    def _victim(self) -> ReplicaProcess:
        if self.leader is not None and self.leader.alive and self.rng.random() < 0.6:
            return self.leader
        return self.rng.choice([r for r in self.replicas if r.alive])

    async def _reap(self, replica: ReplicaProcess, within: float) -> int | None:
        assert replica.proc is not None
        try:
            return await asyncio.to_thread(replica.proc.wait, within)
        except subprocess.TimeoutExpired:
            self.violation(f"{replica.name} did not exit within {within:g}s; killed")
            replica.proc.send_signal(signal.SIGCONT)
            replica.proc.kill()
            await asyncio.to_thread(replica.proc.wait, 10)
            return None

    async def _start(self, replica: ReplicaProcess) -> bool:
        """Starts (or restarts) a replica on its port; False, recorded, if it cannot."""
        try:
            await asyncio.to_thread(replica.start)
        except (RuntimeError, TimeoutError) as exc:
            tail = replica.log_path.read_text(errors="replace").strip().splitlines()[-1:]
            self.violation(f"{replica.name} did not start: {exc}; log ends {tail}")
            return False
        return True

    async def _restart(self, round_: int, replica: ReplicaProcess) -> None:
        if await self._start(replica):
            await self._rejoin(round_, replica)

    async def _cut_mid_removal(self, victim: ReplicaProcess) -> None:
        """Sends the victim a removal and lets it start, so the fault lands mid-batch."""
        if self.load is not None:
            self.load.fire(victim.target, "ResolveDuplicates")
            await asyncio.sleep(self.rng.uniform(0.0, 0.25))  # pacing: where the fault lands

    async def fault_sigkill(self, round_: int) -> None:
        victim = self._victim()
        role = "leader" if victim is self.leader else "follower"
        self.say(f"round {round_}: SIGKILL {victim.name} ({role})")
        if victim is self.leader:
            await self._cut_mid_removal(victim)
        victim.signal(signal.SIGKILL)
        since = time.monotonic()
        await self._reap(victim, 10)
        # No killAllSessions here any more: the new leader kills its predecessor's
        # batch session itself (fence.py), and this run checks that it does.
        await self._recover(round_, "sigkill", victim.name, {victim.name}, since)
        await self._restart(round_, victim)

    async def fault_crash_in_batch(self, round_: int) -> None:
        """The leader dies between a fenced batch's last write and its commit."""
        victim = self.leader if self.leader is not None and self.leader.alive else None
        victim = victim or self.rng.choice([r for r in self.replicas if r.alive])
        self.say(f"round {round_}: crash in batch on {victim.name} (fence.before_commit)")
        victim.signal(signal.SIGTERM)
        await self._reap(victim, 20)
        victim.env["AUDITSVC_FAILPOINTS"] = f"fence.before_commit={self.rng.randint(1, 3)}"
        try:
            if not await self._start(victim):
                return
            # Hand leadership to the armed replica: stop whoever else leads.
            for _ in range(6):
                leader, _, _ = await self._wait_leader(set(), time.monotonic(), 30.0)
                if leader is None or leader is victim or not victim.alive:
                    break
                leader.signal(signal.SIGTERM)
                await self._reap(leader, 20)
                await self._restart(round_, leader)
            assert victim.proc is not None
            try:  # the scheduler's cycles run fenced batches; one of them crashes it
                await asyncio.to_thread(victim.proc.wait, 4 * self.cfg.bound + 30)
            except subprocess.TimeoutExpired:
                self.report.notes.append(f"round {round_}: {victim.name} never hit the failpoint")
                victim.signal(signal.SIGKILL)
                await self._reap(victim, 10)
            since = time.monotonic()
            await self._recover(round_, "crash_in_batch", victim.name, {victim.name}, since)
        finally:
            victim.env.pop("AUDITSVC_FAILPOINTS", None)
        await self._restart(round_, victim)

    async def fault_sigterm(self, round_: int) -> None:
        victim = self._victim()
        role = "leader" if victim is self.leader else "follower"
        self.say(f"round {round_}: SIGTERM {victim.name} ({role})")
        victim.signal(signal.SIGTERM)
        since = time.monotonic()
        await self._recover(round_, "sigterm", victim.name, {victim.name}, since)
        code = await self._reap(victim, 20)
        if code != 0:
            self.violation(f"round {round_}: {victim.name} exited {code} after SIGTERM, not 0")
        await self._restart(round_, victim)

    async def fault_sigstop(self, round_: int) -> None:
        victim = self.leader if self.leader is not None and self.leader.alive else None
        victim = victim or self.rng.choice([r for r in self.replicas if r.alive])
        self.say(f"round {round_}: SIGSTOP {victim.name} (leader)")
        await self._cut_mid_removal(victim)
        victim.signal(signal.SIGSTOP)
        self.paused.add(victim.name)
        since = time.monotonic()
        try:
            await self._recover(round_, "sigstop", victim.name, {victim.name}, since)
            # Past its lease for certain (a takeover already implies it): pacing only.
            rest = self.cfg.timeout + self.cfg.heartbeat - (time.monotonic() - since)
            if rest > 0:
                await asyncio.sleep(rest)
        finally:
            victim.signal(signal.SIGCONT)
            self.paused.discard(victim.name)
        await self._recover(round_, "sigcont", victim.name, set(), time.monotonic())

    async def fault_db_restart(self, round_: int) -> None:
        self.say(f"round {round_}: database restart")
        await asyncio.to_thread(self.db.stop)
        since = time.monotonic()
        # While the database is down nobody may lead: the leader steps down at its
        # renew deadline and nobody is promoted without a successful acquire.
        while True:
            leading, _ = await self._leaders(set())
            elapsed = time.monotonic() - since
            if not leading or elapsed > self.cfg.bound:
                break
            await asyncio.sleep(0.05)
        rec = Recovery(round_, "db_down", "db", elapsed, self.cfg.bound, "", 0)
        self.report.recoveries.append(rec)
        if leading:
            self.violation(f"round {round_}: {leading} still led {elapsed:.2f}s into the outage")
        else:
            self.say(f"round {round_}: no leader {elapsed:.2f}s after the database stopped")
        await asyncio.to_thread(self.db.start)
        await self._recover(round_, "db_restart", "db", set(), time.monotonic())

    async def fault_writer(self, round_: int) -> None:
        """A writer deletes the newest copy of duplicated slots while the leader removes."""
        victim = self.leader if self.leader is not None and self.leader.alive else None
        victim = victim or self.rng.choice([r for r in self.replicas if r.alive])
        symbol = self.rng.choice(self.cfg.symbols)
        collection = f"candles_{symbol}_{TIMEFRAME}"
        self.say(f"round {round_}: concurrent writer on {collection} (removal on {victim.name})")
        watch = SlotWatch(self.db.uri, DATABASE, collection)
        await watch.start()
        # Taken after the watch opened: a delete in between is in neither the
        # snapshot nor, as far as the replay is concerned, the events.
        docs = await _bounded(
            self.handle.db[collection].find({}, {"timestamp": 1}).to_list(None), 30
        )
        slot_of = {d["_id"]: d["timestamp"] for d in docs}
        by_slot: dict[dt.datetime, list[Any]] = defaultdict(list)
        for d in docs:
            by_slot[d["timestamp"]].append(d["_id"])
        duplicated = [ids for ids in by_slot.values() if len(ids) > 1]
        if self.load is not None:
            self.load.fire(victim.target, "ResolveDuplicates")
        deleted = 0
        for ids in self.rng.sample(duplicated, min(len(duplicated), 30)):
            newest = max(ids)
            try:
                outcome = await _bounded(self.handle.db[collection].delete_one({"_id": newest}), 5)
            except Exception as exc:  # a write conflict with a batch: the writer gives up
                self.report.notes.append(f"round {round_}: writer delete failed: {exc!r}")
                continue
            deleted += outcome.deleted_count
            self.originals.pop(newest, None)
            self.writer_slots[collection].add(slot_of[newest])
            await asyncio.sleep(self.rng.uniform(0.0, 0.02))  # pacing: interleave with batches
        await asyncio.sleep(self.cfg.settle)  # pacing: let the removal finish its batches
        archived = await _bounded(
            self.handle.db["duplicate_archive"]
            .find({"collection": collection}, {"document._id": 1})
            .to_list(None),
            30,
        )
        removed = {a["document"]["_id"] for a in archived}
        await watch.stop(expected=deleted, within=10)
        for slot in watch.emptied_by_removal(slot_of, removed):
            self.violation(f"round {round_}: a removal emptied {collection} slot {slot}")
        self.report.notes.append(
            f"round {round_}: writer deleted {deleted}; {len(watch.deleted)} deletes replayed"
        )

    async def _add_duplicates(self, round_: int) -> None:
        """Inserts copies of seeded candles under new ids, as a careless writer would."""
        for symbol in self.cfg.symbols:
            collection = f"candles_{symbol}_{TIMEFRAME}"
            pool = [d for c, d in self.originals.values() if c == collection]
            for k in range(self.cfg.duplicates_per_round):
                base = self.rng.choice(pool)
                doc = {**base, "_id": ObjectId(), "close": base["close"] + 0.001 * (k + 1)}
                doc["writer_round"] = round_
                try:
                    await _bounded(self.handle.db[collection].insert_one(dict(doc)), 5)
                except Exception as exc:
                    self.report.notes.append(f"round {round_}: duplicate insert failed: {exc!r}")
                    continue
                self.originals[doc["_id"]] = (collection, doc)

    def _plan(self) -> list[str]:
        n = self.cfg.rounds
        if n <= 0:
            return []
        rest = list(FAULTS[: n - 1]) + [self.rng.choice(FAULTS) for _ in range(n - 1 - len(FAULTS))]
        self.rng.shuffle(rest)
        rest.insert(self.rng.randrange(len(rest) + 1), "db_restart")
        return rest

    # -- checks ------------------------------------------------------------------------

    async def _check_fencing(self, sampler: LeaseSampler) -> None:
        for collection, stamp in EPOCH_WRITES:
            docs = await _bounded(
                self.handle.db[collection].find({}, {"epoch": 1, stamp: 1}).to_list(None), 60
            )
            for doc in docs:
                epoch, at = doc.get("epoch"), doc.get(stamp)
                self.report.writes_checked[collection] += 1
                if not isinstance(epoch, int) or epoch < 1 or at is None:
                    self.violation(f"{collection} {doc['_id']}: epoch {epoch!r}, {stamp} {at!r}")
                    continue
                own = sampler.acquired(epoch)
                if own is None:
                    self.report.unverifiable += 1
                elif at < own:
                    self.violation(
                        f"{collection} {doc['_id']}: {stamp} {at} before epoch {epoch} "
                        f"was acquired ({own})"
                    )
                following = sampler.next_acquired(epoch)
                if following is not None and at > following[1]:
                    late = _ms(at) - _ms(following[1])
                    self.violation(
                        f"{collection} {doc['_id']}: written under epoch {epoch} at {at}, "
                        f"{late} ms after epoch {following[0]} was acquired ({following[1]})"
                    )

    async def _check_candles(self) -> None:
        present: dict[str, dict[Any, dict[str, Any]]] = {}
        for symbol in self.cfg.symbols:
            collection = f"candles_{symbol}_{TIMEFRAME}"
            docs = await _bounded(self.handle.db[collection].find({}).to_list(None), 60)
            present[collection] = {d["_id"]: d for d in docs}
        archived: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        entries = await _bounded(self.handle.db["duplicate_archive"].find({}).to_list(None), 60)
        for entry in entries:
            archived[entry["document"]["_id"]].append(entry)
            self.report.archive_entries_checked += 1
        slots: dict[str, set[dt.datetime]] = defaultdict(set)
        for _id, (collection, original) in self.originals.items():
            self.report.candles_checked += 1
            slots[collection].add(original["timestamp"])
            now = present[collection].get(_id)
            if now is not None and now != original:
                self.violation(f"candle {_id} in {collection} changed: {original} -> {now}")
            for entry in archived.get(_id, []):
                if entry["document"] != original or entry["collection"] != collection:
                    self.violation(f"candle {_id} archived with different content: {entry}")
            if now is None and not archived.get(_id):
                self.violation(f"candle {_id} ({collection} {original['timestamp']}) lost")
        for _id in archived:
            if _id not in self.originals:
                self.report.notes.append(f"archive holds a document never tracked: {_id}")
        for collection, wanted in slots.items():
            left = {d["timestamp"] for d in present[collection].values()}
            # Slots a writer deleted from were judged by the slot watch of their round.
            for missing in sorted(wanted - left - self.writer_slots[collection]):
                self.violation(f"{collection}: slot {missing} has no candle left")

    async def _check_backfills(self) -> None:
        docs = await _bounded(
            self.handle.db["backfill_requests"].find({"open": True}, {"gap_key": 1}).to_list(None),
            60,
        )
        self.report.open_backfills_checked = len(docs)
        for key, n in Counter(d["gap_key"] for d in docs).items():
            if n > 1:
                self.violation(f"gap {key} has {n} open backfill requests")

    async def _check_claims(self, load: ClientLoad, sampler: LeaseSampler) -> None:
        for what, replica, epoch in load.claims:
            holder = sampler.holder(epoch)
            if holder is None:
                self.report.unverifiable += 1
            elif holder != replica:
                self.violation(f"{what} named {replica} for epoch {epoch}, held by {holder}")
        cycles = self.handle.db["audit_cycles"]
        for method, rid, served_by, epoch, cycle_id in load.replies:
            self.report.replies_checked += 1
            holder = sampler.holder(epoch)
            if holder is None:
                self.report.unverifiable += 1
            elif holder != served_by:
                self.violation(
                    f"{method} {rid}: served_by {served_by} at epoch {epoch}, held by {holder}"
                )
            if cycle_id:
                stored = await _bounded(cycles.find_one({"_id": cycle_id}), 10)
                if stored is None:
                    self.violation(f"{method} {rid}: cycle {cycle_id} is not stored")
                elif (stored["served_by"], stored["epoch"]) != (served_by, epoch):
                    self.violation(
                        f"{method} {rid}: reply says {served_by}/{epoch}, stored "
                        f"{stored['served_by']}/{stored['epoch']}"
                    )

    # -- the run -----------------------------------------------------------------------

    async def run(self) -> ChaosReport:
        began = time.monotonic()
        self.say(f"seed {self.seed}; {self.cfg.rounds} rounds; workdir {self.workdir}")
        stop_load, stop_sampler = asyncio.Event(), asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        load: ClientLoad | None = None
        sampler: LeaseSampler | None = None
        try:
            await asyncio.to_thread(self.db.start)
            self.handle = connect(self.db.uri, DATABASE, 2000)
            world = await self._seed()
            env = self._env()
            self.replicas = [
                ReplicaProcess(f"r{i}", self.db.uri, DATABASE, self.workdir, **env)
                for i in (1, 2, 3)
            ]
            sampler = LeaseSampler(connect(self.db.uri, DATABASE, 1000))
            tasks.append(asyncio.create_task(sampler.run(stop_sampler), name="lease-sampler"))
            for replica in self.replicas:
                if not await self._start(replica):
                    return self.report
            leader, epoch, elapsed = await self._wait_leader(set(), time.monotonic(), 60)
            if leader is None:
                self.violation("no single leader within 60s of start")
                return self.report
            self.leader = leader
            self.say(f"started: {leader.name} leads epoch {epoch} after {elapsed:.2f}s")
            load = self.load = ClientLoad(
                self.cfg,
                self.seed,
                [r.target for r in self.replicas],
                world,
                random.Random(self.seed + 1),
            )
            await load.connect()
            tasks.append(asyncio.create_task(load.run(stop_load), name="client-load"))
            await asyncio.sleep(self.cfg.settle)  # pacing: load and cycles before any fault
            for round_, kind in enumerate(self._plan(), 1):
                await self._add_duplicates(round_)
                self.report.faults[kind] += 1
                await getattr(self, f"fault_{kind}")(round_)
                await asyncio.sleep(self.cfg.settle)  # pacing: let the load run
            stop_load.set()
            await _bounded(asyncio.gather(tasks[1], return_exceptions=True), 120)
            await self._stop_replicas()
            with contextlib.suppress(Exception):
                await sampler.sample()
            stop_sampler.set()
            await _bounded(asyncio.gather(tasks[0], return_exceptions=True), 10)
            await self._check(load, sampler)
        finally:
            stop_load.set()
            stop_sampler.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._cleanup(sampler)
            self.report.seconds = time.monotonic() - began
        return self.report

    async def _stop_replicas(self) -> None:
        running = [r for r in self.replicas if r.alive]
        for replica in running:
            replica.signal(signal.SIGCONT)
            replica.signal(signal.SIGTERM)
        for replica in running:
            code = await self._reap(replica, 20)
            if code != 0:
                self.violation(f"{replica.name} exited {code} after the final SIGTERM, not 0")

    async def _check(self, load: ClientLoad, sampler: LeaseSampler) -> None:
        self.report.calls = load.calls
        self.report.fired = load.fired
        self.report.repeats = load.repeats
        for v in load.violations:
            self.violation(f"client: {v}")
        for v in sampler.violations:
            self.violation(v)
        self.report.lease_samples = sampler.samples
        self.report.epochs_sampled = len(sampler.epochs)
        self.report.epochs_missed = sampler.missed()
        if self.dual_claims:
            self.report.notes.append(
                f"{self.dual_claims} polls saw two replicas claim leadership at different "
                "epochs (a resumed leader before its watchdog ran); writes are judged below"
            )
        await self._check_fencing(sampler)
        await self._check_candles()
        await self._check_backfills()
        await self._check_claims(load, sampler)

    async def _cleanup(self, sampler: LeaseSampler | None) -> None:
        for channel in self._channels:
            await channel.close()
        for replica in self.replicas:
            await replica.close()
        if sampler is not None:
            await sampler.handle.close()
        if self.handle is not None:
            await self.handle.close()
        await asyncio.to_thread(self.db.stop)
        if self._own_dir and self.report.ok and not self.cfg.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


async def run_chaos(cfg: ChaosConfig) -> ChaosReport:
    return await ChaosRun(cfg).run()
