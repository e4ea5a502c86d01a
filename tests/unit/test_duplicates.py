"""Unit tests for auditsvc.domain.survivor."""

from __future__ import annotations

import itertools

import pytest

from auditsvc.domain.survivor import compare_values, resolve, sort_ids
from auditsvc.domain.values import CandleRef, Resolution, Strategy

TS = 1_704_067_200_000


class FakeObjectId:
    """Stands in for bson.ObjectId: comparable only with its own kind."""

    def __init__(self, hex_: str) -> None:
        self.hex = hex_

    def __lt__(self, other: FakeObjectId) -> bool:
        return self.hex < other.hex

    def __str__(self) -> str:
        return self.hex


def ref(doc_id: object, version: object | None = None) -> CandleRef:
    return CandleRef(doc_id=doc_id, timestamp_ms=TS, version=version)


class TestStrategies:
    """KEEP_NEWEST and KEEP_OLDEST pick opposite ends of one ordering."""

    def test_newest_by_version(self) -> None:
        """KEEP_NEWEST keeps the greatest version; the rest are removed by doc_id."""
        refs = [ref(3, 4), ref(1, 3), ref(2, 5)]
        assert resolve(Strategy.KEEP_NEWEST, refs) == Resolution(
            TS, kept=ref(2, 5), removed=(ref(1, 3), ref(3, 4))
        )

    def test_oldest_by_version(self) -> None:
        """KEEP_OLDEST keeps the least version."""
        refs = [ref(3, 4), ref(1, 3), ref(2, 5)]
        assert resolve(Strategy.KEEP_OLDEST, refs).kept == ref(1, 3)

    def test_version_outranks_none(self) -> None:
        """A versioned ref beats an unversioned one even with a smaller doc_id."""
        refs = [ref(9), ref(1, 0)]
        assert resolve(Strategy.KEEP_NEWEST, refs).kept == ref(1, 0)
        assert resolve(Strategy.KEEP_OLDEST, refs).kept == ref(9)

    def test_no_versions_by_doc_id(self) -> None:
        """Without versions the greatest doc_id is newest and the least is oldest."""
        ids = [FakeObjectId("65a0"), FakeObjectId("65b0"), FakeObjectId("6590")]
        refs = [ref(i) for i in ids]
        newest = resolve(Strategy.KEEP_NEWEST, refs)
        assert newest.kept.doc_id is ids[1]
        assert [r.doc_id for r in newest.removed] == [ids[2], ids[0]]
        assert resolve(Strategy.KEEP_OLDEST, refs).kept.doc_id is ids[2]

    def test_version_tie_broken_by_doc_id(self) -> None:
        """Equal versions fall back to doc_id order."""
        refs = [ref("b", 7), ref("c", 7), ref("a", 7)]
        assert resolve(Strategy.KEEP_NEWEST, refs).kept == ref("c", 7)
        assert resolve(Strategy.KEEP_OLDEST, refs).kept == ref("a", 7)

    def test_order_independent(self) -> None:
        """Every permutation of the group resolves identically."""
        refs = [ref(1), ref("x", 2), ref(3, 2), ref(4, "v")]
        for strategy in (Strategy.KEEP_NEWEST, Strategy.KEEP_OLDEST):
            results = {resolve(strategy, list(p)) for p in itertools.permutations(refs)}
            assert len(results) == 1


class TestRejections:
    """Inputs the strategies do not resolve raise ValueError."""

    def test_manual(self) -> None:
        """MANUAL groups are only reported, so resolving one raises."""
        with pytest.raises(ValueError):
            resolve(Strategy.MANUAL, [ref(1), ref(2)])

    def test_too_small(self) -> None:
        """A group of one is not a duplicate group."""
        with pytest.raises(ValueError):
            resolve(Strategy.KEEP_NEWEST, [ref(1)])

    def test_mixed_timestamps(self) -> None:
        """Refs of different timestamps cannot form one group."""
        with pytest.raises(ValueError):
            resolve(Strategy.KEEP_NEWEST, [ref(1), CandleRef(2, TS + 1)])


class TestOrdering:
    """The id ordering is total, native within a type and never raises."""

    def test_native_within_type(self) -> None:
        """Ints compare numerically, not as strings."""
        assert sort_ids([10, 9, 100]) == [9, 10, 100]

    def test_mixed_types_by_type_name(self) -> None:
        """Different types order by type name first: builtins.int before builtins.str."""
        assert sort_ids(["b", 3, "a", 1]) == [1, 3, "a", "b"]

    def test_incomparable_never_raises(self) -> None:
        """Values that refuse native comparison order by str() deterministically."""
        values: list[object] = [(1, "a"), (1, 2), {"y": 0}, {"x": 1}, None, 2.5, b"x", None]
        first = sort_ids(values)
        assert sort_ids(reversed(values)) == first
        assert first.index((1, "a")) < first.index((1, 2))  # by str: "'" < "2"
        assert compare_values({"x": 1}, {"y": 0}) == -1
        assert compare_values(None, None) == 0

    def test_mixed_versions(self) -> None:
        """Versions of mixed types resolve without raising, by type name."""
        refs = [ref(1, "9"), ref(2, 10)]
        assert resolve(Strategy.KEEP_NEWEST, refs).kept == ref(1, "9")
