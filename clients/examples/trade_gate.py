"""Trade gate: allow a series only while the auditor vouches, now, that it is live.

Reads the series' score with ListHealthScores (any replica answers) and prints one
line, ALLOW (exit 0) or REFUSE with the reason. It allows a series only when

* its state is LIVE: the newest due candle is stored;
* the verdict is fresh: ``verdict_time``, when the leader last confirmed the state, is
  at most --max-verdict-age seconds (default 5) from the local clock, either way (a
  score without one is never fresh);
* no gap is still open among its newest --lookback slots (default 100; 0 skips the
  check): ListGaps from now - lookback x the timeframe's interval;
* it is not ``suspect``: no candle content finding (ListAnomalies: an invalid price, a
  spike, a frozen feed, ...) lies within the newest VALIDITY_SUSPECT_SLOTS slots;
* with --min-quality Q, its quality is at least Q (off by default: quality spans the
  whole audit window, so one old, filled gap would lower it for a day).

UNKNOWN (nobody can vouch for the series: no leader, a frozen leader, a failed live
tail), LATE, NO_DATA, a score without a state and a stale verdict all refuse. It fails
closed, and the exit code says why:

* 1: the data is not good enough (not LIVE, stale verdict, open gap, low quality, no
  score within --wait);
* 2: unknown series: the server does not audit this symbol or timeframe (NOT_FOUND),
  or another error a retry will not fix;
* 3: server unreachable: no answer within --wait (UNAVAILABLE, deadline).

Limit: the verdict's age compares the database's clock with this host's, so keep both
synchronised (NTP); a skew larger than --max-verdict-age refuses every series.

    python clients/examples/trade_gate.py --target 127.0.0.1:50051 \\
        --symbol BTCUSDT --timeframe 1m
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from auditclient import AuditClient, AuditError, DeadlineExceeded, NotFound, Unavailable
from auditclient import verdict_age as age_of
from auditpb.v1 import audit_pb2

DATA, UNKNOWN_SERIES, UNREACHABLE = 1, 2, 3

# Slot length per timeframe, for the gap lookback. A month is taken as 31 days so that
# the window always covers at least --lookback slots.
INTERVALS: dict[str, timedelta] = {
    "1s": timedelta(seconds=1),
    "1m": timedelta(minutes=1),
    "3m": timedelta(minutes=3),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "30m": timedelta(minutes=30),
    "1h": timedelta(hours=1),
    "2h": timedelta(hours=2),
    "4h": timedelta(hours=4),
    "6h": timedelta(hours=6),
    "8h": timedelta(hours=8),
    "12h": timedelta(hours=12),
    "1d": timedelta(days=1),
    "3d": timedelta(days=3),
    "1w": timedelta(weeks=1),
    "1M": timedelta(days=31),
}

_T = TypeVar("_T")
_STATES = frozenset(audit_pb2.SeriesState.values())
_WHY_NOT_LIVE = {
    audit_pb2.SERIES_STATE_UNKNOWN: "nobody vouches for it now",
    audit_pb2.SERIES_STATE_NO_DATA: "no candle stored",
}


class Refusal(Exception):
    """Trading is refused; ``exit_code`` says which kind of refusal."""

    def __init__(self, reason: str, exit_code: int = DATA) -> None:
        super().__init__(reason)
        self.exit_code = exit_code


def verdict_text(age: float | None) -> str:
    """Say how old a verdict is: ``verdict 0.4s old``, or ``never confirmed``."""
    if age is None:
        return "never confirmed"
    if age < 0:
        return f"verdict {-age:.1f}s in the future"
    return f"verdict {age:.1f}s old"


def refusal(
    score: audit_pb2.HealthScore,
    now: datetime,
    max_verdict_age: float,
    min_quality: float | None = None,
) -> str | None:
    """Return why the score forbids trading at ``now``, or None when it allows it."""
    age = age_of(score, now)
    if score.state != audit_pb2.SERIES_STATE_LIVE:
        # UNKNOWN, LATE, NO_DATA, or a state this gate does not know: fail closed.
        name = audit_pb2.SeriesState.Name(score.state) if score.state in _STATES else score.state
        if score.state == audit_pb2.SERIES_STATE_LATE:
            since = score.last_candle_open.ToDatetime(tzinfo=UTC).isoformat()
            why = f"{score.late_candles} candle(s) missing after {since}"
        else:
            why = _WHY_NOT_LIVE.get(score.state, f"state {name}")
        short = str(name).removeprefix("SERIES_STATE_")
        return f"series is {short}, not LIVE ({why}; {verdict_text(age)})"
    if age is None:
        return "LIVE but never confirmed (no verdict_time): its age is unknown"
    if abs(age) > max_verdict_age:
        return f"LIVE {verdict_text(age)}, more than {max_verdict_age:g}s: stale"
    if score.suspect:
        return (
            f"series is suspect: a candle near the live edge broke a content rule "
            f"({score.anomaly_count} finding(s) in the window, validity {score.validity:.2f}; "
            "see ListAnomalies)"
        )
    if min_quality is not None and score.quality < min_quality:
        return f"quality {score.quality:.2f} below {min_quality:.2f}"
    return None


async def until(deadline: float, read: Callable[[float], AsyncIterator[_T]]) -> list[_T]:
    """Return every item of ``read(remaining seconds)``, retrying UNAVAILABLE until the
    monotonic ``deadline``; then raise the last Unavailable or DeadlineExceeded."""
    loop = asyncio.get_running_loop()
    while True:
        # At least half a second per call, so that a read started just before the
        # deadline is not reported as an unreachable server.
        remaining = max(deadline - loop.time(), 0.5)
        try:
            return [item async for item in read(remaining)]
        except (Unavailable, DeadlineExceeded):
            if loop.time() + 0.2 >= deadline:
                raise
        await asyncio.sleep(0.2)  # one attempt per pass, so that we see why it failed


async def current_score(
    client: AuditClient, symbol: str, timeframe: str, deadline: float
) -> audit_pb2.HealthScore | None:
    """Return the series' stored score, or None if it has none before ``deadline``.

    Raises NotFound at once for a series the server does not audit, and the last
    Unavailable (or DeadlineExceeded) when the server never answered in time.
    """
    loop = asyncio.get_running_loop()
    while True:
        scores = await until(
            deadline,
            lambda t: client.list_health_scores([symbol], [timeframe], call_timeout=t),
        )
        for score in scores:
            if (score.symbol, score.timeframe) == (symbol, timeframe):
                return score
        if loop.time() + 0.2 >= deadline:
            return None
        await asyncio.sleep(0.2)  # configured but not scored yet


async def open_gaps(
    client: AuditClient, symbol: str, timeframe: str, since: datetime, deadline: float
) -> list[audit_pb2.Gap]:
    """Return the series' gaps that end after ``since``: those still missing."""
    return await until(
        deadline,
        lambda t: client.list_gaps(symbol, timeframe, start=since, call_timeout=t),
    )


