"""AdaptiveBatch: the time-bounded batch size of removals and restores."""

from __future__ import annotations

import itertools

import pytest

from auditsvc.domain.batch_sizing import AdaptiveBatch


class TestAdaptiveBatch:
    """The size shrinks after slow batches, grows after fast full ones, and stays in bounds."""

    def test_slow_batches_shrink_to_the_minimum(self) -> None:
        """Repeatedly slow batches shrink the size down to the minimum and no further."""
        sizer = AdaptiveBatch(initial=64, maximum=500, minimum=1, target_seconds=0.25)
        sizes = [sizer.record(sizer.size, 10.0) for _ in range(10)]
        assert sizes[0] == 32  # at most halved per step
        assert sizes[-1] == 1
        assert all(a >= b for a, b in itertools.pairwise(sizes))

    def test_slightly_slow_batch_shrinks_in_proportion(self) -> None:
        """A batch 25% over the target shrinks the next by about a fifth."""
        sizer = AdaptiveBatch(initial=100, target_seconds=0.25)
        assert sizer.record(100, 0.3125) == 80

    def test_fast_full_batches_grow_to_the_maximum(self) -> None:
        """Fast full batches double the size up to the maximum."""
        sizer = AdaptiveBatch(initial=20, maximum=100, target_seconds=0.25)
        sizes = [sizer.record(sizer.size, 0.01) for _ in range(5)]
        assert sizes == [40, 80, 100, 100, 100]

    def test_somewhat_fast_batch_grows_in_proportion(self) -> None:
        """A full batch at half the target grows the next toward the target (x2 at most)."""
        sizer = AdaptiveBatch(initial=30, maximum=500, target_seconds=0.1)
        assert sizer.record(30, 0.075) == 40
        assert sizer.record(40, 0.01) == 80

    def test_partial_or_on_target_batches_keep_the_size(self) -> None:
        """A short last batch, or one near the target, leaves the size alone."""
        sizer = AdaptiveBatch(initial=20, target_seconds=0.25)
        assert sizer.record(3, 0.01) == 20
        assert sizer.record(20, 0.2) == 20

    @pytest.mark.parametrize(("initial", "maximum", "minimum"), [(0, 5, 1), (6, 5, 1), (2, 5, 3)])
    def test_bad_bounds_are_refused(self, initial: int, maximum: int, minimum: int) -> None:
        """Bounds out of order raise ValueError at construction."""
        with pytest.raises(ValueError):
            AdaptiveBatch(initial=initial, maximum=maximum, minimum=minimum)
