"""Unit tests for the live tail's stores: batches shrink on a slow database and grow
back, and a pass confirms only once every change it judged is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from auditsvc.domain.errors import Unavailable
from auditsvc.domain.records import LiveVerdict
from auditsvc.leadership.term import Standalone
from auditsvc.ops.metrics import Metrics
from auditsvc.ops.settings import Settings
from auditsvc.usecases.live_tail import _STORE_BATCH, LiveTail
from tests.support import replica_env

NOW = 1_700_000_040_000


class FixedClock:
    def now_ms(self) -> int:
        return NOW

    def monotonic(self) -> float:
        return 0.0


class NoFeed:
    async def newest(self, collection: str, symbols: Sequence[str], **_: Any) -> dict:
        return {}

    async def poll(self, *args: Any) -> list[tuple[str, int, Any]]:
        return []

    async def change_streams_supported(self, collections: Sequence[str]) -> bool:
        return False

    def watch(self, collections: Sequence[str], opened: Any = None) -> AsyncIterator[Any]:
        raise NotImplementedError


class Recorder:
    """Records what each fenced batch stored, and whether it confirmed."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, bool]] = []
        self._verdicts: Sequence[LiveVerdict] = ()

    async def stored_scores(self, keys: Sequence[tuple[str, str]], session: Any = None) -> dict:
        return {}

    async def save_verdicts(
        self, verdicts: Sequence[LiveVerdict], epoch: int, session: Any
    ) -> None:
        self._verdicts = verdicts

    async def confirm(self, epoch: int, confirmed_ms: int, mode: str, session: Any) -> None:
        self.batches[-1] = (self.batches[-1][0], True)

    async def save_live_gap(self, *args: Any) -> None:
        return None


class SlowOnce:
    """A fence whose first batch larger than ``limit`` overruns its time budget."""

    def __init__(self, store: Recorder, limit: int) -> None:
        self.store = store
        self.limit = limit
        self.failed = False

    async def check(self, epoch: int) -> None:
        return None

    async def write_fenced(self, epoch: int, work: Callable[[Any], Awaitable[Any]]) -> Any:
        self.store.batches.append((0, False))
        result = await work(None)
        size = len(self.store._verdicts)
        if size > self.limit and not self.failed:
            self.failed = True
            self.store.batches.pop()
            raise Unavailable("over the fence's time budget")
        self.store.batches[-1] = (size, self.store.batches[-1][1])
        return result


def tail(symbols: int, store: Recorder, fence: SlowOnce) -> LiveTail:
    names = ",".join(f"S{i:03}" for i in range(symbols))
    env = replica_env("mongodb://127.0.0.1:9", "unit", AUDIT_SYMBOLS=names, LIVE_MODE="poll")
    settings = Settings.from_env({**env, "AUDIT_TIMEFRAMES": "1m"})
    return LiveTail(
        settings.audit,
        settings.live,
        FixedClock(),
        NoFeed(),
        store,
        fence,
        Standalone("r", "", NOW),
        Metrics(),
    )


class TestStateBatches:
    """The state batch adapts both ways."""

    async def test_batch_halves_then_grows_back(self) -> None:
        """One slow batch halves the size; the next passes store everything, the batch
        is back to full, and the pass that stored the last change confirmed."""
        store = Recorder()
        fence = SlowOnce(store, limit=_STORE_BATCH // 2)
        t = tail(3 * _STORE_BATCH, store, fence)
        await t._evaluate(epoch=0)  # first batch overruns: nothing stored, no confirmation
        assert store.batches == []
        assert t._batch == _STORE_BATCH // 2
        await t._evaluate(epoch=0)
        sizes = [size for size, _ in store.batches]
        assert sum(sizes) == 3 * _STORE_BATCH  # every series' NO_DATA stored
        assert t._batch == _STORE_BATCH
        assert [confirmed for _, confirmed in store.batches] == [False] * (len(sizes) - 1) + [True]
