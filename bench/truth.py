"""Ground truth for the verdict figures (13, 14): from the feed's own inserts, when
each 1s series' newest due slot was present and when it was missing.

A slot opening at ``s`` is *due* from ``s + 1 s + grace`` (AUDIT_INGEST_GRACE),
as the service defines it (``settled_end``). At instant ``t`` the newest due
slot is the latest one due by ``t``; the series is *present* at ``t`` when that
slot's candle was stored by ``t``, else *missing*.

An insert is only known to lie between the call and its return, so the truth
is kept two ways, each favouring the service:

* ``missing_spans(sure=False)``: missing until the insert *returned*; a span
  not intersecting it proves the series present (used to call a false alarm);
* ``missing_spans(sure=True)``: missing until the insert *began*; a span
  covering an interval proves the candle absent (used to call a wrong LIVE).

Limits: the clock is this process's wall clock, the one the replicas and the
private database read on the same machine; the feed's timestamps are taken in
the bench's event loop, so a starved bench dates an insert late (in the
service's favour for a false alarm, against it for a wrong LIVE by at most the
starvation, which the allowances absorb).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

SEC = 1000


@dataclass
class Ledger:
    """Every candle the feed stored, per symbol: open ms -> (began, returned) ms."""

    grace_ms: int
    inserted: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)

    def record(self, candles: list[tuple[str, int]], began: int, returned: int) -> None:
        for sym, t in candles:
            # A re-insert (none in these figures) keeps the first: that one stored it.
            self.inserted.setdefault(sym, {}).setdefault(t, (began, returned))

    def due_ms(self, slot: int) -> int:
        return slot + SEC + self.grace_ms

    def newest_due(self, at_ms: int) -> int:
        """The open of the newest slot due at ``at_ms``."""
        return (at_ms - self.grace_ms) // SEC * SEC - SEC

    def stored_by(self, sym: str, slot: int, at_ms: int) -> bool:
        """Whether an insert of ``slot`` had at least begun by ``at_ms``."""
        seen = self.inserted.get(sym, {}).get(slot)
        return seen is not None and seen[0] <= at_ms

    def missing_spans(self, sym: str, start_ms: int, end_ms: int, *, sure: bool) -> Spans:
        """The instants of [start_ms, end_ms) at which ``sym`` was missing, merged."""
        got = self.inserted.get(sym, {})
        which = 0 if sure else 1
        out: list[tuple[int, int]] = []
        slot = self.newest_due(start_ms)
        while self.due_ms(slot) < end_ms:
            a = max(self.due_ms(slot), start_ms)
            b = min(self.due_ms(slot + SEC), end_ms)
            seen = got.get(slot)
            stored = b if seen is None else min(b, max(a, seen[which]))
            if stored > a:
                if out and out[-1][1] == a:
                    out[-1] = (out[-1][0], stored)
                else:
                    out.append((a, stored))
            slot += SEC
        return Spans(out)


@dataclass(frozen=True)
class Spans:
    """Disjoint, sorted half-open intervals (ms)."""

    spans: list[tuple[int, int]]

    def covers(self, a: int, b: int) -> bool:
        """Whether one span holds every instant of [a, b]."""
        i = bisect.bisect_right(self.spans, (a, 1 << 62)) - 1
        return i >= 0 and self.spans[i][0] <= a and b < self.spans[i][1]

    def touches(self, a: int, b: int) -> bool:
        """Whether some span holds an instant of [a, b]."""
        i = bisect.bisect_right(self.spans, (b, 1 << 62)) - 1
        return i >= 0 and self.spans[i][1] > a

    def around(self, t: int) -> tuple[int, int] | None:
        """The span holding ``t``, if any."""
        i = bisect.bisect_right(self.spans, (t, 1 << 62)) - 1
        if i >= 0 and self.spans[i][0] <= t < self.spans[i][1]:
            return self.spans[i]
        return None
