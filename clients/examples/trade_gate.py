"""Trade gate: refuse to trade a series whose data quality is low or stale.

Reads the series' current health score (the first message of the health stream) and
prints ALLOW (exit 0) or REFUSE. It fails closed, and the exit code says why:

* 1: the data is not good enough (low quality, stale score, no score within --wait);
* 2: unknown series: the server does not audit this symbol or timeframe (NOT_FOUND),
  or another error a retry will not fix;
* 3: server unreachable: no answer within --wait (UNAVAILABLE, deadline).

    python clients/examples/trade_gate.py --target 127.0.0.1:50051 \\
        --symbol BTCUSDT --timeframe 1m --min-quality 80 --max-age 600
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import UTC, datetime

from auditclient import AuditClient, AuditError, DeadlineExceeded, NotFound, Unavailable
from auditpb.v1 import audit_pb2

DATA, UNKNOWN_SERIES, UNREACHABLE = 1, 2, 3


class Refusal(Exception):
    """Trading is refused; ``exit_code`` says which kind of refusal."""

    def __init__(self, reason: str, exit_code: int = DATA) -> None:
        super().__init__(reason)
        self.exit_code = exit_code


def refusal(
    score: audit_pb2.HealthScore, min_quality: float, max_age_s: float, now: datetime
) -> str | None:
    """Return why trading must be refused, or None when the series may be traded."""
    if not score.HasField("computed_at"):
        return "score has no computed_at"
    age = (now - score.computed_at.ToDatetime(tzinfo=UTC)).total_seconds()
    if age > max_age_s:
        return f"score is stale ({age:.0f}s old, limit {max_age_s:.0f}s)"
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
    reason = refusal(score, args.min_quality, args.max_age, datetime.now(UTC))
    if reason is not None:
        raise Refusal(reason)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=os.environ.get("AUDITSVC_TARGET", "127.0.0.1:50051"))
    parser.add_argument("--token", default=os.environ.get("AUDITSVC_TOKEN"))
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--timeframe", required=True)
    parser.add_argument("--min-quality", type=float, default=80.0)
    parser.add_argument("--max-age", type=float, default=600.0, help="seconds")
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
