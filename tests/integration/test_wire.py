"""RunAudit, ListGaps, scores, ResolveDuplicates and backfills over the real
wire, against a real SecantusDB seeded with known gaps and duplicates."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.demo import demo_series
from auditsvc.storage.mongo.database import connect

END_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SLOTS = 1440
TIMEOUT = 20.0


def ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


async def seed(settings: Any, symbol: str = "BTCUSDT", timeframe: str = "1m") -> Any:
    docs, expected = demo_series(symbol, timeframe, END_MS, SLOTS)
    database = connect(settings.mongo.uri, settings.mongo.database, 2000)
    try:
        await database.db[settings.audit.collection_for(symbol, timeframe)].insert_many(docs)
    finally:
        await database.close()
    return docs, expected


@pytest.fixture
async def database(make_settings: Any) -> AsyncIterator[Any]:
    settings = make_settings()
    handle = connect(settings.mongo.uri, settings.mongo.database, 2000)
    yield handle
    await handle.close()


def window_request(**kw: Any) -> pb.RunAuditRequest:
    return pb.RunAuditRequest(start_time=ts(END_MS - SLOTS * 60_000), end_time=ts(END_MS), **kw)


class TestRunAudit:
    """RunAudit reports exactly what the seeded data holds."""

    async def test_reports_known_gaps_and_duplicates(self, make_settings, start_replica, database):
        """The report's counts and scores match the seeded series exactly."""
        settings = make_settings()
        _, expected = await seed(settings)
        replica = await start_replica(settings)
        reply = await replica.stub.RunAudit(
            window_request(symbols=["BTCUSDT"], timeframes=["1m"]), timeout=TIMEOUT
        )
        (report,) = reply.cycle.series
        missing = sum(n for _, n in expected.gaps)
        assert report.expected_candles == SLOTS
        assert report.missing_candles == missing
        assert report.present_candles == SLOTS - missing
        assert report.gap_count == 2
        assert report.duplicate_groups == 3
        assert report.surplus_documents == 3
        assert report.misaligned_candles == 0
        completeness = 100 * (SLOTS - missing) / SLOTS
        consistency = 100 - 20 - 15
        assert report.health.completeness == pytest.approx(completeness)
        assert report.health.consistency == pytest.approx(consistency)
        assert report.health.freshness == pytest.approx(100.0)
        assert report.health.quality == pytest.approx(0.4 * completeness + 0.4 * consistency + 20)
        assert reply.cycle.served_by == "test-1"
        assert reply.cycle.epoch == 0

    async def test_same_request_id_does_the_work_once(self, make_settings, start_replica, database):
        """A repeated request_id returns the first cycle; another body is refused."""
        settings = make_settings()
        await seed(settings)
        replica = await start_replica(settings)
        request = window_request(symbols=["BTCUSDT"], timeframes=["1m"], request_id="r-1")
        first = await replica.stub.RunAudit(request, timeout=TIMEOUT)
        second = await replica.stub.RunAudit(request, timeout=TIMEOUT)
        assert first.cycle.cycle_id == second.cycle.cycle_id
        assert await database.db["audit_cycles"].count_documents({}) == 1
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await replica.stub.RunAudit(
                window_request(symbols=["ETHUSDT"], request_id="r-1"), timeout=TIMEOUT
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "request_id" in err.value.details()


class TestListGaps:
    """ListGaps pages through the latest audit's gaps with opaque tokens."""

    async def test_pages_follow_tokens_in_order(self, make_settings, start_replica, database):
        """page_size=1 walks every gap once, ordered by symbol, timeframe, start."""
        settings = make_settings()
        _, expected = await seed(settings)
        await seed(settings, "ETHUSDT")
        replica = await start_replica(settings)
        await replica.stub.RunAudit(window_request(timeframes=["1m"]), timeout=TIMEOUT)
        seen: list[tuple[str, str, int]] = []
        token = ""
        for _ in range(10):
            page = await replica.stub.ListGaps(
                pb.ListGapsRequest(page_size=1, page_token=token), timeout=TIMEOUT
            )
            seen += [(g.symbol, g.timeframe, g.start_time.seconds) for g in page.gaps]
            token = page.next_page_token
            if not token:
                break
        starts = [ms // 1000 for ms, _ in expected.gaps]
        assert seen == [("BTCUSDT", "1m", s) for s in starts] + [
            ("ETHUSDT", "1m", s) for s in starts
        ]
        high = await replica.stub.ListGaps(
            pb.ListGapsRequest(symbol="BTCUSDT", min_missing_candles=10), timeout=TIMEOUT
        )
        assert [g.missing_candles for g in high.gaps] == [90]
        assert high.gaps[0].severity == pb.SEVERITY_HIGH

    async def test_tampered_and_foreign_tokens_are_refused(
        self, make_settings, start_replica, database
    ):
        """A modified token, or one from another query, is INVALID_ARGUMENT on page_token."""
        settings = make_settings()
        await seed(settings)
        replica = await start_replica(settings)
        await replica.stub.RunAudit(window_request(), timeout=TIMEOUT)
        page = await replica.stub.ListGaps(pb.ListGapsRequest(page_size=1), timeout=TIMEOUT)
        token = page.next_page_token
        assert token
        tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
        for request in (
            pb.ListGapsRequest(page_size=1, page_token=tampered),
            pb.ListGapsRequest(page_size=1, page_token=token, symbol="ETHUSDT"),
            pb.ListGapsRequest(page_token="not base64 !!"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await replica.stub.ListGaps(request, timeout=TIMEOUT)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "page_token" in err.value.details()

    async def test_token_forged_with_the_db_name_key_is_refused(
        self, make_settings, start_replica, database
    ):
        """The key is a per-deployment secret: the old db-name-derived key signs nothing."""
        settings = make_settings()
        await seed(settings)
        replica = await start_replica(settings)
        await replica.stub.RunAudit(window_request(), timeout=TIMEOUT)
        page = await replica.stub.ListGaps(pb.ListGapsRequest(page_size=1), timeout=TIMEOUT)
        raw = base64.urlsafe_b64decode(page.next_page_token + "==")
        body = raw[16:]  # a genuine body for this very query, re-signed with the guessable key
        guessed = hashlib.sha256(f"auditsvc-page-token:{settings.mongo.database}".encode())
        sig = hmac.new(guessed.digest(), body, hashlib.sha256).digest()[:16]
        forged = base64.urlsafe_b64encode(sig + body).decode().rstrip("=")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await replica.stub.ListGaps(
                pb.ListGapsRequest(page_size=1, page_token=forged), timeout=TIMEOUT
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "page_token: malformed or tampered page token"

    async def test_every_replica_accepts_every_token(self, make_settings, start_replica, database):
        """Replicas of one deployment share the stored secret: one's token pages on another."""
        settings = make_settings()
        await seed(settings)
        first = await start_replica(settings)
        second = await start_replica(make_settings(REPLICA_ID="second"))
        await first.stub.RunAudit(window_request(), timeout=TIMEOUT)
        page = await first.stub.ListGaps(pb.ListGapsRequest(page_size=1), timeout=TIMEOUT)
        assert page.next_page_token
        rest = await second.stub.ListGaps(
            pb.ListGapsRequest(page_size=1, page_token=page.next_page_token), timeout=TIMEOUT
        )
        assert rest.gaps and rest.gaps[0].start_time != page.gaps[0].start_time
        stored = await database.db["deployment_secrets"].find_one({"_id": "page_tokens"})
        assert stored is not None and len(stored["secret"]) >= 43


class TestResolveDuplicates:
    """Duplicates are reported, then archived whole before deletion, and restorable."""

    async def test_dry_run_then_removal_then_restore(self, make_settings, start_replica, database):
        """Dry run deletes nothing; removal archives each document; restore undoes it."""
        settings = make_settings(ENABLE_DUPLICATE_REMOVAL="true")
        docs, _ = await seed(settings)
        col = database.db[settings.audit.collection_for("BTCUSDT", "1m")]
        replica = await start_replica(settings)
        base = {
            "symbol": "BTCUSDT",
            "timeframe": "1m",
            "start_time": ts(END_MS - SLOTS * 60_000),
            "end_time": ts(END_MS),
        }
        dry = await replica.stub.ResolveDuplicates(
            pb.ResolveDuplicatesRequest(**base, dry_run=True), timeout=TIMEOUT
        )
        assert (dry.duplicate_groups, dry.documents_removed) == (3, 0)
        assert await col.count_documents({}) == len(docs)
        real = await replica.stub.ResolveDuplicates(
            pb.ResolveDuplicatesRequest(**base, request_id="dedupe-1"), timeout=TIMEOUT
        )
        assert (real.documents_removed, real.documents_archived) == (3, 3)
        assert real.strategy == pb.STRATEGY_KEEP_NEWEST
        assert await col.count_documents({}) == len(docs) - 3
        archived = (
            await database.db["duplicate_archive"].find({"request_id": "dedupe-1"}).to_list(None)
        )
        removed = {rid for g in real.groups for rid in g.removed_ids}
        assert {str(a["document"]["_id"]) for a in archived} == removed
        assert all(a["kept_id"] != a["document"]["_id"] and a["epoch"] == 0 for a in archived)
        # Keep-newest keeps the greatest ObjectId of each group.
        assert all(g.kept_id == max(g.document_ids) for g in real.groups)
        log = await database.db["audit_log"].find({"request_id": "dedupe-1"}).to_list(None)
        assert sum(entry["deleted"] for entry in log) == 3

        proc = await asyncio.create_subprocess_exec(
            *_auditsvc(),
            "restore-duplicates",
            "--request-id",
            "dedupe-1",
            env=_env(settings),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 0, out
        originals = sorted(str(d["_id"]) for d in docs)
        now = sorted(str(d["_id"]) for d in await col.find({}, {"_id": 1}).to_list(None))
        assert now == originals

    async def test_removal_disabled_reports_only(self, make_settings, start_replica, database):
        """With ENABLE_DUPLICATE_REMOVAL=false a real request removes nothing and says so."""
        settings = make_settings()
        docs, _ = await seed(settings)
        replica = await start_replica(settings)
        reply = await replica.stub.ResolveDuplicates(
            pb.ResolveDuplicatesRequest(
                symbol="BTCUSDT",
                timeframe="1m",
                start_time=ts(END_MS - SLOTS * 60_000),
                end_time=ts(END_MS),
            ),
            timeout=TIMEOUT,
        )
        assert reply.documents_removed == 0 and not reply.removal_enabled
        assert "disabled" in reply.message
        col = database.db[settings.audit.collection_for("BTCUSDT", "1m")]
        assert await col.count_documents({}) == len(docs)


class TestBackfill:
    """Long gaps get one backfill request each, within the open-request cap."""

    async def test_one_request_per_gap_and_cap(self, make_settings, start_replica, database):
        """Two audits write one request per qualifying gap; the cap is honoured."""
        settings = make_settings(
            ENABLE_AUTO_BACKFILL="true", MIN_AUTO_BACKFILL_GAP="60", MAX_AUTO_BACKFILL_JOBS="3"
        )
        await seed(settings)
        await seed(settings, "ETHUSDT")
        replica = await start_replica(settings)
        for _ in range(2):
            reply = await replica.stub.RunAudit(window_request(timeframes=["1m"]), timeout=TIMEOUT)
        requests = await database.db["backfill_requests"].find({}).to_list(None)
        assert len(requests) == 3  # four qualifying gaps, cap of three
        assert len({r["gap_key"] for r in requests}) == 3
        assert all(r["status"] == "pending" and r["epoch"] == 0 for r in requests)
        assert {r["priority"] for r in requests} == {1, 5}
        assert sum(s.backfills_skipped for s in reply.cycle.series) == 1
        gaps = await replica.stub.ListGaps(pb.ListGapsRequest(), timeout=TIMEOUT)
        linked = {g.backfill_request_id for g in gaps.gaps if g.backfill_request_id}
        assert linked == {r["request_id"] for r in requests}


def _auditsvc() -> list[str]:
    import sys

    return [sys.executable, "-m", "auditsvc"]


def _env(settings: Any) -> dict[str, str]:
    from tests.support import process_env, replica_env

    return process_env(replica_env(settings.mongo.uri, settings.mongo.database))
