"""Reading candles: sorted timestamps (or values) for the audit, duplicate groups for removal.

Only timestamps cross the wire for an audit without content checks (a projected,
sorted scan that a ``(symbol, timestamp)`` index covers); with them, the same
reads carry the fields the content rules use and nothing else
(:mod:`auditsvc.storage.mongo.candle_values`), so one read serves the gaps and the
content. Reads come in batches, so memory stays flat whatever the window's length.
No query's size grows with the number of series: time-range reads are sliced,
symbol lists batched. A candle whose timestamp is
not a usable date is skipped and counted (``candle_time``), never raised on.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import bson

from auditsvc.domain.batch_sizing import AdaptiveBatch
from auditsvc.domain.candle import Candle
from auditsvc.domain.values import CandleRef, Window
from auditsvc.ops.metrics import Metrics
from auditsvc.storage.mongo.candle_time import CANDLE_CODEC, IgnoredCandles
from auditsvc.storage.mongo.candle_values import CandleFields, decode_candle
from auditsvc.storage.mongo.database import Database, TimeIndexes, to_dt

BATCH = 20_000
# A shared time-range read is used while the range holds at most this many times
# what the audited symbols could hold there (plus a little slack: duplicates).
_SHARE_FACTOR = 4
_SHARE_SLACK = 1_000
# Documents of the read symbols one time-range query covers, about: a cold cycle
# over 30,000 series must not be one query that the server sorts whole. 5,000 is
# about 0.3 s on SecantusDB (22,000 took 1.3 s, during which it answered nothing
# else), a few ms on MongoDB; more per query saves only round trips.
_SLICE_DOCS = 5_000
# Symbols in one query's ``$in``, when they are read by symbol. A server may match
# every document against the whole list: SecantusDB scans the collection and
# compares each document with each symbol (2,000 symbols of 48 candles: past 60 s,
# the database answering nothing else). So the size adapts to each query's time
# (AdaptiveBatch: about 0.25 s a query), starting small and never above _IN_MAX:
# there, on a server whose $in is index-backed (MongoDB: one seek per symbol), a
# larger list saves nothing worth a longer query.
_IN_INITIAL = 16
_IN_MAX = 256


T = TypeVar("T")


class _Reader(Generic[T]):
    """What a read projects and how it decodes a document: to (open ms, item), or
    None for a candle whose timestamp is unusable (skipped and counted)."""

    def __init__(
        self, projection: dict[str, int], decode: Callable[[int, Mapping[str, Any]], T]
    ) -> None:
        self.projection = projection
        self._decode = decode

    def item(
        self, ignored: IgnoredCandles, collection: str, symbol: Any, doc: Mapping[str, Any]
    ) -> tuple[int, T] | None:
        t = ignored.time_ms(collection, symbol, doc.get("timestamp"))
        return None if t is None else (t, self._decode(t, doc))


_TIMES: _Reader[int] = _Reader({"_id": 0, "symbol": 1, "timestamp": 1}, lambda t, _d: t)


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


def _sift(
    docs: Sequence[Mapping[str, Any]],
    tails: Mapping[str, Window],
    collection: str,
    ignored: IgnoredCandles,
    reader: _Reader[T],
) -> dict[str, list[T]]:
    """The items of ``docs`` inside their symbol's tail, by symbol (others dropped:
    symbols not audited here share the collection)."""
    out: dict[str, list[T]] = {}
    for d in docs:
        tail = tails.get(d.get("symbol"))  # type: ignore[arg-type]
        if tail is None:
            continue
        found = reader.item(ignored, collection, d["symbol"], d)
        if found is not None and tail.start_ms <= found[0] < tail.end_ms:
            out.setdefault(d["symbol"], []).append(found[1])
    return out


class MongoCandleStore:
    """Candle reads decode timestamps safely (``candle_time``): a candle whose
    timestamp is not a usable date is skipped and counted, never raised on."""

    def __init__(
        self,
        database: Database,
        template: str,
        metrics: Metrics | None = None,
        fields: CandleFields | None = None,
    ) -> None:
        self._db = database.db.with_options(codec_options=CANDLE_CODEC)
        fields = fields or CandleFields()
        self._values: _Reader[Candle] = _Reader(
            fields.projection(), lambda t, d: decode_candle(d, t, fields)
        )
        self._ignored = IgnoredCandles(metrics)
        self._template = template
        self._time_index = TimeIndexes(database)
        # Collections whose last slice read by time was mostly the read symbols'
        # documents: the next slice skips the count (on some servers a count reads
        # its whole range too, doubling a steady cycle's read).
        self._mostly_ours_last: dict[str, bool] = {}
        # Per collection: how many symbols one by-symbol query reads (see _IN_MAX).
        self._in_sizes: dict[str, AdaptiveBatch] = {}

    def collection(self, symbol: str, timeframe: str) -> str:
        return self._template.format(symbol=symbol, timeframe=timeframe)

    async def timestamps(
        self, symbol: str, timeframe: str, window: Window
    ) -> AsyncIterator[list[int]]:
        collection = self.collection(symbol, timeframe)
        async for stamps in self._sorted(collection, symbol, window, _TIMES):
            yield stamps

    async def candles(
        self, symbol: str, timeframe: str, window: Window
    ) -> AsyncIterator[list[Candle]]:
        """:meth:`timestamps` with the values the content rules read."""
        collection = self.collection(symbol, timeframe)
        async for found in self._sorted(collection, symbol, window, self._values):
            yield found

    async def _sorted(
        self, collection: str, symbol: str, window: Window, reader: _Reader[T]
    ) -> AsyncIterator[list[T]]:
        """Ascending items of ``symbol``'s documents inside ``window``, in batches."""
        cursor = (
            self._db[collection]
            .find(_window_filter(symbol, window), reader.projection)
            .sort("timestamp", 1)
            .batch_size(BATCH)
        )
        while docs := await cursor.to_list(BATCH):
            items = (reader.item(self._ignored, collection, symbol, d) for d in docs)
            yield [found[1] for found in items if found is not None]

    async def read_many(
        self, collection: str, reads: Mapping[str, Sequence[Window]], slot_ms: int
    ) -> AsyncIterator[tuple[str, list[int]]]:
        """(symbol, timestamps); see :meth:`read_many_candles` for how it reads."""
        async for item in self._read_many(collection, reads, slot_ms, _TIMES):
            yield item

    async def read_many_candles(
        self, collection: str, reads: Mapping[str, Sequence[Window]], slot_ms: int
    ) -> AsyncIterator[tuple[str, list[Candle]]]:
        """(symbol, candles) inside each symbol's ranges, for many symbols at once.

        Each symbol's candles ascend across its batches; batches of different
        symbols may interleave. With a ``{timestamp: 1}`` index on the collection
        (``setup-db`` makes one when symbols share collections) the symbols' last
        ranges (the window's tail) are read by time-range queries over the
        collection, one per slice of about ``_SLICE_DOCS`` of their documents (so
        no single query's work grows with the number of series), and earlier
        ranges (open gaps) by one indexed query each; without the index, symbols
        are read in batches (see ``_IN_MAX``), one query per batch with a ``$in``
        per shared range, from the ``(symbol, timestamp)`` index.

        A time-range read returns every symbol of the collection, audited or not.
        Before a slice is read by time it is counted (up to a bound:
        ``_SHARE_FACTOR`` times what these symbols could hold there); when it holds
        more, the rest of each symbol's tail is read with its own indexed query:
        auditing 480 of 30,000 symbols must not read all 30,000. The count is
        skipped while the collection's last slice read by time stayed under its
        bound; one that went over makes the next slice count again.
        """
        async for item in self._read_many(collection, reads, slot_ms, self._values):
            yield item

    async def _read_many(
        self,
        collection: str,
        reads: Mapping[str, Sequence[Window]],
        slot_ms: int,
        reader: _Reader[T],
    ) -> AsyncIterator[tuple[str, list[T]]]:
        if len(reads) > 1 and await self._time_index.has(collection):
            async for item in self._read_by_time(collection, reads, slot_ms, reader):
                yield item
            return
        async for item in self._read_by_symbol(collection, reads, reader):
            yield item

    async def _mostly_ours(self, collection: str, start: int, end: int, bound: int) -> bool:
        """Whether [start, end) holds fewer than ``bound`` documents (one count,
        stopped at the bound)."""
        found = await self._db[collection].count_documents(
            {"timestamp": {"$gte": to_dt(start), "$lt": to_dt(end)}}, limit=bound
        )
        return bool(found < bound)

    async def _read_by_time(
        self,
        collection: str,
        reads: Mapping[str, Sequence[Window]],
        slot_ms: int,
        reader: _Reader[T],
    ) -> AsyncIterator[tuple[str, list[T]]]:
        tails = {symbol: ranges[-1] for symbol, ranges in reads.items() if ranges}
        if not tails:
            return
        # Earlier ranges first: they lie before their symbol's tail.
        for symbol in sorted(tails):
            for r in reads[symbol][:-1]:
                async for stamps in self._sorted(collection, symbol, r, reader):
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
                        async for stamps in self._sorted(collection, symbol, rest, reader):
                            yield symbol, stamps
                return
            returned = 0
            async for docs in self._slice(collection, start, end, reader.projection):
                returned += len(docs)
                for symbol, found in _sift(docs, tails, collection, self._ignored, reader).items():
                    yield symbol, found
            self._mostly_ours_last[collection] = returned < bound
            start = end

    async def _slice(
        self, collection: str, start: int, end: int, projection: dict[str, int]
    ) -> AsyncIterator[list[Any]]:
        """Every document's projected fields in [start, end), oldest first, in batches."""
        cursor = (
            self._db[collection]
            .find({"timestamp": {"$gte": to_dt(start), "$lt": to_dt(end)}}, projection)
            .sort("timestamp", 1)
            .batch_size(BATCH)
        )
        while docs := await cursor.to_list(BATCH):
            yield docs

    async def _read_by_symbol(
        self, collection: str, reads: Mapping[str, Sequence[Window]], reader: _Reader[T]
    ) -> AsyncIterator[tuple[str, list[T]]]:
        """Symbols in batches, one query each (a ``$in`` per shared range), whose size
        adapts so that a query takes about ``TARGET_SECONDS``, between 1 and
        ``_IN_MAX`` symbols; each symbol is in one batch, so its times ascend."""
        symbols = sorted(s for s, ranges in reads.items() if ranges)
        sizing = self._in_sizes.get(collection)
        if sizing is None:
            sizing = self._in_sizes[collection] = AdaptiveBatch(_IN_INITIAL, _IN_MAX)
        first = 0
        while first < len(symbols):
            part = symbols[first : first + sizing.size]
            first += len(part)
            took = [0.0]
            batch = {s: reads[s] for s in part}
            async for item in self._read_batch(collection, batch, took, reader):
                yield item
            sizing.record(len(part), took[0])

    async def _read_batch(
        self,
        collection: str,
        reads: Mapping[str, Sequence[Window]],
        took: list[float],
        reader: _Reader[T],
    ) -> AsyncIterator[tuple[str, list[T]]]:
        """One query over a batch of symbols, sorted by (symbol, timestamp); adds the
        time spent waiting for the server to ``took[0]``."""
        by_range: dict[tuple[int, int], list[str]] = {}
        for name, ranges in reads.items():
            for r in ranges:
                by_range.setdefault((r.start_ms, r.end_ms), []).append(name)
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
            .find(query, reader.projection)
            .sort([("symbol", 1), ("timestamp", 1)])
            .batch_size(BATCH)
        )
        symbol: str | None = None
        stamps: list[T] = []
        while True:
            began = time.perf_counter()
            docs = await cursor.to_list(BATCH)
            took[0] += time.perf_counter() - began
            if not docs:
                break
            for d in docs:
                if d["symbol"] != symbol:
                    if stamps and symbol is not None:
                        yield symbol, stamps
                    symbol, stamps = d["symbol"], []
                found = reader.item(self._ignored, collection, symbol, d)
                if found is not None:
                    stamps.append(found[1])
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
            ts = self._ignored.time_ms(col.name, symbol, group["_id"], count=group["n"])
            if ts is None:
                continue
            yield [
                CandleRef(
                    doc_id=d["_id"],
                    timestamp_ms=ts,
                    version=version_of(d, version_field),
                    fingerprint=fingerprint(d, version_field),
                )
                for d in group["docs"]
            ]
