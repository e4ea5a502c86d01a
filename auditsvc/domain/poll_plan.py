"""What one poll of a shared candle collection reads: pure rules, no I/O.

A poll reads the candles newer than those the live tail has seen. Symbols whose
newest candle is close to the collection's newest (*recent*) share ONE range
query on time, from the oldest of their newest candles (the *floor*); the others
(*lagging*: stalled, never seen, or lost track of) are read one indexed query
each. Both kinds cost the database something:

* the range re-reads every candle of every symbol after the floor, so each slot
  the floor moves back costs about one document per symbol of the collection;
* a lagging symbol costs one query, which on any server costs about as much as
  reading :data:`QUERY_COST_DOCS` documents.

:func:`plan_poll` moves lagging symbols into the range, newest first, while that
is cheaper than querying them one by one. So a few stalled symbols are queried
on their own (the range stays short), while many symbols that all fell a few
slots behind (a new leader's first look, a slow pass on a loaded database) are
caught up by the range in one read, instead of a query each that leaves them
behind again by the time the last one returns.

Guarantee: every symbol is either in ``recent`` with ``floor`` at or before its
newest candle, or in ``lagging``; so no candle newer than a symbol's newest is
missed by the reads the plan asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# What one query costs, in documents of a range read.
QUERY_COST_DOCS = 20


@dataclass(frozen=True, slots=True)
class PollPlan:
    floor_ms: int
    recent: tuple[str, ...]
    lagging: dict[str, int | None]


def plan_poll(newest: Mapping[str, int | None], slot_ms: int, grace_ms: int) -> PollPlan:
    """The reads for one collection whose symbols' newest candles are ``newest``."""
    known = {sym: t for sym, t in newest.items() if t is not None}
    if not known:
        return PollPlan(0, (), dict(newest))
    top = max(known.values())
    # Slack: symbols a couple of slots (plus the grace) behind the newest share the range.
    slack = top - 2 * slot_ms - grace_ms
    recent = {sym: t for sym, t in known.items() if t >= slack}
    behind = sorted(((t, sym) for sym, t in known.items() if t < slack), reverse=True)
    floor = min(recent.values())
    # Fold the k newest lagging symbols in when k queries cost more than the range
    # the k-th one's newest would add; the largest such k wins.
    fold = 0
    for k, (t, _) in enumerate(behind, start=1):
        extra_docs = (floor - t) / max(slot_ms, 1) * len(newest)
        if k * QUERY_COST_DOCS >= extra_docs:
            fold = k
    for t, sym in behind[:fold]:
        recent[sym] = t
    lagging: dict[str, int | None] = {sym: t for t, sym in behind[fold:]}
    lagging.update({sym: None for sym, t in newest.items() if t is None})
    return PollPlan(min(recent.values()), tuple(sorted(recent)), lagging)
