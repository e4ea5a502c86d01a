"""``python -m tests.chaos --rounds 30``: the long chaos run; exit 1 on any violation."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.chaos.chaos import ChaosConfig, run_chaos


def main(argv: Sequence[str] | None = None) -> int:
    defaults = ChaosConfig()
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--rounds", type=int, default=30, help="faults to inject (default 30)")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    parser.add_argument("--settle", type=float, default=defaults.settle, help="load-only s/round")
    parser.add_argument("--margin", type=float, default=defaults.margin, help="recovery slack, s")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="client tasks")
    parser.add_argument("--slots", type=int, default=defaults.slots, help="1m candles/symbol")
    parser.add_argument("--workdir", type=Path, default=None, help="logs and database here")
    parser.add_argument("--keep", action="store_true", help="keep the workdir even if green")
    args = parser.parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    cfg = ChaosConfig(
        rounds=args.rounds,
        seed=args.seed,
        settle=args.settle,
        margin=args.margin,
        workers=args.workers,
        slots=args.slots,
        workdir=args.workdir,
        keep_workdir=args.keep,
    )
    report = asyncio.run(run_chaos(cfg))
    print(report.render(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
