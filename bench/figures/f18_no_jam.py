"""18. No jam: a writer that fills nothing and closes nothing never stops the
backfills, the cap holds, and every gap ends UNFILLABLE.

Figure 17's series and gaps (bench.healing), two replicas with election, the live
tail on (LIVE_MODE=auto), cycles every ``jam_interval`` seconds,
BACKFILL_TIMEOUT=``jam_timeout`` (T), BACKFILL_MAX_ATTEMPTS at its default (3)
and MAX_AUTO_BACKFILL_JOBS = half the gaps (rounded up), so the cap binds at
first and the three requests of every gap still fit in 10 T (a gap needs at
least T + T + T + 2T + T = 6 T: a request, its backoff, a request, the doubled
backoff, a request; and each step waits for a healing pass, at a cycle's end,
so T must be well above a cycle's period). No writer. Observed for 10 T from the first request: the
count of open requests every 0.1 s; then every request and gap document is
read back from the database and ListGaps (UNFILLABLE) from the follower.

Judged exactly from the request documents (created_at, closed_at: the
service's clock), with the lifecycle's rules (``domain/gap_lifecycle``):

* **cap**: the most requests live at once (intervals [created, closed)) and
  the most sampled, against MAX_AUTO_BACKFILL_JOBS;
* **worst first**: at each healing pass (the requests sharing one created_at),
  a gap that was eligible (no live request, fewer than 3 attempts, backoff over)
  but not requested must not rank before one that was (severity, then missing
  candles, then the newest start);
* **flow**: after each successful cycle, a gap eligible when it started and
  still unrequested while fewer than the cap were live is a stall;
* **outcome**: every gap UNFILLABLE with 3 attempts after 10 T; each request
  closed ``expired`` within one cycle of its timeout (expiry lag).

Limits: the pass times are the service's own stamps; a pass that made no
request leaves none, which is why flow is judged at the cycles' ends.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from auditpb.v1 import audit_pb2 as pb
from auditsvc.domain.gap_lifecycle import backoff_s
from bench import cluster, gap_watch, healing
from bench.context import Context, NotMeasured
from bench.figures.common import MET, MISSED, result

KEY = "no_jam"
TITLE = "No jam (a writer that fills and closes nothing)"
TARGET = (
    "over 10 x BACKFILL_TIMEOUT: live requests never above MAX_AUTO_BACKFILL_JOBS; "
    "requests go worst first and never stall; every gap UNFILLABLE after its attempts"
)
ATTEMPTS = 3  # BACKFILL_MAX_ATTEMPTS at its default
RUN_LIMIT_S = 1800.0
Rank = tuple[int, int, int]


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    name = ctx.database("no_jam")
    db = ctx.client[name]
    syms = healing.symbols(sz.heal_series)
    market = healing.Market(syms, seed=22)
    await market.seed(db)
    cap = math.ceil(len(market.gaps) / 2)
    timeout_s = sz.jam_timeout
    env = healing.env(
        syms, live_mode="auto", interval=sz.jam_interval, cap=cap, BACKFILL_TIMEOUT=str(timeout_s)
    )
    feed = healing.HourFeed(db, market)
    sampler = _LiveCount(db)
    try:
        feed.start()
        replicas = await healing.start_replicas(ctx, name, "jam", env)
        leader = await cluster.leader_of(replicas, cluster.settle_time(ctx))
        follower = next(r for r in replicas if r is not leader)
        sampler.start()
        first = await _first_request(db, 120 + len(syms) / 5)
        await asyncio.sleep(max(0.0, (first + 10 * timeout_s * 1000 - healing.now_ms()) / 1000))
        await sampler.close()
        requests = await db["backfill_requests"].find({}).to_list(None)
        gaps = await db["audit_gaps"].find({}).to_list(None)
        cycles = await healing.cycles(db)
        listed = await gap_watch.list_gaps(follower.stub, (pb.GAP_STATE_UNFILLABLE,))
    finally:
        await sampler.close()
        await feed.close()
    out = _judge(market, requests, gaps, cycles, cap, timeout_s, first)
    out["sampled_live_max"] = sampler.most
    out["samples"] = sampler.samples
    out["listed_unfillable"] = sum(
        1 for g in listed if (g.symbol, gap_watch.ms(g.start_time)) in market.by_key
    )
    lag = out["expiry_lag_s"]
    headline = (
        f"most live {out['live_max']} (sampled {sampler.most}) of cap {cap}; "
        f"{out['requests']} requests, {out['inversions']} out of priority order, "
        f"{out['stalls']} stalls; {out['unfillable_with_attempts']}/{len(market.gaps)} "
        f"UNFILLABLE after {ATTEMPTS} attempts, the last "
        f"{out['last_outcome_after_first_request_s']:.1f} s after the first request; "
        f"expiry lag p50 {lag['p50']:.2f} s, p99 {lag['p99']:.2f} s"
    )
    ok = (
        out["live_max"] <= cap
        and sampler.most <= cap
        and out["inversions"] == 0
        and out["stalls"] == 0
        and out["unfillable_with_attempts"] == len(market.gaps)
        and out["listed_unfillable"] == len(market.gaps)
    )
    return result(
        target=TARGET,
        summary=f"{len(syms)} series, {len(market.gaps)} gaps, cap {cap}, "
        f"BACKFILL_TIMEOUT {timeout_s} s, {10 * timeout_s} s — {headline}",
        verdict=MET if ok else MISSED,
        ratio=out["live_max"] / cap,
        ratio_of="most live requests / cap",
        details=out,
    )


class _LiveCount(healing.Loop):
    """The open requests, counted every 0.1 s."""

    def __init__(self, db: Any) -> None:
        self.coll = db["backfill_requests"]
        self.most = 0
        self.samples = 0

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            n = await self.coll.count_documents({"open": True})
            self.most, self.samples = max(self.most, n), self.samples + 1
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - began)))


async def _first_request(db: Any, within: float) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        doc = await db["backfill_requests"].find_one({}, sort=[("created_at", 1)])
        if doc is not None:
            return healing.to_ms(doc["created_at"])
        await asyncio.sleep(0.1)
    raise NotMeasured(f"no backfill request within {within:g} s")


class _Gap:
    """One gap's requests (created, closed ms), oldest first, and its rank."""

    def __init__(self, rank: Rank) -> None:
        self.rank = rank
        self.requests: list[tuple[int, int | None]] = []

    def eligible(self, t: int, timeout_s: int) -> bool:
        """Whether the healing pass at ``t`` may request it (before requesting)."""
        before = [(c, x) for c, x in self.requests if c < t]
        if any(x is None or x > t for _, x in before):
            return False  # a live request
        if len(before) >= ATTEMPTS:
            return False  # UNFILLABLE
        if not before:
            return True
        closed = before[-1][1]
        assert closed is not None
        return closed + backoff_s(timeout_s, len(before)) * 1000 <= t

    def requested_in(self, a: int, b: int) -> bool:
        return any(a < c <= b for c, _ in self.requests)


