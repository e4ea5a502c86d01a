"""Command line: ``auditsvc serve | setup-db | restore-duplicates | seed-demo | dev``.

Every failure a user can cause or meet prints one line on stderr and exits
with its own code (the table is ``EXIT_CODES``, shown by ``auditsvc --help``):
a bad setting or a busy port names the variable; a database that does not
answer names the reason. Only a bug prints a traceback.

grpc-core logs in plain text on stderr from C++ (``I1201 ... Handshake
failed``). ``main`` sets GRPC_VERBOSITY=ERROR, unless the operator set it,
before anything imports grpc, so the JSON log is not interleaved with it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from auditsvc import __version__
from auditsvc.ops.settings import VARIABLES, ConfigError, Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_DATABASE = 3
EXIT_NOT_FOUND = 4
# The deployment cannot give what leadership needs (w:majority).
EXIT_DEPLOYMENT = 5
EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_FAILED, "the command ran and failed (it says why), or the database refused it"),
    (EXIT_CONFIG, "bad usage, a bad setting, or a port in use (names the variable)"),
    (EXIT_DATABASE, "the database did not answer within MONGODB_TIMEOUT_MS"),
    (EXIT_NOT_FOUND, "nothing to act on (restore-duplicates: unknown request id)"),
    (EXIT_DEPLOYMENT, "the deployment cannot acknowledge w:majority writes (serve)"),
)


def _settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        raise SystemExit(_fail(f"configuration error: {exc}", EXIT_CONFIG)) from None


def _fail(message: str, code: int) -> int:
    print(f"auditsvc: {message}", file=sys.stderr, flush=True)
    return code


def _serve(args: argparse.Namespace) -> int:
    from auditsvc.app import App
    from auditsvc.ops import logs
    from auditsvc.ops.clock import SystemClock
    from auditsvc.ops.failpoints import Failpoints

    settings = _settings()
    logs.configure(settings.ops.log_level, settings.server.replica_id, _secrets(settings))

    async def serve() -> str | None:
        # The grpc.aio server binds to the running loop, so build the app inside it.
        failpoints = Failpoints.parse(os.environ.get("AUDITSVC_FAILPOINTS", ""))
        # Test hook: a skewed local clock, to show the election ignores it.
        clock = SystemClock(offset_ms=int(os.environ.get("AUDITSVC_CLOCK_OFFSET_MS", "0")))
        app = App(settings, clock=clock, failpoints=failpoints)
        await app.serve_until_signalled()
        return app.failure

    failure = asyncio.run(serve())  # a busy GRPC_PORT or METRICS_PORT raises ConfigError: see main
    if failure:
        print(f"auditsvc: cannot start: {failure}", file=sys.stderr)
    # Everything is stopped and "stopped" is logged. Driver worker threads still
    # blocked on a stalled database would hold the interpreter's exit (it joins
    # them) for up to the socket timeout, past SHUTDOWN_GRACE: skip that join.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_DEPLOYMENT if failure else EXIT_OK)


def _secrets(settings: Settings) -> tuple[str, ...]:
    """Values the log redactor must never print: the token and the URI's password."""
    from pymongo.uri_parser import parse_uri

    try:
        password = parse_uri(settings.mongo.uri).get("password") or ""
    except Exception:  # an unparsable URI fails at connect time, with its own message
        password = ""
    return tuple(s for s in (settings.security.api_token or "", password) if s)


def _setup_db(args: argparse.Namespace) -> int:
    from auditsvc.devtools.dbtools import setup_db

    return asyncio.run(setup_db(_settings(), candle_indexes=args.candle_indexes))


def _restore(args: argparse.Namespace) -> int:
    from auditsvc.devtools.dbtools import restore

    return asyncio.run(restore(_settings(), args.request_id))


def _seed(args: argparse.Namespace) -> int:
    from auditsvc.devtools.dbtools import seed_demo

    return asyncio.run(seed_demo(_settings(), force=args.force))


def _settings_table(args: argparse.Namespace) -> int:
    from auditsvc.ops.settings import variables_table

    print(variables_table())
    return EXIT_OK


def _dev(args: argparse.Namespace) -> int:
    from auditsvc.devtools.devrun import DevPorts, run_dev

    if args.pause_feed or args.resume_feed:
        from pathlib import Path

        from auditsvc.devtools.demofeed import set_paused

        symbol = args.pause_feed or args.resume_feed
        now = set_paused(Path(args.data_dir), symbol, pause=bool(args.pause_feed))
        print(
            f"demo feed for {symbol} {'paused' if args.pause_feed else 'resumed'}; "
            f"paused now: {', '.join(sorted(now)) or 'none'}"
        )
        return 0

    ports = DevPorts(db=args.db_port, grpc=args.grpc_port, metrics=args.metrics_port)
    return run_dev(replicas=args.replicas, data_dir=args.data_dir, ports=ports)


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES)
    # Generated from the settings' field metadata, like README's table.
    width = max(len(v.name) for v in VARIABLES)
    variables = "\n".join(
        f"  {v.name:<{width}}  {v.doc} (default: {v.default or 'empty'})" for v in VARIABLES
    )
    parser = argparse.ArgumentParser(
        prog="auditsvc",
        description="gRPC audit control-plane for OHLCV candles. Settings come from "
        "environment variables, listed below and in README.md.",
        epilog=f"environment variables:\n{variables}\n\nexit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    p.add_argument("--db-port", type=int, default=27027, help="SecantusDB (default 27027)")
    p.add_argument(
        "--grpc-port", type=int, default=50051, help="replica N gets this + N-1 (default 50051)"
    )
    p.add_argument(
        "--metrics-port", type=int, default=9464, help="replica N gets this + N-1 (default 9464)"
    )
    feed = p.add_mutually_exclusive_group()
    feed.add_argument(
        "--pause-feed",
        metavar="SYMBOL",
        help="stop the running dev stack's demo feed for SYMBOL (it turns LATE), then exit",
    )
    feed.add_argument(
        "--resume-feed", metavar="SYMBOL", help="resume the demo feed for SYMBOL, then exit"
    )
    p.set_defaults(func=_dev)
    sub.add_parser(
        "settings-table", help="print the settings as README.md's Markdown table"
    ).set_defaults(func=_settings_table)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Before any import of grpc: the C core reads it once, when it loads.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    args = build_parser().parse_args(argv)
    from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError

    try:
        code: int = args.func(args)
    except ConfigError as exc:  # settings, or a busy port
        return _fail(f"configuration error: {exc}", EXIT_CONFIG)
    except (ConnectionFailure, ExecutionTimeout, TimeoutError) as exc:
        return _fail(f"database unreachable: {_reason(exc)}", EXIT_DATABASE)
    except PyMongoError as exc:
        return _fail(f"database error: {_reason(exc)}", EXIT_FAILED)
    except KeyboardInterrupt:
        return 130
    return code


def _reason(exc: BaseException) -> str:
    """The first line of the error, cut short: pymongo's topology dumps run long."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for noise in (" (configured timeouts", ", Timeout:", ", Topology Description:"):
        text = text.split(noise)[0]
    return text[:200]


if __name__ == "__main__":
    raise SystemExit(main())
