"""The store interfaces the use cases depend on. ``auditsvc.storage.mongo`` implements
them with PyMongo's asyncio client; tests may use those against a real server or fakes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from auditsvc.domain.acknowledgement import Acknowledgement
from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.candle import Candle
from auditsvc.domain.gap_lifecycle import GapState
from auditsvc.domain.records import (
    AnomalyQuery,
    AnomalyRecord,
    BackfillRequest,
    Cycle,
    FillReport,
    GapQuery,
    GapRecord,
    LiveRequest,
    LiveVerdict,
    ScoreQuery,
    ScoreRecord,
    SeriesReport,
    TrackedGap,
)
from auditsvc.domain.settled import Settled
from auditsvc.domain.values import CandleRef, Resolution, Strategy, Window

T = TypeVar("T")


class CandleStore(Protocol):
    def collection(self, symbol: str, timeframe: str) -> str: ...

    def timestamps(self, symbol: str, timeframe: str, window: Window) -> AsyncIterator[list[int]]:
        """Ascending timestamps (ms) of the series' documents, in batches."""
        ...

    def duplicate_groups(
        self, symbol: str, timeframe: str, window: Window, version_field: str | None
    ) -> AsyncIterator[list[CandleRef]]: ...

    def read_many(
        self, collection: str, reads: Mapping[str, Sequence[Window]], slot_ms: int
    ) -> AsyncIterator[tuple[str, list[int]]]:
        """(symbol, timestamps) inside each symbol's ranges, for many symbols with as
        few queries as the indexes allow; each symbol's timestamps ascend across its
        batches, and batches of different symbols may interleave. ``slot_ms``: the
        series' slot length (what a range may hold per symbol)."""
        ...

    def candles(self, symbol: str, timeframe: str, window: Window) -> AsyncIterator[list[Candle]]:
        """:meth:`timestamps` with the values the content rules read (one read serves
        the gaps and the content); an unreadable value is NaN, never raised on."""
        ...

    def read_many_candles(
        self, collection: str, reads: Mapping[str, Sequence[Window]], slot_ms: int
    ) -> AsyncIterator[tuple[str, list[Candle]]]:
        """:meth:`read_many` with the values the content rules read."""
        ...


class SettledStore(Protocol):
    """Per series, what its last default-window audit settled (incremental cycles)."""

    async def load(
        self, collection: str, timeframe: str, symbols: Sequence[str]
    ) -> tuple[dict[str, Settled], dict[str, int]]:
        """(records still vouching for the series in ``collection``, each series'
        rewrite counter, to hand back to ``save_chunk`` as ``basis``)."""
        ...

    async def save_chunk(
        self,
        reports: Sequence[SeriesReport],
        settled: Mapping[str, Settled | None],
        *,
        collection: str,
        basis: Mapping[str, int] | None = None,
        cycle_id: str,
        epoch: int,
        live: bool = False,
        session: Any = None,
    ) -> None:
        """Stores a chunk's scores, reports and settled records (None removes one),
        and drops their gaps this cycle did not write. The live verdicts only with
        ``live`` (LIVE_MODE=off), and never over a newer stored one."""
        ...


@dataclass(frozen=True, slots=True)
class Lease:
    """One election's lease as stored; times are the database's clock (ms)."""

    holder: str  # the per-process identity, REPLICA_ID/<uuid4>
    address: str
    epoch: int
    acquired_ms: int
    renewed_ms: int
    expires_ms: int
    # The database's clock when the lease was read or written.
    now_ms: int
    # The display name (REPLICA_ID); '' on leases written before it was stored.
    replica_id: str = ""
    # lsid of an earlier term's batch session, which a new holder kills.
    predecessor_session: Any = None
    # Whether a term has already killed predecessor_session.
    predecessor_killed: bool = False

    @property
    def live(self) -> bool:
        return self.expires_ms > self.now_ms

    @property
    def name(self) -> str:
        return self.replica_id or self.holder.split("/", 1)[0]


class Fence(Protocol):
    async def check(self, epoch: int) -> None: ...

    async def write_fenced(self, epoch: int, work: Callable[[Any], Awaitable[T]]) -> T:
        """Runs ``work(session)`` only while the lease holds ``epoch``."""
        ...


