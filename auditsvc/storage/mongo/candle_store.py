"""Reading candles: sorted timestamps for the audit, duplicate groups for removal.

Only timestamps cross the wire for an audit (a projected, sorted scan that a
``(symbol, timestamp)`` index covers), in batches, so memory stays flat
whatever the window's length.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import bson

from auditsvc.domain.values import CandleRef, Window
from auditsvc.storage.mongo.database import Database, TimeIndexes, to_dt, to_ms

BATCH = 20_000
# A shared time-range read is used while the range holds at most this many times
# what the audited symbols could hold there (plus a little slack: duplicates).
_SHARE_FACTOR = 4
_SHARE_SLACK = 1_000
# Documents of the read symbols one time-range query covers, about: a cold cycle
# over 30,000 series must not be one query that the server sorts whole.
_SLICE_DOCS = 20_000


def _window_filter(symbol: str, window: Window) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "timestamp": {"$gte": to_dt(window.start_ms), "$lt": to_dt(window.end_ms)},
    }


def version_of(doc: Mapping[str, Any], version_field: str | None) -> object | None:
    """The value at ``version_field`` (a dotted path) in ``doc``; None when absent."""
    value: Any = doc
    for part in (version_field or "").split(".") if version_field else ():
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return None if value is doc else value


def fingerprint(doc: Mapping[str, Any], version_field: str | None) -> str:
    """A token that changes whenever ``doc`` does: its version where the version
    field is configured and present (writers bump it on every change), else a
    digest of the whole document as stored (field order included)."""
    version = version_of(doc, version_field)
    if version is not None:
        return "v:" + hashlib.sha256(bson.encode({"v": version})).hexdigest()
    return "c:" + hashlib.sha256(bson.encode(doc)).hexdigest()


def _sift(docs: Sequence[Mapping[str, Any]], tails: Mapping[str, Window]) -> dict[str, list[int]]:
    """The times of ``docs`` inside their symbol's tail, by symbol (others dropped:
    symbols not audited here share the collection)."""
    out: dict[str, list[int]] = {}
    for d in docs:
        tail = tails.get(d.get("symbol"))  # type: ignore[arg-type]
        if tail is None or "timestamp" not in d:
            continue
        t = to_ms(d["timestamp"])
        if tail.start_ms <= t < tail.end_ms:
            out.setdefault(d["symbol"], []).append(t)
    return out


class MongoCandleStore:
    def __init__(self, database: Database, template: str) -> None:
        self._db = database.db
        self._template = template
        self._time_index = TimeIndexes(database)
        # Collections whose last slice read by time was mostly the read symbols'
        # documents: the next slice skips the count (on some servers a count reads
        # its whole range too, doubling a steady cycle's read).
        self._mostly_ours_last: dict[str, bool] = {}

    def collection(self, symbol: str, timeframe: str) -> str:
        return self._template.format(symbol=symbol, timeframe=timeframe)

    async def timestamps(
        self, symbol: str, timeframe: str, window: Window
    ) -> AsyncIterator[list[int]]:
        async for stamps in self._sorted(
            self.collection(symbol, timeframe), _window_filter(symbol, window)
        ):
            yield stamps

    async def _sorted(self, collection: str, query: dict[str, Any]) -> AsyncIterator[list[int]]:
        """Ascending timestamps of the documents matching ``query``, in batches."""
        cursor = (
            self._db[collection]
            .find(query, {"_id": 0, "timestamp": 1})
            .sort("timestamp", 1)
            .batch_size(BATCH)
        )
        while docs := await cursor.to_list(BATCH):
            yield [to_ms(d["timestamp"]) for d in docs if "timestamp" in d]

    async def read_many(
        self, collection: str, reads: Mapping[str, Sequence[Window]], slot_ms: int
    ) -> AsyncIterator[tuple[str, list[int]]]:
        """(symbol, timestamps) inside each symbol's ranges, for many symbols at once.

        Each symbol's timestamps ascend across its batches; batches of different
        symbols may interleave. With a ``{timestamp: 1}`` index on the collection
        (``setup-db`` makes one when symbols share collections) the symbols' last
        ranges (the window's tail) are read by time-range queries over the
        collection, one per slice of about ``_SLICE_DOCS`` of their documents (so
        no single query's work grows with the number of series), and earlier
        ranges (open gaps) by one indexed query each; without the index, one query
        with a ``$in`` per shared range serves them all from the ``(symbol,
        timestamp)`` index.

        A time-range read returns every symbol of the collection, audited or not.
        Before a slice is read by time it is counted (up to a bound:
        ``_SHARE_FACTOR`` times what these symbols could hold there); when it holds
        more, the rest of each symbol's tail is read with its own indexed query:
        auditing 480 of 30,000 symbols must not read all 30,000. The count is
        skipped while the collection's last slice read by time stayed under its
        bound; one that went over makes the next slice count again.
        """
        if len(reads) > 1 and await self._time_index.has(collection):
            async for item in self._read_by_time(collection, reads, slot_ms):
                yield item
            return
        async for item in self._read_by_symbol(collection, reads):
            yield item

    async def _mostly_ours(self, collection: str, start: int, end: int, bound: int) -> bool:
        """Whether [start, end) holds fewer than ``bound`` documents (one count,
        stopped at the bound)."""
        found = await self._db[collection].count_documents(
            {"timestamp": {"$gte": to_dt(start), "$lt": to_dt(end)}}, limit=bound
        )
        return bool(found < bound)

    async def _read_by_time(
        self, collection: str, reads: Mapping[str, Sequence[Window]], slot_ms: int
    ) -> AsyncIterator[tuple[str, list[int]]]:
        tails = {symbol: ranges[-1] for symbol, ranges in reads.items() if ranges}
        if not tails:
            return
        # Earlier ranges first: they lie before their symbol's tail.
        for symbol in sorted(tails):
            for r in reads[symbol][:-1]:
                async for stamps in self._sorted(collection, _window_filter(symbol, r)):
                    yield symbol, stamps
        lo = min(t.start_ms for t in tails.values())
        hi = max(t.end_ms for t in tails.values())
        slot_ms = max(slot_ms, 1)
        slots = max(1, _SLICE_DOCS // len(tails))
        start = lo
        while start < hi:
            end = min(hi, start + slots * slot_ms)
            bound = _SHARE_FACTOR * len(tails) * -(-(end - start) // slot_ms) + _SHARE_SLACK
            known = self._mostly_ours_last.get(collection, False)
            if not known and not await self._mostly_ours(collection, start, end, bound):
                # Mostly other symbols' documents: the rest of each tail on its own.
                for symbol in sorted(tails):
                    rest = Window(max(start, tails[symbol].start_ms), tails[symbol].end_ms)
                    if rest.start_ms < rest.end_ms:
                        query = _window_filter(symbol, rest)
                        async for stamps in self._sorted(collection, query):
                            yield symbol, stamps
                return
            returned = 0
            async for docs in self._slice(collection, start, end):
                returned += len(docs)
                for symbol, stamps in _sift(docs, tails).items():
                    yield symbol, stamps
            self._mostly_ours_last[collection] = returned < bound
            start = end

    async def _slice(self, collection: str, start: int, end: int) -> AsyncIterator[list[Any]]:
        """Every document's symbol and time in [start, end), oldest first, in batches."""
        cursor = (
            self._db[collection]
            .find(
                {"timestamp": {"$gte": to_dt(start), "$lt": to_dt(end)}},
                {"_id": 0, "symbol": 1, "timestamp": 1},
            )
            .sort("timestamp", 1)
            .batch_size(BATCH)
        )
        while docs := await cursor.to_list(BATCH):
            yield docs

    async def _read_by_symbol(
        self, collection: str, reads: Mapping[str, Sequence[Window]]
    ) -> AsyncIterator[tuple[str, list[int]]]:
        by_range: dict[tuple[int, int], list[str]] = {}
        for name, ranges in reads.items():
            for r in ranges:
                by_range.setdefault((r.start_ms, r.end_ms), []).append(name)
        if not by_range:
            return
        clauses = [
            {
                "symbol": {"$in": symbols} if len(symbols) > 1 else symbols[0],
                "timestamp": {"$gte": to_dt(start), "$lt": to_dt(end)},
            }
            for (start, end), symbols in by_range.items()
        ]
        query = clauses[0] if len(clauses) == 1 else {"$or": clauses}
        cursor = (
            self._db[collection]
            .find(query, {"_id": 0, "symbol": 1, "timestamp": 1})
            .sort([("symbol", 1), ("timestamp", 1)])
            .batch_size(BATCH)
        )
        symbol: str | None = None
        stamps: list[int] = []
        while True:
            docs = await cursor.to_list(BATCH)
            if not docs:
                break
            for d in docs:
                if "timestamp" not in d:
                    continue
                if d["symbol"] != symbol:
                    if stamps and symbol is not None:
                        yield symbol, stamps
                    symbol, stamps = d["symbol"], []
                stamps.append(to_ms(d["timestamp"]))
            if symbol is not None and stamps:
                yield symbol, stamps
                stamps = []
        if symbol is not None and stamps:
            yield symbol, stamps

    async def duplicate_groups(
        self, symbol: str, timeframe: str, window: Window, version_field: str | None
    ) -> AsyncIterator[list[CandleRef]]:
        """Groups of documents sharing a timestamp, oldest timestamp first, each
        document with its :func:`fingerprint` as grouped."""
        col = self._db[self.collection(symbol, timeframe)]
        # Whole documents (candles are small, and a slice holds SCAN_SLOTS slots):
        # the removal deletes a copy only if it is still what was grouped here.
        pipeline = [
            {"$match": _window_filter(symbol, window)},
            {"$group": {"_id": "$timestamp", "n": {"$sum": 1}, "docs": {"$push": "$$ROOT"}}},
            {"$match": {"n": {"$gt": 1}}},
            {"$sort": {"_id": 1}},
        ]
        async for group in await col.aggregate(pipeline, allowDiskUse=True):
            ts = to_ms(group["_id"])
            yield [
                CandleRef(
                    doc_id=d["_id"],
                    timestamp_ms=ts,
                    version=version_of(d, version_field),
                    fingerprint=fingerprint(d, version_field),
                )
                for d in group["docs"]
            ]
