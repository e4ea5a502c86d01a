"""9. Removal and restore throughput (documents/s), the leader's epoch unchanged.

One replica with leader election on (heartbeat and lease from ``--heartbeat``/
``--election-timeout``). Seeds ``removal_documents`` surplus duplicates (slots
of two copies), times one keep_newest ResolveDuplicates, then one
``auditsvc restore-duplicates`` of the same request id. The leader's epoch is
read before and after each; the figure is met only when it never changed,
every document was removed then restored, and the log shows no lapse of the
lease ("stopped leading").
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from bson import ObjectId

from auditpb.v1 import audit_pb2 as pb
from bench import cluster, seed
from bench.context import Context, NotMeasured
from bench.figures.common import MET, MISSED, result, ts
from bench.procs import service_env
from bench.stats import rounded

KEY = "removal"
TITLE = "Removal and restore throughput"
TARGET = "the leader's epoch unchanged across a removal and a restore; documents/s recorded"
SYMBOL = "RMVUSDT"
TIMEFRAME = "1m"


async def _seed(ctx: Context, database: str, slots: int) -> None:
    col = ctx.client[database][f"candles_{SYMBOL}_{TIMEFRAME}"]
    docs = []
    for i in range(slots):
        stamp = seed.FIXED_END_MS - (i + 1) * 60_000
        for copy in range(2):
            docs.append({"_id": ObjectId(), "symbol": SYMBOL, "timestamp": _dt(stamp), "v": copy})
    for start in range(0, len(docs), 5_000):
        await col.insert_many(docs[start : start + 5_000])
    await seed.index(ctx.client[database], col.name)


def _dt(ms: int) -> Any:
    from auditsvc.storage.mongo.database import to_dt

    return to_dt(ms)


async def _epoch(replica: Any) -> int:
    reply = await replica.stub.GetLeader(pb.GetLeaderRequest(), timeout=5)
    return int(reply.epoch)


async def run(ctx: Context) -> dict[str, Any]:
    slots = ctx.sizes.removal_documents
    name = ctx.database("removal")
    await _seed(ctx, name, slots)
    env = {**cluster.election_env(ctx, SYMBOL), "ENABLE_DUPLICATE_REMOVAL": "true"}
    env["LOG_LEVEL"] = "INFO"
    replica = await ctx.replica("rm1", name, **env)
    await cluster.leader_of([replica], cluster.settle_time(ctx))
    before = await _epoch(replica)
    request = pb.ResolveDuplicatesRequest(
        symbol=SYMBOL,
        timeframe=TIMEFRAME,
        strategy=pb.STRATEGY_KEEP_NEWEST,
        start_time=ts(seed.FIXED_END_MS - (slots + 1) * 60_000),
        end_time=ts(seed.FIXED_END_MS),
        request_id=f"bench-{ctx.run_id}",
    )
    began = time.perf_counter()
    reply = await replica.stub.ResolveDuplicates(request, timeout=1800)
    remove_s = time.perf_counter() - began
    after_removal = await _epoch(replica)
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditsvc",
        "restore-duplicates",
        "--request-id",
        request.request_id,
        env=service_env(ctx.service_uri, name),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 1800)
    restore_s = time.perf_counter() - began
    if proc.returncode != 0:
        raise NotMeasured(f"restore-duplicates exited {proc.returncode}: {err.decode()[-300:]}")
    after_restore = await _epoch(replica)
    restored = int(out.decode().split()[1]) if out.decode().startswith("restored ") else -1
    lapses = replica.log_path.read_text(errors="replace").count("stopped leading")
    ok = (
        before == after_removal == after_restore
        and reply.documents_removed == slots
        and restored == slots
        and lapses == 0
    )
    removal_rate = slots / remove_s
    restore_rate = slots / restore_s
    return result(
        target=TARGET,
        summary=(
            f"removal {removal_rate:.0f} docs/s ({slots} in {remove_s:.1f} s), restore "
            f"{restore_rate:.0f} docs/s ({restore_s:.1f} s); epoch {before} → {after_removal} → "
            f"{after_restore}; lease lapses {lapses}; heartbeat {ctx.sizes.heartbeat:g} s"
        ),
        verdict=MET if ok else MISSED,
        ratio=None,
        ratio_of="",
        details={
            "documents": slots,
            "removal_seconds": rounded(remove_s),
            "removal_docs_per_s": rounded(removal_rate),
            "restore_seconds": rounded(restore_s),
            "restore_docs_per_s": rounded(restore_rate),
            "documents_removed": reply.documents_removed,
            "documents_restored": restored,
            "epochs": [before, after_removal, after_restore],
            "lease_lapses": lapses,
        },
    )