class LeaseStore(Protocol):
    """What the elector needs: one holder identity's lease (after client-go's lock)."""

    @property
    def holder(self) -> str: ...

    async def try_acquire(self, address: str, duration_ms: int) -> Lease | None:
        """Acquires or renews for ``holder``; None when another holds a live lease."""
        ...

    async def release(self, epoch: int) -> bool: ...

    async def read(self) -> Lease | None: ...

    async def take_office(self, lease: Lease) -> None:
        """Makes a newly granted term ready for fenced writes; Fenced if it is over."""
        ...


class LeadershipStore(LeaseStore, Fence, Protocol):
    """The lease, the fence and the gate between them, as one object per process.

    ``batch_budget_s`` bounds each fenced batch in time (an over-budget batch is
    aborted and raises Unavailable); ``last_batch_seconds`` is what the last
    one took, for callers that size their batches to the budget.
    """

    @property
    def batch_budget_s(self) -> float: ...

    @property
    def last_batch_seconds(self) -> float: ...


class StateStore(Protocol):
    async def ping(self) -> None: ...

    async def save_series(
        self,
        report: SeriesReport,
        gaps: Sequence[GapRecord],
        *,
        cycle_id: str,
        epoch: int,
        live: bool = False,
        session: Any = None,
    ) -> None: ...

    async def save_gaps(
        self,
        gaps: Sequence[GapRecord],
        cycle_id: str,
        epoch: int,
        session: Any = None,
        *,
        historical: bool = False,
    ) -> None:
        """Upserts one batch of a cycle's gaps (keyed by series + start). The cycle's
        ``save_series`` then removes the series' gaps this cycle did not write."""
        ...

    async def save_cycle(self, cycle: Cycle, session: Any = None) -> None:
        """Stores the cycle's header and summary; its reports go in parts, first."""
        ...

    async def save_cycle_reports(
        self,
        cycle_id: str,
        finished_ms: int,
        part: int,
        reports: Sequence[SeriesReport],
        session: Any = None,
    ) -> None:
        """Stores one part of a cycle's reports (at most a bounded number)."""
        ...

    async def get_cycle(self, cycle_id: str) -> Cycle | None:
        """The cycle with every report."""
        ...

    async def last_cycle(self, with_series: bool = True) -> Cycle | None:
        """The newest cycle; ``with_series=False`` reads its header and summary only."""
        ...

    async def last_success_ms(self) -> int | None: ...

    async def list_gaps(self, q: GapQuery) -> list[GapRecord]: ...

    async def gap_state_counts(self) -> list[tuple[GapState, int]]: ...

    async def scores(self) -> list[ScoreRecord]: ...

    async def list_scores(self, q: ScoreQuery) -> list[ScoreRecord]:
        """Stored scores matching ``q``, ordered by (symbol, timeframe)."""
        ...

    async def watch_scores(self) -> AsyncIterator[ScoreRecord]:
        """Returns once the watch is open: nothing stored after the return is missed."""
        ...

    async def get_request(self, kind: str, request_id: str) -> dict[str, Any] | None: ...

    async def put_request(
        self,
        kind: str,
        request_id: str,
        body_hash: str,
        result: dict[str, Any],
        epoch: int,
        session: Any = None,
    ) -> None: ...


