"""Batch sizes that adapt to how long each batch takes.

A fenced batch holds the process's lease gate while it runs, so a renewal
can wait for one whole batch. Counting items alone does not bound that wait:
the same 20 groups took 0.19 s on a small archive and 1.1 s on a large one.
:class:`AdaptiveBatch` bounds batches in time as well as in count.

Guarantees: ``size`` always lies in ``[minimum, maximum]``. After a batch
slower than the target, the next is smaller in proportion (at most halved per
step, so one outlier does not collapse it); after a full batch faster than
80% of the target, the next is larger in proportion (at most doubled). A
batch that was not full says nothing about larger ones, so it never grows the
size.

Limit: the bound is on what was measured, so the first batch after a sudden
slow-down can still take longer than the target; only later ones shrink.
"""

from __future__ import annotations

TARGET_SECONDS = 0.25
# A full batch faster than this share of the target grows the next one.
_GROW_BELOW = 0.8


class AdaptiveBatch:
    def __init__(
        self,
        initial: int = 20,
        maximum: int = 500,
        minimum: int = 1,
        target_seconds: float = TARGET_SECONDS,
    ) -> None:
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError("need 1 <= minimum <= initial <= maximum")
        if target_seconds <= 0:
            raise ValueError("target_seconds must be positive")
        self.minimum = minimum
        self.maximum = maximum
        self.target_seconds = target_seconds
        self.size = initial

    def record(self, items: int, seconds: float) -> int:
        """Takes one batch's item count and duration; returns the next size."""
        if seconds > self.target_seconds:
            factor = max(0.5, self.target_seconds / seconds)
            self.size = max(self.minimum, min(self.size - 1, int(self.size * factor)))
        elif items >= self.size and seconds < self.target_seconds * _GROW_BELOW:
            # In proportion, at most doubled: sizes settle where a batch takes about
            # the target, not below half of it, where per-batch overhead dominates.
            factor = min(2.0, self.target_seconds / max(seconds, 1e-9))
            self.size = min(self.maximum, max(self.size + 1, int(self.size * factor)))
        return self.size
