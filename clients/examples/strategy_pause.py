"""Strategy pause: print PAUSE/RESUME as a series' data quality falls and recovers.

A series is paused when its quality drops by more than --max-drop points from the
previous score, or falls below --floor; it resumes once quality is back at or above the
floor and within --max-drop of where it was before the drop. Ctrl-C stops it.

    python clients/examples/strategy_pause.py --symbol BTCUSDT --max-drop 10 --floor 70
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from auditclient import AuditClient
from auditpb.v1 import audit_pb2


class PauseRule:
    """Tracks each (symbol, timeframe) series and says when to pause or resume it."""

    def __init__(self, max_drop: float, floor: float) -> None:
        self.max_drop = max_drop
        self.floor = floor
        self._last: dict[tuple[str, str], float] = {}
        self._paused_from: dict[tuple[str, str], float] = {}  # quality before the pause

    def update(self, score: audit_pb2.HealthScore) -> str | None:
        """Return "PAUSE", "RESUME" or None for a new score."""
        key = (score.symbol, score.timeframe)
        quality = float(score.quality)
        previous = self._last.get(key, quality)
        self._last[key] = quality
        if key in self._paused_from:
            before = self._paused_from[key]
            if quality >= self.floor and before - quality <= self.max_drop:
                del self._paused_from[key]
                return "RESUME"
            return None
        if quality < self.floor or previous - quality > self.max_drop:
            self._paused_from[key] = max(previous, self.floor)
            return "PAUSE"
        return None


async def run(args: argparse.Namespace) -> None:
    rule = PauseRule(args.max_drop, args.floor)
    async with AuditClient(args.target, token=args.token) as client:
        async for score in client.watch_health(args.symbol, args.timeframe):
            action = rule.update(score)
            if action is not None:
                print(f"{action} {score.symbol} {score.timeframe} quality={score.quality:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=os.environ.get("AUDITSVC_TARGET", "127.0.0.1:50051"))
    parser.add_argument("--token", default=os.environ.get("AUDITSVC_TOKEN"))
    parser.add_argument("--symbol", action="append", default=[], help="repeatable; default all")
    parser.add_argument("--timeframe", action="append", default=[], help="repeatable")
    parser.add_argument("--max-drop", type=float, default=10.0, help="points between scores")
    parser.add_argument("--floor", type=float, default=70.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
