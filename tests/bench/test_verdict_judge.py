"""Figure 13's judge counts what it claims to: a LIVE held past a stall's
allowance, a LATE held past a recovery's, and nothing within either. Pure: no
process, no database, no timing."""

from __future__ import annotations

from auditpb.v1 import audit_pb2 as pb
from bench.churn import Allowance, judge_lists, judge_stream
from bench.truth import SEC, Ledger
from bench.verdicts import Seen

GRACE = 1000
ALLOW = Allowance(live_ms=2000, alarm_ms=3000)
LIVE, LATE = pb.SERIES_STATE_LIVE, pb.SERIES_STATE_LATE
T0 = 1_000_000_000  # a slot open, ms


def _fed(ledger: Ledger, sym: str, slots: range, delay: int = 50) -> None:
    """Each slot inserted ``delay`` ms after it closes, taking 10 ms."""
    for s in slots:
        ledger.record([(sym, s)], s + SEC + delay, s + SEC + delay + 10)


def test_truth_turns_missing_when_the_first_absent_slot_falls_due() -> None:
    ledger = Ledger(GRACE)
    _fed(ledger, "A", range(T0, T0 + 10 * SEC, SEC))  # newest slot T0 + 9 s
    gone = T0 + 10 * SEC + SEC + GRACE  # slot T0 + 10 s is due here
    spans = ledger.missing_spans("A", T0 + 5 * SEC, T0 + 30 * SEC, sure=True)
    assert spans.spans == [(gone, T0 + 30 * SEC)]


def test_a_late_insert_is_missing_from_due_until_it_returns() -> None:
    ledger = Ledger(GRACE)
    _fed(ledger, "A", range(T0, T0 + 5 * SEC, SEC))
    slot = T0 + 5 * SEC
    ledger.record([("A", slot)], slot + 2500, slot + 2600)  # 500 ms past its due
    _fed(ledger, "A", range(slot + SEC, slot + 5 * SEC, SEC))
    due = slot + SEC + GRACE
    fed_from = T0 + 3 * SEC  # the slots before T0 were never fed
    assert ledger.missing_spans("A", fed_from, slot + 4 * SEC, sure=False).spans == [
        (due, slot + 2600)
    ]
    assert ledger.missing_spans("A", fed_from, slot + 4 * SEC, sure=True).spans == [
        (due, slot + 2500)
    ]


def _seen(at: int, state: int, candle: int = 0) -> Seen:
    return Seen(at, state, candle, at, 0)


def test_live_held_past_the_allowance_is_wrong_and_within_it_is_not() -> None:
    ledger = Ledger(GRACE)
    _fed(ledger, "A", range(T0, T0 + 10 * SEC, SEC))  # stops: missing from T0 + 12 s
    missing = T0 + 12 * SEC
    window = (T0 + 5 * SEC, T0 + 20 * SEC)
    prompt = {"A": [_seen(T0, LIVE), _seen(missing + 1500, LATE)]}
    tally = judge_stream(ledger, prompt, ["A"], window, 100, ALLOW, T0)
    assert (tally.wrong_live, tally.false_alarm) == (0, 0)
    assert tally.observed == 150

    slow = {"A": [_seen(T0, LIVE), _seen(missing + 3000, LATE)]}
    tally = judge_stream(ledger, slow, ["A"], window, 100, ALLOW, T0)
    # LIVE at missing + 2.0 s .. + 2.9 s: ten samples, one episode.
    assert (tally.wrong_live, tally.episode_count, tally.false_alarm) == (10, 1, 0)
    assert tally.episodes[0]["symbol"] == "A"
    assert tally.episode_kinds == {"stalled": 1}
    assert tally.wrong_live_by_kind == {"stalled": 10}


def test_late_while_present_is_a_false_alarm_after_the_allowance() -> None:
    ledger = Ledger(GRACE)
    _fed(ledger, "A", range(T0, T0 + 20 * SEC, SEC))
    window = (T0 + 5 * SEC, T0 + 15 * SEC)
    blip = {"A": [_seen(T0, LIVE), _seen(T0 + 8 * SEC, LATE), _seen(T0 + 9 * SEC, LIVE)]}
    tally = judge_stream(ledger, blip, ["A"], window, 100, ALLOW, T0)
    assert (tally.wrong_live, tally.false_alarm) == (0, 10)
    assert tally.alarm_states == {"LATE": 10}


def test_live_naming_a_candle_not_yet_inserted_is_counted() -> None:
    ledger = Ledger(GRACE)
    _fed(ledger, "A", range(T0, T0 + 10 * SEC, SEC))
    at = T0 + 12 * SEC + 100
    logs = {"A": [_seen(T0 + 6 * SEC, LIVE, T0 + 4 * SEC), _seen(at, LIVE, T0 + 10 * SEC)]}
    tally = judge_stream(ledger, logs, ["A"], (T0 + 5 * SEC, T0 + 13 * SEC), 100, ALLOW, T0)
    assert tally.absent_candle == 1
    assert tally.absent_by_kind == {"stalled": 1}


def test_list_rows_are_judged_over_the_whole_call() -> None:
    ledger = Ledger(GRACE)
    _fed(ledger, "A", range(T0, T0 + 10 * SEC, SEC))  # missing from T0 + 12 s
    missing = T0 + 12 * SEC
    early = (missing + 1000, missing + 1200, {"A": _seen(missing + 1200, LIVE)})
    late = (missing + 2500, missing + 2600, {"A": _seen(missing + 2600, LIVE)})
    tally = judge_lists(ledger, [early, late], ["A"], (T0, T0 + 20 * SEC), ALLOW, T0)
    assert (tally.observed, tally.wrong_live) == (2, 1)
