"""ListHealthScores: a page of stored scores, for gates that check before acting.

Any replica serves it from the stored scores (one per series, the newest the
leader wrote), so the answer is as fresh as the live tail keeps them. Pages are
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

MAX_PAGE = 1000
DEFAULT_PAGE = 100


class ScoreListing:
    def __init__(self, audit: AuditSettings, state: StateStore, tokens: PageTokens) -> None:
        self._audit = audit
        self._state = state
        self._tokens = tokens

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
        found = await self._state.list_scores(ScoreQuery(syms, tfs, state, limit + 1, after))
        if len(found) <= limit:
            return found, ""
        last = found[limit - 1]
        return found[:limit], await self._tokens.encode(filters, (last.symbol, last.timeframe, 0))


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()
