"""Figures 17 and 18 judge what they claim to: the lifecycle's eligibility, a
request made out of priority order, the most live requests, and a fill seen
after the next cycle. Pure: no process, no database, no timing."""

from __future__ import annotations

import datetime as dt
from typing import Any

from auditpb.v1 import audit_pb2 as pb
from bench import gap_watch, healing
from bench.figures import f17_heal_loop, f18_no_jam

T = 10  # BACKFILL_TIMEOUT, s
S = 1000
HOUR = healing.HOUR
T0 = 1_800_000_000_000


def _at(t_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(t_ms / 1000, tz=dt.UTC)


class TestEligibility:
    """A gap may be requested only with no live request, attempts left and its backoff over."""

    def test_a_gap_never_requested_is_eligible(self) -> None:
        assert f18_no_jam._Gap((0, 0, 0)).eligible(T0, T)

    def test_a_live_request_and_the_backoff_keep_it_waiting(self) -> None:
        gap = f18_no_jam._Gap((0, 0, 0))
        gap.requests = [(T0, T0 + T * S)]
        assert not gap.eligible(T0 + 5 * S, T)  # live
        assert not gap.eligible(T0 + (2 * T - 1) * S, T)  # backoff of T after the first
        assert gap.eligible(T0 + 2 * T * S, T)

    def test_the_backoff_doubles_and_three_attempts_end_it(self) -> None:
        gap = f18_no_jam._Gap((0, 0, 0))
        gap.requests = [(T0, T0 + T * S), (T0 + 20 * S, T0 + 30 * S)]
        assert not gap.eligible(T0 + 49 * S, T)  # 2 T after the second
        assert gap.eligible(T0 + 50 * S, T)
        gap.requests.append((T0 + 50 * S, T0 + 60 * S))
        assert not gap.eligible(T0 + 10_000 * S, T)


def _gap_doc(sym: str, start: int, missing: int) -> dict[str, Any]:
    return {
        "_id": f"{sym}|1h|{start}",
        "symbol": sym,
        "start_time": _at(start),
        "missing_candles": missing,
        "severity_rank": 0 if missing > 1 else 1,
        "state": "unfillable",
        "attempts": 3,
    }


def _request(gap: dict[str, Any], created: int, closed: int | None) -> dict[str, Any]:
    return {
        "_id": f"bf-{gap['_id']}-{created}",
        "gap_id": gap["_id"],
        "created_at": _at(created),
        "progress_at": _at(created),
        "closed_at": None if closed is None else _at(closed),
        "status": "expired" if closed else "pending",
    }


class TestNoJamJudge:
    """Inversions, the exact live count and stalls come out of the request documents."""

    def _market(self) -> Any:
        market = healing.Market(["A", "B"], seed=1)
        market.gaps = [
            healing.SeededGap("A", T0, T0 + 3 * HOUR),
            healing.SeededGap("B", T0, T0 + HOUR),
        ]
        return market

    def test_a_medium_gap_requested_while_a_high_one_waits_is_one_inversion(self) -> None:
        high, medium = _gap_doc("A", T0, 3), _gap_doc("B", T0, 1)
        reqs = [_request(medium, T0 + S, T0 + 12 * S)]  # cap 1: only B asked
        out = f18_no_jam._judge(self._market(), reqs, [high, medium], [], 1, T, T0)
        assert out["inversions"] == 1 and out["live_max"] == 1

    def test_the_worst_first_is_no_inversion_and_overlaps_count(self) -> None:
        high, medium = _gap_doc("A", T0, 3), _gap_doc("B", T0, 1)
        reqs = [_request(high, T0 + S, T0 + 12 * S), _request(medium, T0 + 2 * S, None)]
        out = f18_no_jam._judge(self._market(), reqs, [high, medium], [], 2, T, T0)
        assert out["inversions"] == 0 and out["live_max"] == 2

    def test_a_cycle_leaving_an_eligible_gap_with_room_under_the_cap_is_a_stall(self) -> None:
        high, medium = _gap_doc("A", T0, 3), _gap_doc("B", T0, 1)
        reqs = [_request(high, T0 + S, None)]
        cycles = [(T0, T0 + 2 * S)]  # B eligible at its start, cap 2, only A asked
        out = f18_no_jam._judge(self._market(), reqs, [high, medium], cycles, 2, T, T0)
        assert out["stalls"] == 1


class TestHealLoopJudge:
    """Without the tail a fill must be seen by the end of the first cycle that starts after it."""

    def _run(self, seen_ms: int, mode: str) -> dict[str, Any]:
        market = healing.Market(["A"], seed=1)
        market.gaps = [healing.SeededGap("A", T0, T0 + HOUR)]
        writer = healing.Writer(None, market, (0.0, 0.0), seed=1)
        writer.fills["r1"] = healing.Fill("r1", ("A", T0), T0 + 2 * S, T0 + 2 * S, T0 + 3 * S, 1)
        watch = gap_watch.GapWatch(None)
        s = watch.seen[("A", T0)] = gap_watch.Sighting(detected_ms=T0)
        s.first = {pb.GAP_STATE_OPEN: T0, pb.GAP_STATE_FILLED: seen_ms}
        s.changes = [(T0, pb.GAP_STATE_OPEN), (seen_ms, pb.GAP_STATE_FILLED)]
        cycles = [(T0, T0 + S), (T0 + 5 * S, T0 + 6 * S), (T0 + 10 * S, T0 + 11 * S)]
        return f17_heal_loop._judge(mode, market, watch, writer, cycles, [])

    def test_seen_by_the_next_cycles_end_is_met(self) -> None:
        out = self._run(T0 + 6 * S + 400, "off")
        assert out["met"] and out["late"] == 0

    def test_seen_only_at_the_cycle_after_is_late(self) -> None:
        out = self._run(T0 + 11 * S, "off")
        assert not out["met"] and out["late"] == 1

    def test_with_the_tail_more_than_one_and_a_half_seconds_is_late(self) -> None:
        assert self._run(T0 + 4 * S + 400, "auto")["late"] == 0
        assert self._run(T0 + 4 * S + 600, "auto")["late"] == 1
