"""``auditctl``: the command line of auditsvc.

Guarantees:

* Exit codes: 0 success; 2 bad argument (argparse errors, and the server's
  INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION); 3 server unavailable, no leader or
  deadline exceeded; 4 unauthenticated; 1 anything else.
* An error prints exactly one line to stderr and no traceback.
* ``resolve-duplicates`` is a dry run unless ``--apply`` is given.
* ``watch`` runs until Ctrl-C, then exits 0; on a terminal it redraws a table in place
  (every second, so that verdict ages stay true), otherwise it prints one line (or one
  JSON object with ``--json``) per update. Each line names the series' state and its
  verdict's age, and a change of state says what it was before
  (``state=late (was live)``).
* ``watch`` says when its stream drops and when it is back, one line each
  (``stream disconnected (...); reconnecting``, ``stream reconnected after 42.1s``):
  on stdout between the updates, on stderr with ``--json`` (stdout stays one score per
  line), and in the table's header on a terminal.
* ``scores`` reads the stored scores once (any replica answers, every page), so a
  script can check ``--state late`` without opening a stream; the VERDICT column says
  how long ago each state was confirmed (``never`` when it was not).
* The token (``--token`` or ``AUDITSVC_TOKEN``) is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TextIO

from auditpb.v1 import audit_pb2

from . import _render
from ._watch import StreamEvent
from .client import AuditClient
from .errors import (
    AuditError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from .options import DEFAULT_TARGET, ClientOptions
from .sync import BlockingAuditClient

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_UNAUTHENTICATED = 4

STRATEGIES = ("keep_newest", "keep_oldest", "manual")
STATES = {
    "live": audit_pb2.SERIES_STATE_LIVE,
    "late": audit_pb2.SERIES_STATE_LATE,
    "no_data": audit_pb2.SERIES_STATE_NO_DATA,
    "unknown": audit_pb2.SERIES_STATE_UNKNOWN,
}
GAP_STATES = ("open", "backfill_requested", "filled", "unfillable", "acknowledged")
# ListAnomalies' rules by their short names (price_invalid, ..., aggregate_mismatch).
RULES = tuple(
    name.removeprefix("ANOMALY_RULE_").lower()
    for name in audit_pb2.AnomalyRule.keys()  # noqa: SIM118 (an EnumTypeWrapper, not a dict)
    if name != "ANOMALY_RULE_UNSPECIFIED"
)
_CLEAR = "\x1b[H\x1b[2J"


def exit_code(error: AuditError) -> int:
    """Return the exit code for a server error."""
    if isinstance(error, Unauthenticated):
        return EXIT_UNAUTHENTICATED
    if isinstance(error, InvalidArgument | NotFound | FailedPrecondition):
        return EXIT_USAGE
    if isinstance(error, Unavailable | DeadlineExceeded):
        return EXIT_UNAVAILABLE
    return EXIT_ERROR


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _utc(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def _connection_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Add connection flags; on subcommands they default to SUPPRESS so that
    ``auditctl --target X status`` and ``auditctl status --target X`` both work."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    target = os.environ.get("AUDITSVC_TARGET") or DEFAULT_TARGET
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=default(target),
        # Spelled out, not %(default)s: on subcommands the default is SUPPRESS,
        # which argparse's help formatter cannot print.
        help=f"host:port of auditsvc (env AUDITSVC_TARGET, default {target})".replace("%", "%%"),
    )
    group.add_argument(
        "--token",
        default=default(os.environ.get("AUDITSVC_TOKEN")),
        help="bearer token (env AUDITSVC_TOKEN)",
    )
    group.add_argument("--tls", action="store_true", default=default(False), help="use TLS")
    group.add_argument("--ca-file", default=default(None), help="PEM roots (implies --tls)")
    group.add_argument("--cert-file", default=default(None), help="client cert (implies --tls)")
    group.add_argument("--key-file", default=default(None), help="client key (implies --tls)")
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=default(10.0),
        help="deadline of each call in seconds (default 10)",
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON, not tables"
    )


def _window_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", type=_utc, help="ISO-8601 time, UTC if no offset")
    parser.add_argument("--end", type=_utc, help="ISO-8601 time, UTC if no offset")


def build_parser() -> argparse.ArgumentParser:
    """Return the ``auditctl`` argument parser."""
    parser = _Parser(prog="auditctl", description="Query and operate auditsvc.")
    _connection_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
        _connection_flags(p, top=False)
        return p

    status = command("status", "show the replica's role and the latest audit cycle's summary")
    status.add_argument(
        "--full", action="store_true", help="also every series report (large with many series)"
    )
    command("leader", "show the current leader")

    gaps = command("gaps", "list gaps of the latest audit of each series (all pages)")
    gaps.add_argument("--symbol", default="")
    gaps.add_argument("--timeframe", default="")
    _window_flags(gaps)
    gaps.add_argument("--min-missing", type=_non_negative, default=0, metavar="N")
    gaps.add_argument("--page-size", type=_non_negative, default=0, help=argparse.SUPPRESS)
    gaps.add_argument(
        "--state",
        action="append",
        default=[],
        choices=(*GAP_STATES, "all"),
        help="repeatable; default open and backfill_requested (still missing)",
    )

    found = command("anomalies", "list candle content findings (all pages)")
    found.add_argument("--symbol", default="")
    found.add_argument("--timeframe", default="")
    _window_flags(found)
    found.add_argument(
        "--rule",
        action="append",
        default=[],
        choices=RULES,
        help="repeatable; default every rule",
    )
    found.add_argument("--page-size", type=_non_negative, default=0, help=argparse.SUPPRESS)

    ack = command("ack", "acknowledge a known outage: its gaps are not backfilled or counted")
    ack.add_argument("--symbol", action="append", default=[], help="repeatable; default all")
    ack.add_argument("--timeframe", action="append", default=[], help="repeatable; default all")
    ack.add_argument("--start", type=_utc, help="ISO-8601 time, UTC if no offset; may be future")
    ack.add_argument("--end", type=_utc, help="ISO-8601 time, UTC if no offset; may be future")
    ack.add_argument("--reason", help="why these gaps are expected (at most 500 characters)")
    ack.add_argument("--request-id", help="idempotency key; makes retries safe")
    ack.add_argument("--delete", metavar="ID", help="delete this acknowledgement instead")

    command("acks", "list the acknowledgements (all pages)")

    run = command("run", "audit the selected series now")
    run.add_argument("--symbol", action="append", default=[], help="repeatable; default all")
    run.add_argument("--timeframe", action="append", default=[], help="repeatable; default all")
    _window_flags(run)
    run.add_argument("--request-id", help="idempotency key; makes retries safe")

    resolve = command("resolve-duplicates", "report duplicate candles (remove with --apply)")
    resolve.add_argument("--symbol", required=True)
    resolve.add_argument("--timeframe", required=True)
    _window_flags(resolve)
    resolve.add_argument("--strategy", choices=STRATEGIES, help="default: the server's")
    resolve.add_argument("--apply", action="store_true", help="remove (default: dry run)")
    resolve.add_argument("--request-id", help="idempotency key; makes retries safe")

    scores = command("scores", "list the stored health score and live state of each series")
    scores.add_argument("--symbol", action="append", default=[], help="repeatable; default all")
    scores.add_argument("--timeframe", action="append", default=[], help="repeatable")
    scores.add_argument("--state", choices=tuple(STATES), help="only series in this state")

    watch = command("watch", "live table of health scores (Ctrl-C stops)")
    watch.add_argument("--symbol", action="append", default=[], help="repeatable; default all")
    watch.add_argument("--timeframe", action="append", default=[], help="repeatable")
    return parser


def _options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ClientOptions:
    if (args.cert_file is None) != (args.key_file is None):
        parser.error("--cert-file and --key-file go together")

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            parser.error(f"cannot read {path}: {exc.strerror}")

    ca, cert, key = read(args.ca_file), read(args.cert_file), read(args.key_file)
    try:
        return ClientOptions(
            target=args.target,
            token=args.token or None,
            timeout=args.timeout,
            tls=bool(args.tls or ca or cert),
            root_certificates=ca,
            cert_chain=cert,
            private_key=key,
        )
    except ValueError as exc:
        parser.error(str(exc))


def _unary(args: argparse.Namespace, options: ClientOptions, out: TextIO) -> None:
    with BlockingAuditClient(options=options) as client:
        if args.command == "status":
            status = client.get_status(full=args.full)
            out.write((_render.to_json(status) if args.json else _render.status(status)) + "\n")
        elif args.command == "leader":
            leader = client.get_leader()
            out.write((_render.to_json(leader) if args.json else _render.leader(leader)) + "\n")
        elif args.command == "gaps":
            gap_states = GAP_STATES if "all" in args.state else tuple(dict.fromkeys(args.state))
            found = list(
                client.list_gaps(
                    args.symbol,
                    args.timeframe,
                    args.start,
                    args.end,
                    args.min_missing,
                    args.page_size,
                    states=gap_states,
                )
            )
            out.write((_render.gaps_json(found) if args.json else _render.gaps(found)) + "\n")
        elif args.command == "anomalies":
            listed_anomalies = list(
                client.list_anomalies(
                    args.symbol,
                    args.timeframe,
                    tuple(dict.fromkeys(args.rule)),
                    args.start,
                    args.end,
                    args.page_size,
                )
            )
            text = (
                _render.anomalies_json(listed_anomalies)
                if args.json
                else _render.anomalies(listed_anomalies)
            )
            out.write(text + "\n")
        elif args.command == "scores":
            wanted = STATES[args.state] if args.state else audit_pb2.SERIES_STATE_UNSPECIFIED
            listed = list(client.list_health_scores(args.symbol, args.timeframe, wanted))
            text = _render.scores_json(listed) if args.json else _render.scores(listed)
            out.write(text + "\n")
        elif args.command == "run":
            ran = client.run_audit(
                args.symbol, args.timeframe, args.start, args.end, request_id=args.request_id
            )
            out.write((_render.to_json(ran) if args.json else _render.cycle(ran.cycle)) + "\n")
        elif args.command == "resolve-duplicates":
            resolved = client.resolve_duplicates(
                args.symbol,
                args.timeframe,
                args.start,
                args.end,
                strategy=args.strategy,
                dry_run=not args.apply,
                request_id=args.request_id,
            )
            text = _render.to_json(resolved) if args.json else _render.resolve(resolved)
            out.write(text + "\n")
        elif args.command == "ack":
            if args.delete:
                made = client.delete_acknowledgement(args.delete)
            else:
                if args.start is None or args.end is None or not args.reason:
                    raise ValueError("ack needs --start, --end and --reason (or --delete ID)")
                made = client.acknowledge_gaps(
                    args.start,
                    args.end,
                    args.reason,
                    args.symbol,
                    args.timeframe,
                    request_id=args.request_id,
                )
            out.write((_render.to_json(made) if args.json else _render.acks([made])) + "\n")
        elif args.command == "acks":
            known = list(client.list_acknowledgements())
            out.write((_render.acks_json(known) if args.json else _render.acks(known)) + "\n")


class _Screen:
    """The terminal view of ``watch``: a header with the stream's condition, then the
    latest score of each series, redrawn in place."""

    def __init__(
        self, out: TextIO, target: str, latest: dict[tuple[str, str], audit_pb2.HealthScore]
    ) -> None:
        self.out = out
        self.target = target
        self.latest = latest  # shared with the loop that fills it
        self.link = "connecting"
        self.updated = "-"

    def draw(self) -> None:
        """Redraw everything; verdict ages are measured now."""
        head = f"auditsvc {self.target}  updated {self.updated}  {self.link}"
        if self.latest:
            body = _render.health_table(self.latest.values())
        else:
            body = "waiting for health scores ..."
        self.out.write(f"{_CLEAR}{head}\n\n{body}\n")
        self.out.flush()

    async def tick(self) -> None:
        """Redraw every second until cancelled, so that the ages shown keep counting."""
        while True:
            await asyncio.sleep(1.0)
            self.draw()


async def _watch(args: argparse.Namespace, options: ClientOptions, out: TextIO) -> None:
    latest: dict[tuple[str, str], audit_pb2.HealthScore] = {}
    screen = _Screen(out, options.target, latest) if out.isatty() and not args.json else None

    def on_connection(event: StreamEvent) -> None:
        line = _render.connection(event)
        if screen is not None:
            screen.link = line
            screen.draw()
        elif args.json:
            print(line, file=sys.stderr, flush=True)
        else:
            out.write(line + "\n")
            out.flush()

    ticker = asyncio.create_task(screen.tick()) if screen is not None else None
    try:
        async with AuditClient(options=options) as client:
            if screen is not None:
                screen.draw()
            stream = client.watch_health(args.symbol, args.timeframe, on_connection=on_connection)
            async for score in stream:
                previous = latest.get((score.symbol, score.timeframe))
                latest[(score.symbol, score.timeframe)] = score
                if args.json:
                    out.write(_render.to_json(score, compact=True) + "\n")
                elif screen is not None:
                    screen.updated = datetime.now(UTC).strftime("%H:%M:%SZ")
                    if screen.link == "connecting":
                        screen.link = "connected"
                    screen.draw()
                    continue
                else:
                    out.write(_render.health_line(score, previous) + "\n")
                out.flush()
    finally:
        if ticker is not None:
            ticker.cancel()


def _fail(message: str, code: int) -> int:
    print(f"auditctl: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``auditctl`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        options = _options(args, parser)
    except SystemExit as exc:  # argparse: --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "watch":
            asyncio.run(_watch(args, options, sys.stdout))
        else:
            _unary(args, options, sys.stdout)
    except KeyboardInterrupt:
        return EXIT_OK if args.command == "watch" else 130
    except AuditError as exc:
        where = f" [target {options.target}]" if exit_code(exc) == EXIT_UNAVAILABLE else ""
        return _fail(f"{exc}{where}", exit_code(exc))
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        return _fail(f"{type(exc).__name__}: {exc}", EXIT_ERROR)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
