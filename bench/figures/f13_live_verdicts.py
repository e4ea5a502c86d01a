"""13. Wrong verdicts under churn: what a follower serves, against the feed's truth.

Per mode (change_stream, poll; ``churn_modes``): two replicas with election,
``live_series`` 1s series fed live in one collection (bench.live.Feed),
LIVE_POLL_INTERVAL=1, AUDIT_INGEST_GRACE=1,
LIVE_STALE_AFTER at its default (5 s), the election at its defaults
(heartbeat 10 s, lease 30 s: figure 10's 1 s / 3 s lease is lost to the
database's pauses under this load, and the figure is not about failover),
scheduled cycles every 5 s
(AUDIT_INTERVAL=5) over a 10-minute lookback (AUDIT_LOOKBACK=600), each
re-reading the last 30 s (AUDIT_RECHECK=30, no periodic full scan), with 2
minutes of primed history. At the default recheck (1 h, beyond the lookback)
every cycle re-reads 10 minutes of every series, 120,000 candles through one
unbounded ``$in``: on SecantusDB that stalls the database past the lease
(issue 20 item 6; measured 2026-12-07 18:52, the leader lost its lease
every 50 s and no series reached LIVE in 120 s), which measures that defect,
not the verdicts. On the
follower: one StreamHealthScores subscriber for every series, and
ListHealthScores every 0.5 s. Once every series is LIVE at the subscriber,
``live_stopped`` series pause and resume at random moments for
``churn_seconds`` (pauses 0.5-15 s, runs 1-15 s; a resume either writes the
missed slots or leaves them a hole, at random); all are fed again at the end
and observed 10 s more.

Truth (bench.truth): the feed's own inserts. At instant t the series'
newest due slot is the latest slot whose close + grace is past; the series is
present when that candle's insert had returned, surely missing when its insert
had not begun.

Sampling: the subscriber's current state of each series (its last message) at
every 100 ms of the window: one sample is 0.1 series-second. Each
ListHealthScores row is judged over [request sent - allowance, reply got].

Counted (bench.churn):

* wrong LIVE: served LIVE while the newest due slot had been surely missing
  for at least LIVE_POLL_INTERVAL + 1 s (2 s) since it fell due (the time the
  tail gets to see the stall and the stream to deliver it);
* false alarm: served LATE, UNKNOWN or NO_DATA while the series had been
  present for at least AUDIT_INGEST_GRACE + LIVE_POLL_INTERVAL + 1 s (3 s);
* LIVE naming an absent candle (no allowance): a LIVE score whose
  last_candle_open the feed had not begun to insert when it reached the bench.

Also reported: the wrong LIVE still served LIVE_STALE_AFTER + 1 s (6 s) after
the slot fell due, the bound UNKNOWN promises even when the tail or the
database falls behind.

Target: none of the first and third; false alarms <= 0.1% of what was observed
(series-seconds of the stream; rows of the list), in every mode.

Limits: timestamps are the bench's (bench.verdicts, bench.truth); a starved
bench delays both the feed and its view of the served states.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from typing import Any

import grpc

from auditpb.v1 import audit_pb2 as pb
from bench import churn, cluster, live
from bench.context import Context, NotMeasured
from bench.figures.common import MET, MISSED, ms, result
from bench.procs import Replica
from bench.truth import Ledger
from bench.verdicts import LIVE, ListPoll, Subscriber

KEY = "live_verdicts"
TITLE = "Wrong verdicts under churn (a follower's stream and list)"
TARGET = (
    "0 wrong LIVE; false alarms <= 0.1% of series-seconds (1s series, some paused and "
    "resumed at random, cycles every 5 s over 10 min, a follower's subscriber and list)"
)
RUN_LIMIT_S = 1800.0
MODES_DEFAULT = ("change_stream", "poll")
POLL_S = 1.0
AUDIT_INTERVAL_S = 5
LOOKBACK_S = 600
HISTORY_S = 120
RECHECK_S = 30
# "false" gives the same run without cycles, a baseline for an A/B (not a flag:
# the figure is defined with cycles).
AUDITOR = "true"
SAMPLE_MS = 100
LIST_EVERY_S = 0.5
SETTLE_S = 10.0
ALL_LIVE_WITHIN_S = 120.0
FALSE_ALARM_PCT = 0.1
ALLOW = churn.Allowance(
    live_ms=round((POLL_S + 1) * 1000),
    alarm_ms=round((live.GRACE_S + POLL_S + 1) * 1000),
)
# The bound UNKNOWN promises when nothing keeps up (the tail lags, the database
# stalls): LIVE_STALE_AFTER (default 5 s) + 1 s for the stream to push it.
PAST_STALE = churn.Allowance(live_ms=6000, alarm_ms=ALLOW.alarm_ms)


async def run(ctx: Context) -> dict[str, Any]:
    per_mode: dict[str, dict[str, Any]] = {}
    for mode in ctx.sizes.churn_modes:
        try:
            per_mode[mode] = await _one_mode(ctx, mode)
        except NotMeasured as exc:
            per_mode[mode] = {"not_measured": str(exc)}
        await ctx.cleanup()
    measured = {m: f for m, f in per_mode.items() if "not_measured" not in f}
    wrong = sum(f["wrong_live_total"] for f in measured.values())
    pcts = [f[src]["false_alarm_pct"] for f in measured.values() for src in ("stream", "list")]
    worst = max(pcts) if pcts and len(measured) == len(per_mode) else math.nan
    ok = wrong == 0 and not math.isnan(worst) and worst <= FALSE_ALARM_PCT
    sz = ctx.sizes
    summary = "; ".join(_mode_summary(m, f) for m, f in per_mode.items())
    return result(
        target=TARGET,
        summary=(
            f"{sz.live_series} series, {sz.live_stopped} churned for {sz.churn_seconds:g} s — "
            f"{summary}"
        ),
        verdict=MET if ok else MISSED,
        ratio=worst / FALSE_ALARM_PCT if wrong == 0 else math.nan,
        ratio_of="worst false-alarm % / 0.1% (none if any wrong LIVE)",
        details={f"{m}_{k}": v for m, f in per_mode.items() for k, v in f.items()},
    )


def _mode_summary(mode: str, f: dict[str, Any]) -> str:
    if "not_measured" in f:
        return f"{mode}: not measured ({f['not_measured'][:160]})"
    s, lst = f["stream"], f["list"]
    return (
        f"{mode}: {f['wrong_live_total']} wrong LIVE; false alarms "
        f"{s['false_alarm_series_seconds']:g} of {s['series_seconds']:g} series-s "
        f"({s['false_alarm_pct']:.3f}%) on the stream, {lst['false_alarm']}/{lst['observed']} "
        f"list rows ({lst['false_alarm_pct']:.3f}%); {f['cycles']['succeeded']} cycles"
    )


async def _one_mode(ctx: Context, mode: str) -> dict[str, Any]:
    sz = ctx.sizes
    name = ctx.database(f"verdicts_{mode}")
    syms = live.symbols(sz.live_series, prefix="V")
    ledger = Ledger(round(live.GRACE_S * 1000))
    feed = live.Feed(ctx.client[name], syms, journal=ledger.record)
    await feed.prime(HISTORY_S)
    feed.start()
    env = {
        **cluster.election_env(ctx, syms[0]),
        **live.live_env(syms, mode, POLL_S),
        "ENABLE_AUDITOR": AUDITOR,
        "AUDIT_INTERVAL": f"{AUDIT_INTERVAL_S}",
        "AUDIT_LOOKBACK": f"{LOOKBACK_S}",
        "AUDIT_RECHECK": f"{RECHECK_S}",
        "AUDIT_FULL_SCAN_EVERY": "1000000",
        "LEADER_ELECTION_HEARTBEAT_INTERVAL": "10",
        "LEADER_ELECTION_TIMEOUT": "30",
    }
    watchers: list[Subscriber | ListPoll] = []
    cycles: dict[str, tuple[int, float]] = {}
    counting: asyncio.Task[None] | None = None
    try:
        replicas = await asyncio.gather(
            *(ctx.replica(f"vd-{mode}-{i}", name, **env) for i in (1, 2))
        )
        leader = await cluster.leader_of(list(replicas), cluster.settle_time(ctx))
        follower = next(r for r in replicas if r is not leader)
        sub = Subscriber(follower.stub)
        watchers.append(sub)
        sub.start()
        if not await sub.until(lambda: sub.count((LIVE,), syms) == len(syms), ALL_LIVE_WITHIN_S):
            raise NotMeasured(
                f"{mode}: {sub.count((LIVE,), syms)}/{len(syms)} series LIVE at the "
                f"follower's subscriber within {ALL_LIVE_WITHIN_S:g} s {sub.error}"
            )
        lists = ListPoll(follower.stub, LIST_EVERY_S)
        watchers.append(lists)
        lists.start()
        counting = asyncio.create_task(_count_cycles(follower, cycles))
        rng = random.Random(13)
        churned = rng.sample(syms, sz.live_stopped)
        events = churn.schedule(rng, churned, sz.churn_seconds)
        origin = live.now_ms()
        await _drive(feed, events, origin)
        await asyncio.sleep(max(0.0, (origin + sz.churn_seconds * 1000 - live.now_ms()) / 1000))
        await asyncio.sleep(SETTLE_S)
        end = live.now_ms()
        if sub.error:
            raise NotMeasured(f"{mode}: the follower's stream ended: {sub.error}")
    finally:
        if counting is not None:
            counting.cancel()
            await asyncio.gather(counting, return_exceptions=True)
        for w in watchers:
            await w.close()
        await feed.close()
    window = (origin, end)
    stream = churn.judge_stream(ledger, sub.log, syms, window, SAMPLE_MS, ALLOW, origin)
    rows = churn.judge_lists(ledger, lists.replies, syms, window, ALLOW, origin)
    done = [d for d, _ in cycles.values() if d == pb.CYCLE_STATUS_SUCCEEDED]
    stale_stream = churn.judge_stream(ledger, sub.log, syms, window, SAMPLE_MS, PAST_STALE, 0)
    stale_rows = churn.judge_lists(ledger, lists.replies, syms, window, PAST_STALE, 0)
    return {
        "wrong_live_total": stream.wrong_live
        + rows.wrong_live
        + stream.absent_candle
        + rows.absent_candle,
        # Of those, LIVE still served LIVE_STALE_AFTER + 1 s after the slot fell due.
        # (by kind: a LIVE after a resume with a hole is fresh, not held past a stall)
        "wrong_live_past_stale_bound": {
            "stream_series_seconds": round(stale_stream.wrong_live * SAMPLE_MS / 1000, 1),
            "stream_series_seconds_by_kind": {
                k: round(n * SAMPLE_MS / 1000, 1)
                for k, n in stale_stream.wrong_live_by_kind.items()
            },
            "stream_episodes": stale_stream.episode_count,
            "list_rows": stale_rows.wrong_live,
            "list_rows_by_kind": dict(stale_rows.wrong_live_by_kind),
        },
        "stream": stream.as_dict(SAMPLE_MS / 1000),
        "list": rows.as_dict(None) | {"replies": len(lists.replies), "errors": lists.errors},
        "cycles": {
            "seen": len(cycles),
            "succeeded": len(done),
            "longest_s": round(max((s for _, s in cycles.values()), default=math.nan), 2),
        },
        "churn_events": len(events),
        "feed_ticks_written_after_grace": feed.late_writes,
        "observed_s": round((end - origin) / 1000, 1),
    }


async def _drive(feed: live.Feed, events: list[churn.Event], origin: int) -> None:
    for e in events:
        await asyncio.sleep(max(0.0, (origin + e.at_s * 1000 - live.now_ms()) / 1000))
        if e.action == "stop":
            await feed.stop(e.symbol)
        else:
            await feed.resume(e.symbol, fill=e.action == "resume_fill")


async def _count_cycles(replica: Replica, seen: dict[str, tuple[int, float]]) -> None:
    """Every cycle GetStatus names as the last one: (status, seconds it took)."""
    while True:
        with contextlib.suppress(grpc.aio.AioRpcError):
            c = (await replica.status(limit_s=5)).last_cycle
            if c.cycle_id and c.HasField("finished_at"):
                took = (ms(c.finished_at) - ms(c.started_at)) / 1000
                seen[c.cycle_id] = (int(c.status), took)
        await asyncio.sleep(1.0)
