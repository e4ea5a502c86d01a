"""ListAnomalies: a page of the stored candle content findings.

Any replica serves it from ``audit_anomalies``. Filters follow ListGaps: an empty
symbol or timeframe means all, a named one must be configured (NOT_FOUND naming
the field otherwise, :mod:`auditsvc.usecases.series_selection`), ``rules`` empty
means every rule; ``start_time``/``end_time`` bound the candles' open times.
Pages are ordered by (symbol, timeframe, open time, rule); tokens are the signed
cursors of :mod:`auditsvc.usecases.page_tokens`, bound to the request's filters.
"""

from __future__ import annotations

from collections.abc import Sequence

from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.errors import InvalidArgument
from auditsvc.domain.records import AnomalyQuery, AnomalyRecord
from auditsvc.ops.settings import AuditSettings
from auditsvc.storage.interfaces import AnomalyStore
from auditsvc.usecases.page_tokens import PageTokens
from auditsvc.usecases.request_ledger import digest
from auditsvc.usecases.series_selection import require_configured

MAX_PAGE = 1000
DEFAULT_PAGE = 100


class AnomalyListing:
    def __init__(self, audit: AuditSettings, anomalies: AnomalyStore, tokens: PageTokens) -> None:
        self._audit = audit
        self._anomalies = anomalies
        self._tokens = tokens

    async def page(
        self,
        symbol: str,
        timeframe: str,
        rules: Sequence[AnomalyRule],
        start_ms: int | None,
        end_ms: int | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[AnomalyRecord], str]:
        """One page and the token of the next ('' on the last page)."""
        if page_size < 0 or page_size > MAX_PAGE:
            raise InvalidArgument(f"page_size must be 0..{MAX_PAGE}", field="page_size")
        require_configured(
            self._audit, [symbol] if symbol else [], [timeframe] if timeframe else []
        )
        if start_ms is not None and end_ms is not None and start_ms >= end_ms:
            raise InvalidArgument("start_time must be before end_time", field="start_time")
        limit = page_size or DEFAULT_PAGE
        chosen = tuple(sorted(set(rules), key=lambda r: r.value))
        filters = digest(
            "anomalies", symbol, timeframe, [r.value for r in chosen], start_ms, end_ms
        )
        after = await self._tokens.decode_finding(filters, page_token) if page_token else None
        query = AnomalyQuery(symbol, timeframe, chosen, start_ms, end_ms, limit + 1, after)
        found = await self._anomalies.list(query)
        if len(found) <= limit:
            return found, ""
        return found[:limit], await self._tokens.encode_finding(filters, found[limit - 1].key)