def _judge(
    market: healing.Market,
    requests: list[dict[str, Any]],
    gap_docs: list[dict[str, Any]],
    cycles: list[tuple[int, int]],
    cap: int,
    timeout_s: int,
    first: int,
) -> dict[str, Any]:
    by_id = {str(d["_id"]): d for d in gap_docs}
    gaps: dict[str, _Gap] = {}
    for d in gap_docs:
        gaps[str(d["_id"])] = _Gap(
            (int(d["severity_rank"]), -int(d["missing_candles"]), -healing.to_ms(d["start_time"]))
        )
    reqs = sorted(
        (
            healing.to_ms(r["created_at"]),
            None if r.get("closed_at") is None else healing.to_ms(r["closed_at"]),
            str(r["gap_id"]),
            r,
        )
        for r in requests
    )
    for c, x, gid, _ in reqs:
        gaps.setdefault(gid, _Gap((9, 0, 0))).requests.append((c, x))
    # The cap: closes before creates at one instant (a pass expires, then requests).
    events = sorted([(c, 1) for c, _, _, _ in reqs] + [(x, -1) for _, x, _, _ in reqs if x])
    live = most = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        live += step
        most = max(most, live)
    passes = sorted({c for c, _, _, _ in reqs})
    inversions = passes_inverted = 0
    for t in passes:
        asked = {gid for c, _, gid, _ in reqs if c == t}
        waiting = [
            g.rank for gid, g in gaps.items() if gid not in asked and g.eligible(t, timeout_s)
        ]
        if waiting:
            best_waiting = min(waiting)
            bad = sum(1 for gid in asked if gaps[gid].rank > best_waiting)
            inversions += bad
            passes_inverted += 1 if bad else 0
    stalls: list[dict[str, Any]] = []
    for s, f in cycles:
        live_at_end = sum(1 for c, x, _, _ in reqs if c <= f and (x is None or x > f))
        if live_at_end >= cap:
            continue
        left = [
            gid for gid, g in gaps.items() if g.eligible(s, timeout_s) and not g.requested_in(s, f)
        ]
        if left:
            stalls.append({"cycle_start_ms": s, "waiting": len(left), "live": live_at_end})
    lags = [
        (x - (healing.to_ms(r.get("progress_at") or r["created_at"]) + timeout_s * 1000)) / 1000
        for _, x, _, r in reqs
        if x is not None and r.get("status") == "expired"
    ]
    statuses: dict[str, int] = {}
    for *_, r in reqs:
        statuses[str(r.get("status"))] = statuses.get(str(r.get("status")), 0) + 1
    seeded = {(g.symbol, g.start_ms) for g in market.gaps}
    states: dict[str, int] = {}
    done = 0
    for d in gap_docs:
        if (d["symbol"], healing.to_ms(d["start_time"])) not in seeded:
            continue
        states[str(d.get("state"))] = states.get(str(d.get("state")), 0) + 1
        if d.get("state") == "unfillable" and int(d.get("attempts", 0)) == ATTEMPTS:
            done += 1
    last_close = max((x for _, x, _, _ in reqs if x), default=first)
    unexpected = [
        gid
        for gid in by_id
        if (by_id[gid]["symbol"], healing.to_ms(by_id[gid]["start_time"])) not in seeded
    ]
    return {
        "gaps": len(seeded),
        "high_gaps": sum(1 for g in market.gaps if g.high),
        "cap": cap,
        "live_max": most,
        "requests": len(reqs),
        "request_statuses": statuses,
        "passes_with_requests": len(passes),
        "inversions": inversions,
        "passes_inverted": passes_inverted,
        "stalls": len(stalls),
        "stall_examples": stalls[:5],
        "unfillable_with_attempts": done,
        "end_states": states,
        "unexpected_gaps": len(unexpected),
        "last_outcome_after_first_request_s": round((last_close - first) / 1000, 3),
        "expiry_lag_s": healing.summary(lags),
        "cycles": len(cycles),
        "cycle_s": healing.summary([(f - s) / 1000 for s, f in cycles]),
    }
