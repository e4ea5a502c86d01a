"""14. Stale verdicts: a frozen leader's verdicts turn UNKNOWN on every follower,
and come back when a leader confirms again.

Three replicas with election (LEADER_ELECTION_TIMEOUT ``freeze_lease``,
heartbeat ``freeze_heartbeat``: 30 s and 2 s, so a leader frozen 20 s keeps its
lease, whose own margin is the timeout less one heartbeat), ``live_series`` 1s
series fed live the whole time (bench.live.Feed), LIVE_MODE=auto,
LIVE_POLL_INTERVAL=1, LIVE_STALE_AFTER ``freeze_stale_after`` (5 s, the
default). A StreamHealthScores subscriber on each replica but the leader; every
series LIVE at both before each phase.

* Short freeze: SIGSTOP the leader for ``freeze_seconds`` (20 s), then SIGCONT.
  Measured per series and subscriber: the first UNKNOWN's arrival minus the
  SIGSTOP (target p99 <= LIVE_STALE_AFTER + 1 s), and the first LIVE or LATE
  after it minus the SIGCONT (target p99 <= 2 s). Whether the leader kept its
  term is reported (the heartbeat's epoch).
* Long freeze: SIGSTOP the leader until another replica takes office (the
  heartbeat document shows a newer epoch), SIGCONT it then. Measured the same,
  the return from the new leader's first confirmation (its ``confirmed_at``,
  on the database's clock, the machine's).

The feed never stops, so every series is present throughout: a return as LATE
is allowed by the target, but counted (``back_as_late``), since it is a false
alarm. A series that never turned UNKNOWN, or never came back, is a miss.
``live_again`` is when LIVE itself was served again (within the 30 s wait).
"""

from __future__ import annotations

import asyncio
import math
import signal
from typing import Any

from bench import cluster, live
from bench.context import Context, NotMeasured
from bench.figures.common import MET, MISSED, result
from bench.procs import Replica
from bench.stats import latency_ms, percentile, rounded
from bench.verdicts import KNOWN, LATE, LIVE, UNKNOWN, Heartbeats, Subscriber, first_after

KEY = "stale_verdicts"
TITLE = "Stale verdicts (UNKNOWN while the leader is frozen, then back)"
TARGET = (
    "p99 over the series at every follower's subscriber: SIGSTOP of the leader → UNKNOWN "
    "<= LIVE_STALE_AFTER + 1 s; SIGCONT (or, past the lease, the new leader's first "
    "confirmation) → LIVE or LATE <= 2 s"
)
BACK_LIMIT_S = 2.0
ALL_LIVE_WITHIN_S = 120.0
BACK_WITHIN_S = 30.0


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    if sz.freeze_seconds >= sz.freeze_lease - sz.freeze_heartbeat:
        raise NotMeasured("freeze_seconds must stay under freeze_lease - freeze_heartbeat")
    name = ctx.database("stale_verdicts")
    syms = live.symbols(sz.live_series, prefix="S")
    feed = live.Feed(ctx.client[name], syms)
    await feed.prime(5)
    feed.start()
    beats = Heartbeats(ctx.client[name])
    beats.start()
    env = {
        **cluster.election_env(ctx, syms[0]),
        **live.live_env(syms, "auto", 1.0),
        "LEADER_ELECTION_TIMEOUT": f"{sz.freeze_lease:g}",
        "LEADER_ELECTION_HEARTBEAT_INTERVAL": f"{sz.freeze_heartbeat:g}",
        "LIVE_STALE_AFTER": f"{sz.freeze_stale_after:g}",
    }
    phases: dict[str, dict[str, Any]] = {}
    try:
        replicas = list(
            await asyncio.gather(*(ctx.replica(f"sv{i}", name, **env) for i in (1, 2, 3)))
        )
        for phase in ("short", "long"):
            phases[phase] = await _phase(ctx, replicas, syms, beats, long=phase == "long")
    finally:
        await beats.close()
        await feed.close()
    unknown_limit = sz.freeze_stale_after + 1
    ratios = [
        max(p["unknown_p99_s"] / unknown_limit, p["back_p99_s"] / BACK_LIMIT_S)
        for p in phases.values()
    ]
    worst = max(ratios)
    return result(
        target=TARGET,
        summary=" ; ".join(_summary(k, p, unknown_limit) for k, p in phases.items()),
        verdict=MET if not math.isnan(worst) and worst <= 1 else MISSED,
        ratio=worst,
        ratio_of="worst p99 / its limit",
        details={f"{k}_{m}": v for k, p in phases.items() for m, v in p.items()}
        | {
            "stale_after_s": sz.freeze_stale_after,
            "lease_s": sz.freeze_lease,
            "election_heartbeat_s": sz.freeze_heartbeat,
            "feed_ticks_written_after_grace": feed.late_writes,
        },
    )


