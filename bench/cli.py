"""``python -m bench``: run the figures, write the JSON, regenerate docs/PERFORMANCE.md."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench import report, runner
from bench.context import TINY, Sizes
from bench.figures import KEYS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "latest.json"
TINY_OUTPUT = ROOT / "bench" / "results" / "tiny.json"
DEFAULT_DOC = ROOT / "docs" / "PERFORMANCE.md"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _words(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    d = Sizes()
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="auditsvc benchmarks. Starts its own SecantusDB unless MONGODB_URI is set.",
    )
    p.add_argument("--tiny", action="store_true", help="smallest sizes (smoke test, ~1 min)")
    p.add_argument(
        "--output",
        type=Path,
        help="results JSON file, or a directory to write latest.json into "
        f"(default {DEFAULT_OUTPUT.relative_to(ROOT)}; bench/results/tiny.json with --tiny)",
    )
    p.add_argument(
        "--doc",
        type=Path,
        help="markdown file whose bench markers get the tables (default "
        "docs/PERFORMANCE.md for a full run to the default output; otherwise none)",
    )
    p.add_argument(
        "--from-json",
        type=Path,
        metavar="JSON",
        help="run nothing: regenerate the doc's tables (--doc, default docs/PERFORMANCE.md) "
        "from a results file",
    )
    p.add_argument("--no-doc", action="store_true", help="never touch a markdown file")
    p.add_argument(
        "--mongodb-uri",
        default=os.environ.get("MONGODB_URI") or None,
        help="benchmark against this server instead of a private SecantusDB "
        "(default: $MONGODB_URI). Databases named bench_<run>_* are created and dropped.",
    )
    p.add_argument(
        "--retryable-writes",
        choices=("auto", "on", "off"),
        default="auto",
        help="retryWrites for the replicas' client. auto: off against the private "
        "SecantusDB (its retryable-write registry makes every write O(registry) past "
        "10,000 records, see docs/PERFORMANCE.md), the driver default otherwise",
    )
    p.add_argument("--only", default="", help=f"comma list of figures: {','.join(KEYS)}")
    p.add_argument(
        "--timeout",
        type=float,
        help="seconds per figure (default: 900, or more where a figure needs it; tiny 60)",
    )
    p.add_argument(
        "--service-root",
        type=Path,
        help="run replicas from the auditsvc package in this directory (A/B a patch); "
        "never used for the committed results",
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="attach py-spy to every replica and the private database; collapsed stacks "
        "go to DIR/<figure>-<process>.txt (summarise with python -m bench.profile)",
    )
    p.add_argument("--keep-logs", type=Path, help="copy replica and database logs here")
    g = p.add_argument_group("sizes (defaults shown; --tiny replaces them)")
    g.add_argument("--trials", type=int, help=f"trials per figure (default {d.trials})")
    g.add_argument("--symbols", type=int, help=f"1: symbols (default {d.symbols})")
    g.add_argument("--days", type=float, help=f"1: days of 1m candles (default {d.days:g})")
    g.add_argument(
        "--memory-factor", type=int, help=f"2: long range / short (default {d.memory_factor})"
    )
    g.add_argument(
        "--history-days", type=_ints, help="3: short,long history in days (default 1,30)"
    )
    g.add_argument(
        "--rpc-seconds", type=float, help=f"4: seconds per point (default {d.rpc_seconds:g})"
    )
    g.add_argument("--rpc-concurrency", type=_ints, help="4: calls in flight (default 1,50)")
    g.add_argument(
        "--forward-latency-calls",
        type=int,
        help=f"5: calls per side per trial (default {d.forward_latency_calls})",
    )
    g.add_argument(
        "--forward-calls",
        type=int,
        help=f"5: calls for the connection check (default {d.forward_calls})",
    )
    g.add_argument("--subscribers", type=int, help=f"6: streams (default {d.subscribers})")
    g.add_argument(
        "--stream-channels", type=int, help=f"6: channels they share (default {d.stream_channels})"
    )
    g.add_argument(
        "--stream-cycles", type=int, help=f"6: measured cycles (default {d.stream_cycles})"
    )
    g.add_argument(
        "--failover-trials", type=int, help=f"7: trials per kind (default {d.failover_trials})"
    )
    g.add_argument(
        "--heartbeat",
        type=float,
        help=f"5-7: LEADER_ELECTION_HEARTBEAT_INTERVAL (default {d.heartbeat:g})",
    )
    g.add_argument(
        "--election-timeout",
        type=float,
        help=f"5-7: LEADER_ELECTION_TIMEOUT (default {d.election_timeout:g})",
    )
    g.add_argument("--scale-series", type=_ints, help="8: series counts (default 480,4800,30000)")
    g.add_argument("--scale-slots", type=int, help=f"8: 1m candles per window ({d.scale_slots})")
    g.add_argument(
        "--scale-recheck", type=int, help=f"8: AUDIT_RECHECK, s (default {d.scale_recheck})"
    )
    g.add_argument(
        "--ratio-series", type=int, help=f"8: incremental/full series ({d.ratio_series})"
    )
    g.add_argument("--ratio-slots", type=int, help=f"8: incremental/full candles ({d.ratio_slots})")
    g.add_argument("--status-series", type=int, help=f"8: small GetStatus size ({d.status_series})")
    g.add_argument(
        "--removal-documents",
        type=int,
        help=f"9: duplicates removed then restored (default {d.removal_documents})",
    )
    g.add_argument(
        "--live-series", type=int, help=f"10, 12-14: 1s series (default {d.live_series})"
    )
    g.add_argument(
        "--live-stopped",
        type=int,
        help=f"10, 12, 13: series stopped (default {d.live_stopped})",
    )
    g.add_argument("--live-cost-series", type=_ints, help="11: series counts (default 100,1000)")
    g.add_argument(
        "--live-cost-seconds",
        type=float,
        help=f"11: seconds measured (default {d.live_cost_seconds:g})",
    )
    g.add_argument(
        "--live-failover-trials",
        type=int,
        help=f"12: trials (default {d.live_failover_trials})",
    )
    g.add_argument(
        "--churn-seconds",
        type=float,
        help=f"13: seconds of pauses and resumes (default {d.churn_seconds:g})",
    )
    g.add_argument(
        "--churn-modes",
        type=_words,
        help=f"13: LIVE_MODE values measured (default {','.join(d.churn_modes)})",
    )
    g.add_argument(
        "--freeze-seconds",
        type=float,
        help=f"14: short SIGSTOP of the leader, s (default {d.freeze_seconds:g})",
    )
    g.add_argument(
        "--freeze-lease",
        type=float,
        help=f"14: LEADER_ELECTION_TIMEOUT (default {d.freeze_lease:g})",
    )
    g.add_argument(
        "--freeze-heartbeat",
        type=float,
        help=f"14: LEADER_ELECTION_HEARTBEAT_INTERVAL (default {d.freeze_heartbeat:g})",
    )
    g.add_argument(
        "--freeze-stale-after",
        type=float,
        help=f"14: LIVE_STALE_AFTER (default {d.freeze_stale_after:g})",
    )
    g.add_argument(
        "--take-office-series", type=_ints, help="15: series counts (default 1000,30000)"
    )
    g.add_argument("--cold-series", type=int, help=f"16: series (default {d.cold_series})")
    g.add_argument("--cold-slots", type=int, help=f"16: candles each (default {d.cold_slots})")
    g.add_argument("--heal-series", type=int, help=f"17-18: series (default {d.heal_series})")
    g.add_argument(
        "--heal-cap", type=int, help=f"17: MAX_AUTO_BACKFILL_JOBS (default {d.heal_cap})"
    )
    g.add_argument(
        "--heal-interval", type=float, help=f"17: AUDIT_INTERVAL (default {d.heal_interval:g})"
    )
    g.add_argument(
        "--heal-live-modes",
        type=_words,
        help=f"17: LIVE_MODE values measured (default {','.join(d.heal_live_modes)})",
    )
    g.add_argument(
        "--jam-timeout", type=int, help=f"18: BACKFILL_TIMEOUT, s (default {d.jam_timeout})"
    )
    g.add_argument(
        "--jam-interval", type=float, help=f"18: AUDIT_INTERVAL (default {d.jam_interval:g})"
    )
    g.add_argument(
        "--quality-timeframes",
        type=_words,
        help=f"19: generated timeframes (default {','.join(d.quality_timeframes)})",
    )
    g.add_argument(
        "--quality-candles",
        type=int,
        help=f"19: clean candles per timeframe (default {d.quality_candles})",
    )
    g.add_argument(
        "--quality-per-rule",
        type=int,
        help=f"19: faults of each rule per timeframe (default {d.quality_per_rule})",
    )
    return p


def sizes_from(args: argparse.Namespace) -> Sizes:
    base = TINY if args.tiny else Sizes()
    changes = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Sizes)
        if getattr(args, f.name, None) is not None
    }
    return dataclasses.replace(base, **changes)


def output_path(args: argparse.Namespace) -> Path:
    if args.output is None:
        return TINY_OUTPUT if args.tiny else DEFAULT_OUTPUT
    if args.output.suffix == ".json":
        return args.output
    return args.output / "latest.json"


def doc_path(args: argparse.Namespace, output: Path) -> Path | None:
    if args.no_doc:
        return None
    if args.doc is not None:
        return args.doc
    full_default = (
        not args.tiny
        and not args.only
        and args.service_root is None
        and output.resolve() == DEFAULT_OUTPUT
    )
    return DEFAULT_DOC if full_default else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        report.update_doc(args.doc or DEFAULT_DOC, results)
        runner.log(f"updated {args.doc or DEFAULT_DOC} from {args.from_json}")
        return 0
    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    unknown = set(only) - set(KEYS)
    if unknown:
        print(f"unknown figure(s): {', '.join(sorted(unknown))}; known: {', '.join(KEYS)}")
        return 2
    sizes = sizes_from(args)
    output = output_path(args)
    doc = doc_path(args, output)
    work = Path(tempfile.mkdtemp(prefix="auditsvc-bench-"))
    try:
        results = asyncio.run(
            runner.run(
                uri=args.mongodb_uri,
                sizes=sizes,
                work_dir=work,
                only=only,
                limit_s=args.timeout,
                tiny=args.tiny,
                service_root=args.service_root.resolve() if args.service_root else None,
                retryable_writes=args.retryable_writes,
                profile_dir=args.profile.resolve() if args.profile else None,
            )
        )
    finally:
        if args.keep_logs is not None and (work / "logs").exists():
            shutil.copytree(work / "logs", args.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    runner.log(f"wrote {output}")
    if doc is not None:
        report.update_doc(doc, results)
        runner.log(f"updated {doc}")
    print(report.summary_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
