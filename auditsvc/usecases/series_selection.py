"""One rule for every read that names series: an unconfigured symbol or timeframe
is NOT_FOUND naming the request's field; a name that is not a timeframe at all is
INVALID_ARGUMENT naming it.
"""

from __future__ import annotations

from collections.abc import Sequence

from auditsvc.domain.errors import InvalidArgument, NotFound
from auditsvc.domain.timeframes import parse_timeframe
from auditsvc.ops.settings import AuditSettings


def require_configured(
    audit: AuditSettings, symbols: Sequence[str], timeframes: Sequence[str], plural: str = ""
) -> None:
    """Raises unless every symbol and timeframe is configured.

    ``plural`` is ``"s"`` where the request's fields are ``symbols``/``timeframes``.
    """
    for sym in symbols:
        if sym not in audit.symbols:
            raise NotFound(
                f"symbol {sym[:64]!r} is not configured (AUDIT_SYMBOLS)", field=f"symbol{plural}"
            )
    for name in timeframes:
        try:
            tf = parse_timeframe(name)
        except InvalidArgument as exc:
            raise InvalidArgument(exc.message, field=f"timeframe{plural}") from None
        if tf.name not in audit.timeframes:
            raise NotFound(
                f"timeframe {name[:64]!r} is not configured (AUDIT_TIMEFRAMES)",
                field=f"timeframe{plural}",
            )