class BackfillStore(Protocol):
    """Backfill requests and the gap lifecycle fields they drive (healing pass)."""

    async def open_count(self) -> int: ...

    async def open_request_id(self, symbol: str, timeframe: str, start_ms: int) -> str | None: ...

    async def create(self, req: BackfillRequest, session: Any = None) -> str: ...

    async def live_requests(self, limit: int) -> list[LiveRequest]: ...

    async def open_among(self, request_ids: Sequence[str]) -> set[str]: ...

    async def gaps_by_id(self, gap_ids: Sequence[str]) -> dict[str, TrackedGap]: ...

    async def requested_gaps(self, limit: int) -> list[TrackedGap]: ...

    def candidates(
        self, cycle_id: str, min_length_ms: int, now_ms: int
    ) -> AsyncIterator[TrackedGap]: ...

    async def request(self, req: BackfillRequest, attempts: int, session: Any = None) -> str: ...

    async def progress(
        self, request_id: str, missing: int, now_ms: int, session: Any = None
    ) -> None: ...

    async def release(
        self,
        gap_id: str,
        request_id: str,
        state: GapState,
        next_request_ms: int,
        expires_ms: int | None,
        session: Any = None,
    ) -> None: ...

    async def expire(self, request_id: str, now_ms: int, session: Any = None) -> bool: ...

    async def live_by_timeframe(self) -> dict[str, int]: ...

    async def mark_filled(self, gap_id: str, retention_ms: int, session: Any = None) -> bool: ...

    async def unreported_fills(self, limit: int) -> list[FillReport]: ...

    async def mark_reported(self, gap_ids: Sequence[str], session: Any = None) -> None: ...

    async def close_filled(self, request_id: str, now_ms: int, session: Any = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class JudgedRange:
    """Slots ``[start_ms, end_ms)`` of these series that a cycle read and judged with
    ``rules``: a stored finding there that it did not make again is resolved."""

    timeframe: str
    symbols: tuple[str, ...]
    start_ms: int
    end_ms: int
    rules: frozenset[AnomalyRule]


@dataclass(frozen=True, slots=True)
class AnomalyCounts:
    """A series' stored findings in a window: how many, on how many distinct
    candles, and the newest such candle's open time."""

    findings: int
    candles: int
    newest_open_ms: int | None


class AnomalyStore(Protocol):
    """Candle content findings, keyed by (symbol, timeframe, open time, rule).

    Every write runs inside a fenced batch (``Fence.write_fenced``) and takes its
    session; see ``storage/mongo/anomaly_store.py`` for the guarantees.
    """

    async def record(
        self, findings: Sequence[AnomalyRecord], epoch: int, session: Any = None
    ) -> list[AnomalyRecord]:
        """Upserts the findings (``detected_ms``: the writer's now; ``detected_live``:
        the writer is the live tail), keeping a stored finding's first ``detected_at``
        and ``detected_live``; returns the findings that were new."""
        ...

    async def resolve(
        self, judged: Sequence[JudgedRange], seen_before_ms: int, session: Any = None
    ) -> int:
        """Removes the findings inside ``judged`` not seen since ``seen_before_ms``
        (the cycle's read began then); returns how many."""
        ...

    async def counts(
        self,
        timeframe: str,
        symbols: Sequence[str],
        start_ms: int,
        end_ms: int,
        session: Any = None,
    ) -> dict[str, AnomalyCounts]:
        """Per symbol with findings on candles opening in ``[start_ms, end_ms)``."""
        ...

    async def list(self, q: AnomalyQuery) -> list[AnomalyRecord]:
        """Stored findings matching ``q``, ordered by their key."""
        ...

    async def raise_live_suspect(
        self, horizons: Mapping[tuple[str, str], int], epoch: int, session: Any = None
    ) -> None:
        """The live tail's side of ``suspect``: each (symbol, timeframe) is served
        suspect at least until its instant (ms); never lowered."""
        ...

    async def clear_live_suspect(
        self, keys: Sequence[tuple[str, str]], passed_ms: int, epoch: int, session: Any = None
    ) -> None:
        """The live tail's end of a horizon it raised: each series' horizon is cleared
        if it is at or before ``passed_ms`` (a horizon raised since stays), and the
        series document changes, so a score stream pushes the served ``suspect``."""
        ...

    async def suspect_counts(self, now_ms: int) -> dict[str, int]:
        """Stored series served suspect at ``now_ms``, by timeframe."""
        ...


class AckStore(Protocol):
    """Acknowledged outages (``gap_acknowledgements``)."""

    async def all(self, limit: int) -> list[Acknowledgement]: ...

    async def count(self) -> int: ...

    async def page(self, after: str | None, limit: int) -> list[Acknowledgement]: ...

    async def get(self, ack_id: str) -> Acknowledgement | None: ...

    async def insert(self, ack: Acknowledgement, epoch: int, session: Any = None) -> None: ...

    async def delete(self, ack_id: str, session: Any = None) -> bool: ...


class DuplicateStore(Protocol):
    async def guard(
        self,
        collection: str,
        symbol: str,
        batch: list[Resolution],
        version_field: str | None,
        session: Any = None,
    ) -> tuple[list[Resolution], list[Resolution]]:
        """(groups unchanged since the grouping, groups that changed): re-read whole."""
        ...

    async def claim(self, collection: str, owner: str, ttl_ms: int) -> bool: ...

    async def release(self, collection: str, owner: str) -> None: ...

    async def archive(
        self,
        collection: str,
        batch: list[Resolution],
        *,
        request_id: str,
        strategy: Strategy,
        epoch: int,
        timeframe: str = "",
        session: Any = None,
    ) -> int: ...

    async def delete(
        self,
        collection: str,
        batch: list[Resolution],
        *,
        request_id: str,
        strategy: Strategy,
        epoch: int,
        archived: int,
        skipped: Sequence[int] = (),
        session: Any = None,
    ) -> int: ...

    async def mark_rewritten(self, symbol: str, timeframe: str, session: Any = None) -> None:
        """The series' settled record no longer vouches for its documents."""
        ...

    async def known(self, request_id: str) -> bool: ...

    async def restore(self, request_id: str) -> tuple[int, int]: ...


class CandleFeed(Protocol):
    """What the live tail reads: the newest candles, at a cost proportional to inserts."""

    async def newest(
        self,
        collection: str,
        symbols: Sequence[str],
        below_ms: int | None = None,
        since_ms: int | None = None,
    ) -> dict[str, int | None]:
        """Open time (ms) of each symbol's newest candle (opening at or before
        ``below_ms`` when given), None when it has none. ``since_ms``: a hint that
        most symbols have a candle after it, which the store may use to read them
        in one query."""
        ...

    async def poll(
        self, collection: str, floor_ms: int, recent: Sequence[str], lagging: dict[str, int | None]
    ) -> list[tuple[str, int, Candle | None]]:
        """(symbol, open ms, values) of candles newer than what was seen, ascending per
        symbol; values are None when the feed reads times only (content checks off).

        ``recent`` symbols match timestamps above ``floor_ms``, in one query; each
        ``lagging`` symbol matches timestamps above its own newest (any, when None).
        """
        ...

    async def change_streams_supported(self, collections: Sequence[str]) -> bool:
        """True on a replica set or mongos when no collection is a time-series one."""
        ...

    def watch(
        self, collections: Sequence[str], opened: asyncio.Event | None = None
    ) -> AsyncIterator[tuple[str, str, int, Candle | None]]:
        """(collection, symbol, open ms, values) of each candle inserted or replaced from
        the moment the stream is open; ``opened`` is set at that moment."""
        ...


class LiveStore(Protocol):
    """Where the live tail stores what it finds (always inside a fenced batch)."""

    async def stored_scores(
        self, keys: Sequence[tuple[str, str]], session: Any = None
    ) -> dict[tuple[str, str], Any]:
        """The stored ScoreRecord of each (symbol, timeframe) that has one: one query."""
        ...

    async def save_verdicts(
        self, verdicts: Sequence[LiveVerdict], epoch: int, session: Any = None
    ) -> None:
        """Stores each series' live fields only (state, last candle, late candles and
        when observed), never over a verdict observed later; one bulk write."""
        ...

    async def confirm(self, epoch: int, confirmed_ms: int, mode: str, session: Any = None) -> None:
        """Records that every series' stored verdict held at ``confirmed_ms`` (capped at
        the database's now): the live tail's heartbeat, one document per deployment."""
        ...

    async def save_live_gap(self, gap: GapRecord, epoch: int, session: Any = None) -> None:
        """Stores a gap keyed by series + start, so a cycle's write is the same record."""
        ...


@dataclass(frozen=True, slots=True)
class Confirmation:
    """The live tail's last heartbeat, as a reader sees it."""

    epoch: int
    confirmed_ms: int
    mode: str
    # The database's time of the write (0 when unknown): orders it with the writes
    # of series documents.
    written_ms: int = 0


class VerdictSource(Protocol):
    """What any replica reads to date the verdicts it serves."""

    async def confirmation(self) -> tuple[Confirmation | None, int]:
        """The last heartbeat (None when there is none) and the database's now (ms)."""
        ...
