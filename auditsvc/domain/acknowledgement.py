"""Acknowledged outages: operator-declared windows in which gaps are expected.

A gap lies *inside* the acknowledgements when the union of the windows that
apply to its series covers every one of its missing slots (two overlapping
acknowledgements cover what either covers). Such a gap is ACKNOWLEDGED: it is
not backfilled and not counted in a report's gap count, its missing (and
expected) slots, completeness or consistency; the report counts it apart
(``acknowledged_gap_count``, ``acknowledged_missing_candles``) so nothing is
hidden.

Limits: a gap only partly covered counts whole, as any other gap. The live state
(LIVE/LATE) never looks at acknowledgements: a trade gate must still refuse a
series whose newest candle is late. Pure rules, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from auditsvc.domain.errors import InvalidArgument
from auditsvc.domain.values import Gap, SeriesScan

MAX_REASON = 500
# Acknowledgements kept at once: every cycle reads them all, so their number is bounded.
MAX_ACKS = 1000


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    ack_id: str
    # Empty: every configured symbol (timeframe).
    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    start_ms: int
    end_ms: int
    reason: str
    created_ms: int

    def applies_to(self, symbol: str, timeframe: str) -> bool:
        return (not self.symbols or symbol in self.symbols) and (
            not self.timeframes or timeframe in self.timeframes
        )


def validate(start_ms: int | None, end_ms: int | None, reason: str) -> tuple[int, int, str]:
    """The window and reason of a new acknowledgement, or InvalidArgument naming the field."""
    if start_ms is None:
        raise InvalidArgument("start_time is required", field="start_time")
    if end_ms is None:
        raise InvalidArgument("end_time is required", field="end_time")
    if start_ms >= end_ms:
        raise InvalidArgument("start_time must be before end_time", field="start_time")
    text = reason.strip()
    if not text:
        raise InvalidArgument("reason is required (why these gaps are expected)", field="reason")
    if len(reason) > MAX_REASON:
        raise InvalidArgument(
            f"reason is longer than {MAX_REASON} characters ({len(reason)})", field="reason"
        )
    return start_ms, end_ms, text


def windows_for(
    acks: Sequence[Acknowledgement], symbol: str, timeframe: str
) -> list[tuple[int, int]]:
    """The series' acknowledged windows, merged where they overlap or touch."""
    spans = sorted((a.start_ms, a.end_ms) for a in acks if a.applies_to(symbol, timeframe))
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def covered(gap: Gap, windows: Sequence[tuple[int, int]]) -> bool:
    """Every missing slot of ``gap`` lies in one merged window."""
    return any(start <= gap.start_ms and gap.end_ms <= end for start, end in windows)


def split(scan: SeriesScan, windows: Sequence[tuple[int, int]]) -> tuple[SeriesScan, list[Gap]]:
    """(the scan without its acknowledged gaps and their slots, those gaps)."""
    if not windows:
        return scan, []
    kept = [g for g in scan.gaps if not covered(g, windows)]
    acknowledged = [g for g in scan.gaps if covered(g, windows)]
    if not acknowledged:
        return scan, []
    hidden = sum(g.missing_candles for g in acknowledged)
    return (
        dataclasses.replace(
            scan, gaps=tuple(kept), expected_candles=scan.expected_candles - hidden
        ),
        acknowledged,
    )
