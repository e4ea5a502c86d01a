"""Trade gate: refuse to trade a series that is not live or whose quality is low.

Reads the series' current health score (the first message of the health stream) and
prints ALLOW (exit 0) or REFUSE. It allows only a series whose state is LIVE: the
newest complete candle is in the database. LATE (the leader's live tail saw a
candle not arrive within AUDIT_INGEST_GRACE of its close), NO_DATA, or a score
without a state refuse. It fails closed, and the exit code says why:

* 1: the data is not good enough (not LIVE, low quality, no score within --wait);
* 2: unknown series: the server does not audit this symbol or timeframe (NOT_FOUND),
  or another error a retry will not fix;
* 3: server unreachable: no answer within --wait (UNAVAILABLE, deadline).

    python clients/examples/trade_gate.py --target 127.0.0.1:50051 \\
        --symbol BTCUSDT --timeframe 1m --min-quality 80
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import UTC

from auditclient import AuditClient, AuditError, DeadlineExceeded, NotFound, Unavailable
from auditpb.v1 import audit_pb2

DATA, UNKNOWN_SERIES, UNREACHABLE = 1, 2, 3


class Refusal(Exception):
    """Trading is refused; ``exit_code`` says which kind of refusal."""

    def __init__(self, reason: str, exit_code: int = DATA) -> None:
        super().__init__(reason)
        self.exit_code = exit_code


_STATES = frozenset(audit_pb2.SeriesState.values())


def refusal(score: audit_pb2.HealthScore, min_quality: float) -> str | None:
    """Return why trading must be refused, or None when the series may be traded."""
    if score.state == audit_pb2.SERIES_STATE_LATE:
        since = score.last_candle_open.ToDatetime(tzinfo=UTC).isoformat()
        return f"series is LATE ({score.late_candles} candle(s) missing after {since})"
    if score.state != audit_pb2.SERIES_STATE_LIVE:
        # NO_DATA, or a state this gate does not know: fail closed.
        name = audit_pb2.SeriesState.Name(score.state) if score.state in _STATES else score.state
        return f"series is not LIVE (state {name})"
    if score.quality < min_quality:
        return f"quality {score.quality:.2f} below {min_quality:.2f}"
    return None


async def current_score(
    client: AuditClient, symbol: str, timeframe: str, wait_s: float
) -> audit_pb2.HealthScore | None:
    """Return the series' current score, or None if none arrives within ``wait_s``.

    Raises NotFound at once for a series the server does not audit, and the last
    Unavailable (or DeadlineExceeded) when the server never answered within ``wait_s``.
    """
    unreachable: AuditError | None = None
    try:
        async with asyncio.timeout(wait_s):
            while True:
                try:
                    # One connection attempt per pass, so that we see why it failed.
                    async for score in client.watch_health([symbol], [timeframe], max_reconnects=0):
                        unreachable = None
                        if (score.symbol, score.timeframe) == (symbol, timeframe):
                            return score
                except (Unavailable, DeadlineExceeded) as exc:
                    unreachable = exc
                    await asyncio.sleep(0.2)
                except AuditError as exc:
                    if exc.code is not None:
                        raise
                    # The stream ended cleanly (e.g. a server shutting down); reconnect.
    except TimeoutError:
        if unreachable is not None:
            raise unreachable from None
    return None


async def check(args: argparse.Namespace) -> None:
    """Return when the series may be traded; raise Refusal otherwise."""
    async with AuditClient(args.target, token=args.token) as client:
        try:
            score = await current_score(client, args.symbol, args.timeframe, args.wait)
        except NotFound as exc:
            raise Refusal(f"unknown series ({exc.details})", UNKNOWN_SERIES) from exc
        except (Unavailable, DeadlineExceeded) as exc:
            raise Refusal(f"server unreachable ({exc})", UNREACHABLE) from exc
        except AuditError as exc:
            raise Refusal(f"auditsvc error: {exc}", UNKNOWN_SERIES) from exc
    if score is None:
        raise Refusal(f"no health score within {args.wait:g}s")
    reason = refusal(score, args.min_quality)
    if reason is not None:
        raise Refusal(reason)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=os.environ.get("AUDITSVC_TARGET", "127.0.0.1:50051"))
    parser.add_argument("--token", default=os.environ.get("AUDITSVC_TOKEN"))
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--timeframe", required=True)
    parser.add_argument("--min-quality", type=float, default=80.0)
    parser.add_argument("--wait", type=float, default=5.0, help="seconds to wait for a score")
    args = parser.parse_args()
    try:
        asyncio.run(check(args))
    except Refusal as exc:
        print(f"REFUSE {args.symbol} {args.timeframe}: {exc}")
        return exc.exit_code
    print(f"ALLOW {args.symbol} {args.timeframe}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
