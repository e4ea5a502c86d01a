"""Figure 13's churn and its judge: which series stop and resume when, and every
instant at which what a reader was served disagreed with the feed's truth
(bench.truth) beyond the allowance a transition gets.

Rules, applied to one served state at instant ``t`` (a stream's state held at
a sample instant; a ListHealthScores row between its request ``sent`` and its
reply ``got``, judged over [sent - allowance, got]):

* **wrong LIVE**: LIVE while the series was surely missing (no insert of the
  newest due slot had begun) for the whole of [t - ``live_ms``, t]: the slot
  fell due at least ``live_ms`` ago and is still absent.
* **false alarm**: anything but LIVE (LATE, UNKNOWN, NO_DATA, nothing yet)
  while the series was present (the newest due slot's insert had returned)
  for the whole of [t - ``alarm_ms``, t].
* **LIVE naming an absent candle** (no allowance): a LIVE score whose
  ``last_candle_open`` (the newest slot due at its ``verdict_time``) the feed
  had not begun to insert when the score reached the bench.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from auditpb.v1 import audit_pb2 as pb
from bench.truth import Ledger
from bench.verdicts import LIVE, Seen, state_at

# A paused feed stays off this long (s): from under a slot (no slot missed at
# all) to many slots; then runs this long before its next pause.
PAUSE_S = (0.5, 15.0)
RUN_S = (1.0, 15.0)
EPISODES_KEPT = 5


@dataclass(frozen=True)
class Event:
    at_s: float
    symbol: str
    action: str  # "stop", "resume_fill" (writes the missed slots) or "resume_hole"


def schedule(rng: random.Random, syms: list[str], seconds: float) -> list[Event]:
    """Each symbol alternates run and pause at random moments over ``seconds``; every
    paused symbol resumes at ``seconds`` at the latest."""
    events: list[Event] = []
    for sym in syms:
        t = rng.uniform(0.0, RUN_S[1])
        while t < seconds:
            events.append(Event(t, sym, "stop"))
            t = min(t + rng.uniform(*PAUSE_S), seconds)
            events.append(Event(t, sym, rng.choice(("resume_fill", "resume_hole"))))
            t += rng.uniform(*RUN_S)
    return sorted(events, key=lambda e: e.at_s)


@dataclass(frozen=True)
class Allowance:
    live_ms: int  # LIVE may outlast the slot falling due by this much
    alarm_ms: int  # LATE / UNKNOWN may outlast the candle's insert by this much


@dataclass
class Tally:
    """Judged observations of one source (a stream's samples or list rows)."""

    observed: int = 0
    wrong_live: int = 0
    false_alarm: int = 0
    absent_candle: int = 0
    alarm_states: Counter[str] = field(default_factory=Counter)
    episodes: list[dict[str, Any]] = field(default_factory=list)
    episode_count: int = 0
    # "newer candle stored": the newest due slot was absent but a later, not yet
    # due candle was stored (a resume after a hole); "stalled": nothing newer.
    episode_kinds: Counter[str] = field(default_factory=Counter)
    wrong_live_by_kind: Counter[str] = field(default_factory=Counter)
    absent_by_kind: Counter[str] = field(default_factory=Counter)
    alarm_series: set[str] = field(default_factory=set)

    def as_dict(self, unit_s: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "observed": self.observed,
            "wrong_live": self.wrong_live,
            "false_alarm": self.false_alarm,
            "false_alarm_pct": round(100 * self.false_alarm / self.observed, 4)
            if self.observed
            else float("nan"),
            "false_alarm_states": dict(self.alarm_states),
            "live_naming_absent_candle": self.absent_candle,
            "live_naming_absent_candle_by_kind": dict(self.absent_by_kind),
            "wrong_live_episodes": self.episode_count,
            "wrong_live_episode_kinds": dict(self.episode_kinds),
            "wrong_live_by_kind": dict(self.wrong_live_by_kind),
            "series_with_false_alarms": len(self.alarm_series),
        }
        if unit_s is not None:
            out["series_seconds"] = round(self.observed * unit_s, 1)
            out["wrong_live_series_seconds"] = round(self.wrong_live * unit_s, 1)
            out["false_alarm_series_seconds"] = round(self.false_alarm * unit_s, 1)
        if self.episodes:
            out["wrong_live_first_episodes"] = self.episodes
        return out


def _name(state: int | None) -> str:
    return "none" if state is None else pb.SeriesState.Name(state).removeprefix("SERIES_STATE_")


def _absent(ledger: Ledger, sym: str, seen: Seen) -> bool:
    return (
        seen.state == LIVE and bool(seen.candle) and not ledger.stored_by(sym, seen.candle, seen.at)
    )


def judge_stream(
    ledger: Ledger,
    logs: dict[str, list[Seen]],
    syms: list[str],
    window: tuple[int, int],
    step_ms: int,
    allow: Allowance,
    origin: int,
) -> Tally:
    """The subscriber's state of each series sampled every ``step_ms`` over ``window``."""
    start, end = window
    tally = Tally()
    for sym in syms:
        log = logs.get(sym, [])
        sure = ledger.missing_spans(sym, start - allow.live_ms, end, sure=True)
        done = ledger.missing_spans(sym, start - allow.alarm_ms, end, sure=False)
        i, episode = 0, None
        for t in range(start, end, step_ms):
            state, i = state_at(log, t, i)
            tally.observed += 1
            wrong = state == LIVE and sure.covers(t - allow.live_ms, t)
            if wrong:
                tally.wrong_live += 1
                episode = episode or _episode(tally, ledger, sym, t, sure.around(t), log, origin)
                episode["last_s"] = round((t - origin) / 1000, 2)
                tally.wrong_live_by_kind[episode["kind"]] += 1
            else:
                episode = None
            if state != LIVE and not done.touches(t - allow.alarm_ms, t):
                tally.false_alarm += 1
                tally.alarm_states[_name(state)] += 1
                tally.alarm_series.add(sym)
        for m in log:
            if start <= m.at < end and _absent(ledger, sym, m):
                tally.absent_candle += 1
                tally.absent_by_kind[_kind(ledger, sym, m.at)] += 1
    return tally


def _kind(ledger: Ledger, sym: str, t: int) -> str:
    due = ledger.newest_due(t)
    newer = any(
        slot > due and began <= t for slot, (began, _) in ledger.inserted.get(sym, {}).items()
    )
    return "newer candle stored" if newer else "stalled"


def _episode(
    tally: Tally,
    ledger: Ledger,
    sym: str,
    t: int,
    span: tuple[int, int] | None,
    log: list[Seen],
    origin: int,
) -> dict[str, Any]:
    """A new wrong-LIVE episode; the first few keep the messages that led to it and
    the feed's inserts around it (slot open: insert began, seconds from ``origin``)."""
    tally.episode_count += 1
    kind = _kind(ledger, sym, t)
    tally.episode_kinds[kind] += 1
    record: dict[str, Any] = {
        "symbol": sym,
        "kind": kind,
        "first_s": round((t - origin) / 1000, 2),
    }
    if span is not None:
        record["missing_from_s"] = round((span[0] - origin) / 1000, 2)
        lo = span[0] - 5000
        record["messages"] = [m.describe(origin) for m in log if lo <= m.at <= t][-8:]
        record["inserted"] = [
            f"{(slot - origin) / 1000:+.2f}s@{(began - origin) / 1000:+.2f}s"
            for slot, (began, _) in sorted(ledger.inserted.get(sym, {}).items())
            if lo - 3000 <= slot <= t + 2000
        ]
    if len(tally.episodes) < EPISODES_KEPT:
        tally.episodes.append(record)
    return record


def judge_lists(
    ledger: Ledger,
    replies: list[tuple[int, int, dict[str, Seen]]],
    syms: list[str],
    window: tuple[int, int],
    allow: Allowance,
    origin: int,
) -> Tally:
    """Every row of the ListHealthScores replies sent within ``window``."""
    start, end = window
    tally = Tally()
    inside = [r for r in replies if start <= r[0] and r[1] < end]
    for sym in syms:
        sure = ledger.missing_spans(sym, start - allow.live_ms, end, sure=True)
        done = ledger.missing_spans(sym, start - allow.alarm_ms, end, sure=False)
        for sent, got, rows in inside:
            row = rows.get(sym)
            state = None if row is None else row.state
            tally.observed += 1
            if state == LIVE and sure.covers(sent - allow.live_ms, got):
                tally.wrong_live += 1
                tally.wrong_live_by_kind[_kind(ledger, sym, got)] += 1
                tally.episode_count += 1
                if len(tally.episodes) < EPISODES_KEPT and row is not None:
                    tally.episodes.append({"symbol": sym, "row": row.describe(origin)})
            if state != LIVE and not done.touches(sent - allow.alarm_ms, got):
                tally.false_alarm += 1
                tally.alarm_states[_name(state)] += 1
            if row is not None and _absent(ledger, sym, row):
                tally.absent_candle += 1
                tally.absent_by_kind[_kind(ledger, sym, row.at)] += 1
    return tally
