"""Command line: ``auditsvc serve | setup-db | restore-duplicates | seed-demo | dev``.

A bad setting exits with code 2 and one line naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from auditsvc import __version__
from auditsvc.config import ConfigError, Settings

EXIT_CONFIG = 2


def _settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"auditsvc: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _serve(args: argparse.Namespace) -> int:
    from auditsvc import logs
    from auditsvc.app import App
    from auditsvc.clock import SystemClock
    from auditsvc.failpoints import Failpoints

    settings = _settings()
    logs.configure(settings.log_level, settings.replica_id, _secrets(settings))

    async def serve() -> None:
        # The grpc.aio server binds to the running loop, so build the app inside it.
        failpoints = Failpoints.parse(os.environ.get("AUDITSVC_FAILPOINTS", ""))
        # Test hook: a skewed local clock, to show the election ignores it.
        clock = SystemClock(offset_ms=int(os.environ.get("AUDITSVC_CLOCK_OFFSET_MS", "0")))
        await App(settings, clock=clock, failpoints=failpoints).run()

    asyncio.run(serve())
    return 0


def _secrets(settings: Settings) -> tuple[str, ...]:
    """Values the log redactor must never print: the token and the URI's password."""
    from pymongo.uri_parser import parse_uri

    try:
        password = parse_uri(settings.mongodb_uri).get("password") or ""
    except Exception:  # an unparsable URI fails at connect time, with its own message
        password = ""
    return tuple(s for s in (settings.api_token or "", password) if s)


def _setup_db(args: argparse.Namespace) -> int:
    from auditsvc.dbtools import setup_db

    return asyncio.run(setup_db(_settings(), candle_indexes=args.candle_indexes))


def _restore(args: argparse.Namespace) -> int:
    from auditsvc.dbtools import restore

    return asyncio.run(restore(_settings(), args.request_id))


def _seed(args: argparse.Namespace) -> int:
    from auditsvc.dbtools import seed_demo

    return asyncio.run(seed_demo(_settings(), force=args.force))


def _dev(args: argparse.Namespace) -> int:
    from auditsvc.devrun import run_dev

    return run_dev(replicas=args.replicas, data_dir=args.data_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditsvc",
        description="gRPC audit control-plane for OHLCV candles. Settings come from "
        "environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"auditsvc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run one replica with settings from the environment").set_defaults(
        func=_serve
    )
    p = sub.add_parser("setup-db", help="create collections and indexes, then verify the lease")
    p.add_argument("--candle-indexes", action="store_true", help="also index (symbol, timestamp)")
    p.set_defaults(func=_setup_db)
    p = sub.add_parser("restore-duplicates", help="put archived duplicates back")
    p.add_argument("--request-id", required=True, help="the ResolveDuplicates request_id")
    p.set_defaults(func=_restore)
    p = sub.add_parser("seed-demo", help="write demo candles with known gaps and duplicates")
    p.add_argument("--force", action="store_true", help="reseed even if data exists")
    p.set_defaults(func=_seed)
    p = sub.add_parser("dev", help="local dev database + demo data + replicas (make run)")
    p.add_argument("--replicas", type=int, default=1, choices=(1, 2, 3))
    p.add_argument("--data-dir", default=".devdata")
    p.set_defaults(func=_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
