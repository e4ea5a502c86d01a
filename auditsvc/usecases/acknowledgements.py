"""AcknowledgeGaps, ListAcknowledgements and DeleteAcknowledgement.

Guarantees:
- A new acknowledgement is validated whole before anything is written: configured
  symbols and timeframes (empty means all), start_time < end_time (either may lie
  in the future), a reason of 1..500 characters; a bad field is INVALID_ARGUMENT
  or NOT_FOUND naming it.
- Writes happen on the leader only (followers forward the calls) and are fenced
  with its epoch. A repeated ``request_id`` returns the first acknowledgement.
- At most MAX_ACKS acknowledgements exist at once, because every cycle reads them
  all; a new one beyond is FAILED_PRECONDITION.

Limit: the change reaches the gaps at the next cycle (their state and the report
counts); the live state never changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from auditsvc.domain.acknowledgement import MAX_ACKS, Acknowledgement, validate
from auditsvc.domain.errors import FailedPrecondition, InvalidArgument, NotFound, NotLeader
from auditsvc.leadership.term import Leadership
from auditsvc.ops.clock import Clock
from auditsvc.ops.settings import AuditSettings
from auditsvc.storage.interfaces import AckStore, Fence
from auditsvc.usecases.page_tokens import PageTokens
from auditsvc.usecases.request_ledger import RequestLedger, digest
from auditsvc.usecases.series_selection import require_configured

MAX_PAGE = 1000
DEFAULT_PAGE = 100
_LIST_FILTERS = digest("acknowledgements")


class Acknowledgements:
    def __init__(
        self,
        audit: AuditSettings,
        clock: Clock,
        store: AckStore,
        fence: Fence,
        leadership: Leadership,
        ledger: RequestLedger,
        tokens: PageTokens,
    ) -> None:
        self._audit = audit
        self._clock = clock
        self._store = store
        self._fence = fence
        self._leadership = leadership
        self._ledger = ledger
        self._tokens = tokens

    async def acknowledge(
        self,
        symbols: Sequence[str],
        timeframes: Sequence[str],
        start_ms: int | None,
        end_ms: int | None,
        reason: str,
        request_id: str,
    ) -> Acknowledgement:
        require_configured(self._audit, symbols, timeframes, "s")
        start, end, text = validate(start_ms, end_ms, reason)
        syms, tfs = tuple(dict.fromkeys(symbols)), tuple(dict.fromkeys(timeframes))
        body = digest(sorted(syms), sorted(tfs), start, end, text)

        async def work() -> dict[str, Any]:
            return _to_dict(await self._create(syms, tfs, start, end, text))

        async def replay(result: dict[str, Any]) -> Acknowledgement:
            return _from_dict(result)

        if not request_id:
            return await self._create(syms, tfs, start, end, text)
        return await self._ledger.once("ack", request_id, body, work, replay)

    async def _create(
        self,
        symbols: tuple[str, ...],
        timeframes: tuple[str, ...],
        start: int,
        end: int,
        reason: str,
    ) -> Acknowledgement:
        epoch = self._epoch()
        if await self._store.count() >= MAX_ACKS:
            raise FailedPrecondition(f"{MAX_ACKS} acknowledgements exist; delete old ones first")
        now = self._clock.now_ms()
        # Time-ordered ids: ListAcknowledgements pages oldest first by id.
        ack = Acknowledgement(
            f"ack-{now:013d}-{uuid.uuid4().hex[:8]}", symbols, timeframes, start, end, reason, now
        )
        await self._fence.write_fenced(epoch, lambda s: self._store.insert(ack, epoch, s))
        return ack

    async def page(self, page_size: int, page_token: str) -> tuple[list[Acknowledgement], str]:
        if page_size < 0 or page_size > MAX_PAGE:
            raise InvalidArgument(f"page_size must be 0..{MAX_PAGE}", field="page_size")
        limit = page_size or DEFAULT_PAGE
        after = await self._tokens.decode(_LIST_FILTERS, page_token) if page_token else None
        acks = await self._store.page(after[0] if after else None, limit + 1)
        if len(acks) <= limit:
            return acks, ""
        return acks[:limit], await self._tokens.encode(
            _LIST_FILTERS, (acks[limit - 1].ack_id, "", 0)
        )

    async def delete(self, ack_id: str) -> Acknowledgement:
        if not ack_id:
            raise InvalidArgument("id is required", field="id")
        epoch = self._epoch()
        found = await self._store.get(ack_id)
        if found is None or not await self._fence.write_fenced(
            epoch, lambda s: self._store.delete(ack_id, s)
        ):
            raise NotFound(f"no acknowledgement {ack_id[:80]!r}", field="id")
        return found

    def _epoch(self) -> int:
        term = self._leadership.term()
        if term is None:
            raise NotLeader("not leader", leader_address=self._leadership.last_known_address())
        return term.epoch


def _to_dict(a: Acknowledgement) -> dict[str, Any]:
    return {
        "ack_id": a.ack_id,
        "symbols": list(a.symbols),
        "timeframes": list(a.timeframes),
        "start_ms": a.start_ms,
        "end_ms": a.end_ms,
        "reason": a.reason,
        "created_ms": a.created_ms,
    }


def _from_dict(d: dict[str, Any]) -> Acknowledgement:
    return Acknowledgement(
        d["ack_id"],
        tuple(d["symbols"]),
        tuple(d["timeframes"]),
        int(d["start_ms"]),
        int(d["end_ms"]),
        str(d["reason"]),
        int(d["created_ms"]),
    )
