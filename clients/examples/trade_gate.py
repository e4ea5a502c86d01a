"""Trade gate: refuse to trade a series whose data quality is low or stale.

Reads the series' current health score (the first message of the health stream) and
prints ALLOW (exit 0) or REFUSE (exit 1). It fails closed: no score within --wait
seconds, or any auditsvc error, also refuses.

    python clients/examples/trade_gate.py --target 127.0.0.1:50051 \\
        --symbol BTCUSDT --timeframe 1m --min-quality 80 --max-age 600
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import UTC, datetime

from auditclient import AuditClient, AuditError
from auditpb.v1 import audit_pb2


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
    """Return the series' current score, or None if none arrives within ``wait_s``."""
    try:
        async with asyncio.timeout(wait_s):
            async for score in client.watch_health([symbol], [timeframe]):
                if (score.symbol, score.timeframe) == (symbol, timeframe):
                    return score
    except TimeoutError:
        pass
    return None


async def check(args: argparse.Namespace) -> str | None:
    async with AuditClient(args.target, token=args.token) as client:
        score = await current_score(client, args.symbol, args.timeframe, args.wait)
    if score is None:
        return f"no health score within {args.wait:g}s"
    return refusal(score, args.min_quality, args.max_age, datetime.now(UTC))


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
        reason = asyncio.run(check(args))
    except AuditError as exc:
        reason = f"auditsvc error: {exc}"
    if reason is not None:
        print(f"REFUSE {args.symbol} {args.timeframe}: {reason}")
        return 1
    print(f"ALLOW {args.symbol} {args.timeframe}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