def gap_text(gaps: list[audit_pb2.Gap], lookback: int) -> str:
    """Describe the open gaps in one line."""
    first = gaps[0]
    start = first.start_time.ToDatetime(tzinfo=UTC).isoformat()
    return (
        f"{len(gaps)} open gap(s) in the newest {lookback} slots, the first "
        f"{first.missing_candles} candle(s) from {start}"
    )


async def check(args: argparse.Namespace) -> str:
    """Return what allowed trading; raise Refusal otherwise."""
    deadline = asyncio.get_running_loop().time() + args.wait
    async with AuditClient(args.target, token=args.token) as client:
        try:
            score = await current_score(client, args.symbol, args.timeframe, deadline)
            if score is None:
                raise Refusal(f"no health score within {args.wait:g}s")
            now = datetime.now(UTC)
            reason = refusal(score, now, args.max_verdict_age, args.min_quality)
            if reason is not None:
                raise Refusal(reason)
            allowed = f"LIVE, {verdict_text(age_of(score, now))}"
            if args.lookback:
                since = now - args.lookback * INTERVALS[args.timeframe]
                gaps = await open_gaps(client, args.symbol, args.timeframe, since, deadline)
                if gaps:
                    raise Refusal(gap_text(gaps, args.lookback))
                allowed += f", no open gap in the newest {args.lookback} slots"
        except NotFound as exc:
            raise Refusal(f"unknown series ({exc.details})", UNKNOWN_SERIES) from exc
        except (Unavailable, DeadlineExceeded) as exc:
            raise Refusal(f"server unreachable ({exc})", UNREACHABLE) from exc
        except AuditError as exc:
            raise Refusal(f"auditsvc error: {exc}", UNKNOWN_SERIES) from exc
    if args.min_quality is not None:
        allowed += f", quality {score.quality:.2f}"
    return allowed


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=os.environ.get("AUDITSVC_TARGET", "127.0.0.1:50051"))
    parser.add_argument("--token", default=os.environ.get("AUDITSVC_TOKEN"))
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--timeframe", required=True, choices=tuple(INTERVALS))
    parser.add_argument(
        "--max-verdict-age",
        type=_positive,
        default=5.0,
        help="seconds a LIVE verdict stays good (default 5)",
    )
    parser.add_argument(
        "--lookback",
        type=_non_negative,
        default=100,
        help="refuse an open gap among the newest N slots (default 100; 0: no check)",
    )
    parser.add_argument(
        "--min-quality", type=float, default=None, help="also refuse quality below this"
    )
    parser.add_argument("--wait", type=_positive, default=5.0, help="seconds to wait for answers")
    args = parser.parse_args()
    try:
        allowed = asyncio.run(check(args))
    except Refusal as exc:
        print(f"REFUSE {args.symbol} {args.timeframe}: {exc}")
        return exc.exit_code
    print(f"ALLOW {args.symbol} {args.timeframe}: {allowed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
