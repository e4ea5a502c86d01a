"""plan_poll: which symbols one time-range poll reads and which get their own query."""

from __future__ import annotations

from auditsvc.domain.poll_plan import QUERY_COST_DOCS, plan_poll

SEC = 1000


def newest(n: int, at: int) -> dict[str, int | None]:
    return {f"S{i:04d}": at for i in range(n)}


class TestPlanPoll:
    def test_symbols_at_the_edge_share_the_range_from_the_oldest(self) -> None:
        """Recent symbols are read from the oldest of their newest candles, not a slack floor."""
        plan = plan_poll({"A": 100 * SEC, "B": 99 * SEC, "C": 98 * SEC}, SEC, 10 * SEC)
        assert plan.recent == ("A", "B", "C")
        assert plan.floor_ms == 98 * SEC
        assert plan.lagging == {}

    def test_a_few_stalled_symbols_are_queried_alone(self) -> None:
        """20 of 200 stopped 60 slots back: 20 queries beat re-reading 60 s of 200 symbols."""
        known = newest(200, 1_000 * SEC)
        for i in range(20):
            known[f"S{i:04d}"] = 940 * SEC
        plan = plan_poll(known, SEC, SEC)
        assert len(plan.lagging) == 20
        assert plan.floor_ms == 1_000 * SEC

    def test_many_symbols_a_few_slots_behind_join_the_range(self) -> None:
        """A new leader's first look, 1,000 symbols spread over 8 s: one range, no 1,000 queries."""
        known: dict[str, int | None] = {f"S{i:04d}": (1_000 - i % 9) * SEC for i in range(1_000)}
        plan = plan_poll(known, SEC, SEC)
        assert plan.lagging == {}
        assert plan.floor_ms == 992 * SEC

    def test_symbols_without_candles_are_always_lagging(self) -> None:
        """No newest candle means no floor to share: each is its own query."""
        plan = plan_poll({"A": 10 * SEC, "B": None}, SEC, 0)
        assert plan.recent == ("A",)
        assert plan.lagging == {"B": None}
        empty = plan_poll({"A": None, "B": None}, SEC, 0)
        assert empty.recent == () and empty.lagging == {"A": None, "B": None}

    def test_every_symbol_is_covered(self) -> None:
        """Each symbol is recent with the floor at or before its newest, or lagging."""
        known: dict[str, int | None] = {f"S{i}": (500 - 7 * i) * SEC for i in range(60)}
        known["none"] = None
        plan = plan_poll(known, SEC, 2 * SEC)
        assert set(plan.recent) | set(plan.lagging) == set(known)
        assert not set(plan.recent) & set(plan.lagging)
        for sym in plan.recent:
            t = known[sym]
            assert t is not None and plan.floor_ms <= t
        # Folding stops where a query is cheaper than the range it would add.
        for t in plan.lagging.values():
            if t is not None:
                extra = (min(known[s] or 0 for s in plan.recent) - t) / SEC * len(known)
                assert extra > QUERY_COST_DOCS
