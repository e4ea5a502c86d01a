"""ListHealthScores: a page of the configured series' scores, for gates that
check before acting.

Any replica serves it from the stored scores (one per series), each dated and
judged by :class:`~auditsvc.usecases.verdicts.VerdictWatch`: a series nobody
has vouched for recently is UNKNOWN, and the state filter applies to the state
served. Rows a past configuration left behind are never served. Pages are
ordered by (symbol, timeframe); tokens are the signed cursors of
:mod:`auditsvc.usecases.page_tokens`, bound to the request's filters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from auditsvc.domain.errors import InvalidArgument
from auditsvc.domain.records import ScoreQuery, ScoreRecord
from auditsvc.domain.series_state import SeriesState
from auditsvc.ops.settings import AuditSettings
from auditsvc.storage.interfaces import StateStore
from auditsvc.usecases.page_tokens import PageTokens
from auditsvc.usecases.series_selection import require_configured
from auditsvc.usecases.verdicts import Reading, VerdictWatch

MAX_PAGE = 1000
DEFAULT_PAGE = 100


class ScoreListing:
    def __init__(
        self, audit: AuditSettings, state: StateStore, tokens: PageTokens, verdicts: VerdictWatch
    ) -> None:
        self._audit = audit
        self._state = state
        self._tokens = tokens
        self._verdicts = verdicts
        self._configured = configured_keys(audit)

    async def page(
        self,
        symbols: Sequence[str],
        timeframes: Sequence[str],
        state: SeriesState | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[ScoreRecord], str]:
        """One page and the token of the next ('' on the last page)."""
        require_configured(self._audit, symbols, timeframes, "s")
        if page_size < 0 or page_size > MAX_PAGE:
            raise InvalidArgument(f"page_size must be 0..{MAX_PAGE}", field="page_size")
        limit = page_size or DEFAULT_PAGE
        syms, tfs = tuple(sorted(set(symbols))), tuple(sorted(set(timeframes)))
        filters = _digest("scores", syms, tfs, state.value if state else "")
        after = None
        if page_token:
            sym, tf, _ = await self._tokens.decode(filters, page_token)
            after = (sym, tf)
        found = await self._served(syms, tfs, state, limit + 1, after)
        if len(found) <= limit:
            return found, ""
        last = found[limit - 1]
        return found[:limit], await self._tokens.encode(filters, (last.symbol, last.timeframe, 0))

    async def _served(
        self,
        syms: tuple[str, ...],
        tfs: tuple[str, ...],
        state: SeriesState | None,
        want: int,
        after: tuple[str, str] | None,
    ) -> list[ScoreRecord]:
        """Up to ``want`` configured series, as served, whose served state matches."""
        # Taken before the rows are read: see VerdictWatch.current.
        reading = self._verdicts.current()
        possible, stored_state = self._stored_filter(state, reading)
        if not possible:
            return []
        out: list[ScoreRecord] = []
        while len(out) < want:
            # Stored rows are filtered here (configuration, served state), so read a
            # little more than asked and go on until the page is full or rows run out.
            query = ScoreQuery(syms, tfs, stored_state, want - len(out) + _SLACK, after)
            rows = await self._state.list_scores(query)
            for row in rows:
                if (row.symbol, row.timeframe) not in self._configured:
                    continue
                served = self._verdicts.serve(row, reading)
                if state is None or served.state is state:
                    out.append(served)
            if len(rows) < query.limit:
                break
            after = (rows[-1].symbol, rows[-1].timeframe)
        return out[:want]

    def _stored_filter(
        self, state: SeriesState | None, reading: Reading | None
    ) -> tuple[bool, SeriesState | None]:
        """Whether any series can be served as ``state`` now, and the stored state
        that can (None: any)."""
        if state is None or not self._verdicts.tail_on:
            return True, None  # with the tail off each verdict ages on its own
        if not self._verdicts.vouches(reading):
            return state is SeriesState.UNKNOWN, None
        # Fresh: a stored state is served as it is; UNKNOWN is a series never judged.
        return True, state


_SLACK = 16


def configured_keys(audit: AuditSettings) -> frozenset[tuple[str, str]]:
    """Every configured (symbol, timeframe)."""
    return frozenset((s, t) for s in audit.symbols for t in audit.timeframes)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()