def _summary(phase: str, p: dict[str, Any], unknown_limit: float) -> str:
    how = (
        f"{p['frozen_s']:g} s freeze"
        if phase == "short"
        else f"freeze past the lease ({p['frozen_s']:g} s, takeover "
        f"{p['takeover_after_stop_s']:g} s after the SIGSTOP)"
    )
    return (
        f"{how}: UNKNOWN p50/p99/max {_s(p['unknown'])} (limit {unknown_limit:g} s), "
        f"back p50/p99/max {_s(p['back'])} (limit {BACK_LIMIT_S:g} s), "
        f"{p['measured']} series x subscribers, {p['back_as_late']} back as LATE"
    )


def _s(lat: dict[str, float]) -> str:
    return "/".join(f"{lat[k] / 1000:.2f}" for k in ("p50_ms", "p99_ms", "max_ms")) + " s"


async def _phase(
    ctx: Context, replicas: list[Replica], syms: list[str], beats: Heartbeats, *, long: bool
) -> dict[str, Any]:
    sz = ctx.sizes
    leader = await cluster.leader_of(replicas, cluster.settle_time(ctx))
    others = [r for r in replicas if r is not leader and r.alive]
    subs = [Subscriber(r.stub) for r in others]
    for sub in subs:
        sub.start()
    try:
        for sub, r in zip(subs, others, strict=True):
            if not await sub.until(
                lambda s=sub: s.count((LIVE,), syms) == len(syms), ALL_LIVE_WITHIN_S
            ):
                raise NotMeasured(
                    f"{len(syms) - sub.count((LIVE,), syms)} series not LIVE on {r.name} "
                    f"within {ALL_LIVE_WITHIN_S:g} s {sub.error}"
                )
        epoch = beats.seen[-1][1] if beats.seen else 0
        leader.signal(signal.SIGSTOP)
        stopped = live.now_ms()
        takeover = None
        if long:
            takeover = (await _takeover(beats, epoch, sz.freeze_lease + 30))[2]
        else:
            await asyncio.sleep(sz.freeze_seconds)
        leader.signal(signal.SIGCONT)
        continued = live.now_ms()
        reference = continued if takeover is None else takeover
        await asyncio.gather(
            # Until LIVE, not merely known: a return as LATE is followed to its LIVE.
            *(sub.until(lambda s=sub: _all_live(s, syms, stopped), BACK_WITHIN_S) for sub in subs)
        )
    finally:
        leader.signal(signal.SIGCONT)  # whatever failed, never leave it frozen
        for sub in subs:
            await sub.close()
    unknown: list[float] = []
    back: list[float] = []
    live_again: list[float] = []
    as_late = 0
    for sub in subs:
        for sym in syms:
            log = sub.log.get(sym, [])
            went = first_after(log, stopped, (UNKNOWN,))
            came = first_after(log, went.at, KNOWN) if went is not None else None
            if went is not None:
                unknown.append((went.at - stopped) / 1000)
            if came is not None:
                back.append((came.at - reference) / 1000)
                as_late += came.state == LATE
                lived = first_after(log, came.at, (LIVE,))
                if lived is not None:
                    live_again.append((lived.at - reference) / 1000)
    expected = len(subs) * len(syms)
    complete = len(unknown) == expected and len(back) == expected
    later = beats.first_of_epoch_after(epoch)
    out: dict[str, Any] = {
        "frozen_s": round((continued - stopped) / 1000, 2),
        "unknown_p99_s": rounded(percentile(unknown, 99)) if complete else math.nan,
        "back_p99_s": rounded(percentile(back, 99)) if complete else math.nan,
        "unknown": latency_ms(unknown),
        "back": latency_ms(back),
        "measured": f"{min(len(unknown), len(back))}/{expected}",
        "back_as_late": as_late,
        # The feed never stopped: LIVE is the truth; this is when it was served again.
        "live_again": latency_ms(live_again),
        "subscribers_on": [r.name for r in others],
        "frozen_leader": leader.name,
    }
    if long:
        out["takeover_after_stop_s"] = round((reference - stopped) / 1000, 2)
    else:
        # A later epoch means the lease was lost: the freeze outlasted the election.
        out["lease_kept"] = later is None
    return out


async def _takeover(beats: Heartbeats, epoch: int, within: float) -> tuple[int, int, int]:
    """The first heartbeat of an epoch after ``epoch``: (read at, epoch, confirmed ms)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        found = beats.first_of_epoch_after(epoch)
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    raise NotMeasured(f"no new leader confirmed within {within:g} s of the SIGSTOP")


def _all_live(sub: Subscriber, syms: list[str], since: int) -> bool:
    """Whether every series turned UNKNOWN after ``since`` and then LIVE again."""
    for sym in syms:
        log = sub.log.get(sym, [])
        went = first_after(log, since, (UNKNOWN,))
        if went is None or first_after(log, went.at, (LIVE,)) is None:
            return False
    return True
