""" "No slot emptied by a removal", judged from the database's own order of deletes.

A writer that deletes the last copy of a slot after a removal committed has
emptied it itself; a removal whose delete takes a slot from one document to
none has broken its guarantee. Only the change stream's order can tell the
two apart, so :class:`SlotWatch` records every delete of a candle collection
and :meth:`SlotWatch.emptied_by_removal` replays them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

from pymongo import AsyncMongoClient


class SlotWatch:
    """Records delete events of one collection from ``start()`` until ``stop()``."""

    def __init__(self, uri: str, database: str, collection: str) -> None:
        # Its own pymongo client, whatever driver the product uses.
        self._client: AsyncMongoClient[Any] = AsyncMongoClient(uri)
        self._collection = self._client[database][collection]
        self.deleted: list[Any] = []  # document ids, in commit order
        self._task: asyncio.Task[None] | None = None
        self._opened = asyncio.Event()
        self._seen = asyncio.Event()
        self._expected = 1 << 62  # set by stop()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._opened.wait(), 10)

    async def _run(self) -> None:
        pipeline = [{"$match": {"operationType": "delete"}}]
        async with await self._collection.watch(pipeline) as stream:
            self._opened.set()
            async for change in stream:
                self.deleted.append(change["documentKey"]["_id"])
                if len(self.deleted) >= self._expected:
                    self._seen.set()

    async def stop(self, expected: int, within: float = 30.0) -> None:
        """Waits until ``expected`` deletes were seen (deadline-bound), then closes."""
        self._expected = expected
        if len(self.deleted) >= expected:
            self._seen.set()
        else:
            self._seen.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._seen.wait(), within)
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._client.close()
        assert len(self.deleted) >= expected, f"saw {len(self.deleted)} of {expected} deletes"

    def emptied_by_removal(self, slot_of: dict[Any, Any], removed_ids: set[Any]) -> list[Any]:
        """Slots a removal's delete left with no document, given each original id's slot."""
        count = Counter(slot_of.values())
        emptied = []
        for doc_id in self.deleted:
            slot = slot_of.get(doc_id)
            if slot is None:
                continue
            count[slot] -= 1
            if count[slot] == 0 and doc_id in removed_ids:
                emptied.append(slot)
        return emptied
