"""Runs the chosen figures against one database; a failing figure becomes "not measured"."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
import traceback
from contextlib import AsyncExitStack
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pymongo import AsyncMongoClient

from bench import machine
from bench.context import Context, NotMeasured, Sizes
from bench.figures import FIGURES
from bench.procs import Database
from bench.profile import attach


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def not_measured(reason: str) -> dict[str, Any]:
    return {"measured": False, "reason": reason[:600]}


async def run_figure(ctx: Context, figure: ModuleType, limit_s: float) -> dict[str, Any]:
    began = time.perf_counter()
    try:
        async with asyncio.timeout(limit_s):
            record: dict[str, Any] = await figure.run(ctx)
    except NotMeasured as exc:
        record = not_measured(str(exc))
    except TimeoutError:
        record = not_measured(f"did not finish within {limit_s:g} s")
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(exc)).strip()
        log(f"{figure.KEY} failed:\n{traceback.format_exc()}")
        record = not_measured(f"{detail}")
    finally:
        await ctx.cleanup()
    record = {"key": figure.KEY, "title": figure.TITLE, "target": figure.TARGET, **record}
    record["seconds"] = round(time.perf_counter() - began, 1)
    return record


def figure_limit(figure: ModuleType, limit_s: float | None, tiny: bool) -> float:
    """``--timeout`` when given; else 60 s tiny, or the figure's own RUN_LIMIT_S (900 s
    unless it says more, as figure 8 does for its 30,000 series)."""
    if limit_s is not None:
        return limit_s
    return 60.0 if tiny else float(getattr(figure, "RUN_LIMIT_S", 900.0))


def _reap(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()


def with_option(uri: str, key: str, value: str) -> str:
    """``uri`` with ``key=value`` among its query options (replacing any given)."""
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k.lower() != key.lower()]
    query.append((key, value))
    path = parts.path or "/"
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), parts.fragment))


async def server_info(uri: str) -> dict[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        uri, serverSelectionTimeoutMS=10_000
    )
    try:
        info: dict[str, Any] = await client.admin.command("buildInfo")
        hello: dict[str, Any] = await client.admin.command("hello")
    finally:
        await client.close()
    info["_replica_set"] = hello.get("setName") or ""
    return info


async def run(
    *,
    uri: str | None,
    sizes: Sizes,
    work_dir: Path,
    only: tuple[str, ...],
    limit_s: float | None,
    tiny: bool,
    service_root: Path | None = None,
    retryable_writes: str = "auto",
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Runs the figures; without ``uri`` each figure gets a fresh private SecantusDB."""
    started = dt.datetime.now(dt.UTC)
    load_start = os.getloadavg()
    kind = "SecantusDB" if uri is None else "external MongoDB (MONGODB_URI)"
    retry = retryable_writes == "on" or (retryable_writes == "auto" and uri is not None)
    info: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    chosen = [f for f in FIGURES if not only or f.KEY in only]
    for i, figure in enumerate(chosen, 1):
        log(f"[{i}/{len(chosen)}] {figure.TITLE} ...")
        async with AsyncExitStack() as stack:
            target = uri
            try:
                if target is None:
                    storage = work_dir / f"db-{figure.KEY}"
                    storage.mkdir(parents=True)
                    (work_dir / "logs").mkdir(exist_ok=True)
                    database = Database(storage, work_dir / "logs")
                    stack.callback(shutil.rmtree, storage, True)
                    spies: list[subprocess.Popen[bytes]] = []
                    stack.callback(_reap, spies)  # after terminate: py-spy writes on exit
                    stack.callback(database.stop)
                    database.start()
                    target = database.uri
                    if profile_dir is not None:
                        spies.append(attach(database.pid, profile_dir / f"{figure.KEY}-db.txt"))
                info = info or await server_info(target)
            except Exception as exc:
                figures[figure.KEY] = {
                    "key": figure.KEY,
                    "title": figure.TITLE,
                    "target": figure.TARGET,
                    **not_measured(f"database did not start or answer: {exc!r}"),
                    "seconds": 0.0,
                }
                log(f"[{i}/{len(chosen)}] {figure.TITLE}: {figures[figure.KEY]['reason']}")
                continue
            ctx = Context(
                uri=target,
                service_uri=target if retry else with_option(target, "retryWrites", "false"),
                sizes=sizes,
                work_dir=work_dir,
                service_root=service_root,
                owns_server=uri is None,
                profile_dir=profile_dir,
                figure=figure.KEY,
            )
            stack.push_async_callback(ctx.close)
            record = await run_figure(ctx, figure, figure_limit(figure, limit_s, tiny))
        figures[figure.KEY] = record
        outcome = record.get("summary") or f"not measured: {record.get('reason')}"
        log(f"[{i}/{len(chosen)}] {figure.TITLE}: {outcome} ({record['seconds']} s)")
    for figure in FIGURES:
        figures.setdefault(
            figure.KEY,
            {
                "key": figure.KEY,
                "title": figure.TITLE,
                "target": figure.TARGET,
                **not_measured("not selected in this run (--only)"),
            },
        )
    return {
        "schema": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tiny": tiny,
        "machine": machine.machine()
        | {
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": machine.versions(info, kind),
        "database": {
            "kind": kind,
            "replica_set": info.get("_replica_set", ""),
            "fresh_server_per_figure": uri is None,
            "service_retryable_writes": retry,
        },
        "service_root": str(service_root) if service_root else "",
        "sizes": sizes.as_dict(),
        "figures": {f.KEY: figures[f.KEY] for f in FIGURES},
    }
