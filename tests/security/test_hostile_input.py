"""Hostile input against a real in-process replica over the real wire.

Hypothesis generates requests for every RPC: random and huge lists, long and
odd strings (unicode, NUL), timestamps at and beyond the Timestamp range,
unknown enum numbers, tampered and foreign page tokens, page_size and
min_missing_candles extremes, and raw frames that are not protobuf at all.
Whatever arrives, the answer must be a deliberate status: OK, INVALID_ARGUMENT,
NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, or UNAVAILABLE for a
database problem; never UNKNOWN, INTERNAL or a traceback on the wire.

The generated tests share one seeded replica and one event loop for the module
(``loop_scope="module"``), so the last test checks that the very replica that
took every input is still healthy, and prints the tally (visible with ``-s``).

``TestFormerBugs`` keeps the exact inputs that once got INTERNAL or UNKNOWN
(windows at the edges of years 1 and 9999, forged page-token bodies,
undecodable frames), so they stay fixed.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, currently_in_test_context, given, note, settings
from hypothesis import strategies as st

from auditpb.v1 import audit_pb2 as pb
from auditpb.v1 import audit_pb2_grpc as pb_grpc
from auditsvc.app import App
from auditsvc.devtools.demo import demo_series
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo.database import connect
from auditsvc.storage.mongo.secret_store import deployment_secret
from auditsvc.transport.server import SERVICE_NAME
from auditsvc.usecases.page_tokens import PageTokens
from tests.support import SecantusDB, eventually, replica_env

END_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
END_S = END_MS // 1000
CALL_TIMEOUT = 15.0
# Timestamp's valid range, 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
MIN_S = -62_135_596_800
MAX_S = 253_402_300_799
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT64_MAX = 2**64 - 1
# Anchors for generated windows, this far from the edges of years 1 and 9999.
EDGE_MARGIN_S = 5 * 366 * 86_400

Code = grpc.StatusCode
ALLOWED = frozenset(
    {
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.FAILED_PRECONDITION,
        Code.RESOURCE_EXHAUSTED,
        Code.UNAVAILABLE,
    }
)
# Tally of every input sent, by RPC, and of the codes that came back.
TRIED: collections.Counter[str] = collections.Counter()
CODES: collections.Counter[str] = collections.Counter()
MIN_INPUTS = 500

HYPOTHESIS: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
}


# --------------------------------------------------------------------------- checks


async def outcome(what: str, request: Message, call: Awaitable[Any]) -> grpc.StatusCode:
    """Awaits one unary call (bounded) and checks its status is a deliberate one."""
    TRIED[what] += 1
    try:
        await asyncio.wait_for(call, CALL_TIMEOUT + 5)
    except grpc.aio.AioRpcError as exc:
        return judge(what, exc.code(), exc.details() or "", sent=str(request))
    return judge(what, Code.OK, "")


def judge(what: str, code: grpc.StatusCode, details: str, sent: str = "") -> grpc.StatusCode:
    """Asserts the status is allowed and carries no traceback (beyond what the caller sent)."""
    CODES[code.name if code in ALLOWED else f"{code.name} ({what})"] += 1
    if currently_in_test_context():
        note(f"{what} -> {code.name}: {details[:300]!r}")
    assert code in ALLOWED, f"{what} answered {code.name}: {details!r}"
    for marker in ("Traceback", 'File "', "site-packages"):
        # Details may quote the caller's own (truncated, repr'd) input back.
        assert marker not in details or marker in sent, f"{what} leaked {marker!r}: {details!r}"
    if code == Code.UNAVAILABLE:
        # The database is up for the whole module: any other UNAVAILABLE is a lie.
        assert "database" in details, f"{what} answered UNAVAILABLE: {details!r}"
    return code


async def stream_outcome(stub: Any, request: pb.StreamHealthScoresRequest) -> grpc.StatusCode:
    """Opens a health stream, reads the first message (or waits briefly), then cancels."""
    TRIED["StreamHealthScores"] += 1
    call = stub.StreamHealthScores(request, timeout=CALL_TIMEOUT)
    try:
        await asyncio.wait_for(call.read(), 0.25)
    except TimeoutError:
        # Open and quiet: the filter matched no current score. That is OK.
        return judge("StreamHealthScores", Code.OK, "")
    except grpc.aio.AioRpcError as exc:
        return judge("StreamHealthScores", exc.code(), exc.details() or "", sent=str(request))
    finally:
        call.cancel()
    return judge("StreamHealthScores", Code.OK, "")


BAD_FRAMES = {
    "truncated varint": b"\x08",
    "length past the end": b"\x0a\xff\xff\xff\xff\x0f",
    "invalid utf-8 string": b"\x0a\x02\xff\xfe",
    "timestamp with truncated varint": b"\x1a\x05\x08\x80\x80\x80",
    "5000 nested groups": b"\x0b" * 5000,
    "end-group without start": b"\x0c",
    "11-byte tag": b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    "wire type 7": b"\x07\x00",
    "field number 0": b"\x00",
}


async def raw_call(channel: grpc.aio.Channel, method: str, frame: bytes) -> tuple[Code, str]:
    """Sends ``frame`` as the request of ``method`` with no serializer at all."""
    call = channel.unary_unary(
        f"/{SERVICE_NAME}/{method}", request_serializer=None, response_deserializer=None
    )
    TRIED["raw frame"] += 1
    try:
        await asyncio.wait_for(call(frame, timeout=CALL_TIMEOUT), CALL_TIMEOUT + 5)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return Code.OK, ""


def parses(method: str, frame: bytes) -> bool:
    try:
        getattr(pb, f"{method}Request").FromString(frame)
    except DecodeError:
        return False
    return True


# --------------------------------------------------------------------------- strategies

NAMED_STRINGS = [
    "",
    "BTCUSDT",
    "ETHUSDT",
    "btcusdt",
    "1m",
    "1h",
    "1d",
    "1w",
    "1M",
    "2m",
    " 1m",
    "1m ",
    "\x00",
    "BTCUSDT\x00",
    "1m\x00",
    "\x00" * 64,
    "$gt",
    '{"$ne": null}',
    "a.b",
    "$where",
    "../../etc/passwd",
    "%s%s%s%n",
    "{symbol}",
    "\u202eTDSUCTB",
    "\ufeffBTCUSDT",
    "B\u0301TCUSDT",
    "\U0001f600" * 16,
    "\ufffd",
    "Traceback (most recent call last):",
]


def _repeat(pair: tuple[str, int]) -> str:
    return pair[0] * pair[1]


TEXT = st.one_of(
    st.sampled_from(NAMED_STRINGS),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    # Long strings (some KB), including 4-byte UTF-8 sequences.
    st.tuples(
        st.sampled_from(["A", "\x00", "\U0001f600", "é", "BTCUSDT"]), st.integers(1, 6000)
    ).map(_repeat),
)


def nasty_lists(items: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    """Small random lists, a few thousand copies of one item, or thousands of distinct ones."""
    return st.one_of(
        st.lists(items, max_size=8),
        st.tuples(items, st.integers(0, 3000)).map(lambda t: [t[0]] * t[1]),
        st.integers(0, 3000).map(lambda n: [f"S{i}\x00{'x' * (i % 50)}" for i in range(n)]),
        st.integers(0, 3000).map(lambda n: ["BTCUSDT", "ETHUSDT"] * n),
        st.integers(0, 3000).map(lambda n: ["1m", "1h", "1M"] * n),
        # Up to ~12 MB: past the 4 MiB default limit -> RESOURCE_EXHAUSTED.
        st.tuples(st.integers(1, 3000), st.integers(1, 4096)).map(lambda t: ["z" * t[1]] * t[0]),
    )


SECONDS = st.one_of(
    st.sampled_from(
        [MIN_S, MIN_S - 1, MIN_S + 59, MAX_S, MAX_S + 1, MAX_S - 59, 0, -1, END_S, *INT64]
    ),
    st.integers(MIN_S, MAX_S),
    st.integers(*INT64),
)
NANOS = st.one_of(st.sampled_from([0, -1, 999_999_999, 1_000_000_000, *INT32]), st.integers(*INT32))
STAMP = st.builds(Timestamp, seconds=SECONDS, nanos=NANOS)
OPTIONAL_STAMP = st.none() | STAMP
ERA_ANCHORS = (MIN_S, 0, END_S - 86_400, MAX_S - 86_400)
SAFE_ANCHORS = (MIN_S + EDGE_MARGIN_S + 86_400 * 60, 0, END_S - 86_400, MAX_S - EDGE_MARGIN_S)


def windows(anchors: tuple[int, ...] = ERA_ANCHORS) -> st.SearchStrategy[Any]:
    """Independent extreme stamps, or a short window anchored at year 1, 1970, now or 9999."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[Timestamp | None, Timestamp | None]:
        if draw(st.booleans()):
            return draw(OPTIONAL_STAMP), draw(OPTIONAL_STAMP)
        start = draw(st.sampled_from(anchors)) + draw(st.integers(-40 * 86_400, 40 * 86_400))
        length = draw(st.integers(-3600, 60 * 86_400))
        nanos = draw(st.sampled_from([0, 0, 999_999_999, -1, 1_000_000_000]))
        start_ts = Timestamp(seconds=start, nanos=nanos)
        end_ts = Timestamp(seconds=start + length)
        return (start_ts if draw(st.booleans()) else None), end_ts

    return build()


ENUMS = st.one_of(st.sampled_from([0, 1, 2, 3, 4, -1, *INT32]), st.integers(*INT32))
PAGE_SIZES = st.one_of(st.sampled_from([0, 1, 2, 1000, 1001, -1, *INT32]), st.integers(*INT32))
MIN_MISSING = st.one_of(
    st.sampled_from([0, 1, 3, 90, 91, 2**31, 2**53 + 1, INT64[1], INT64[1] + 1, UINT64_MAX]),
    st.integers(0, UINT64_MAX),
)
REQUEST_IDS = st.one_of(
    st.just(""),
    st.text(min_size=1, max_size=130),
    st.integers(120, 5000).map(lambda n: "r" * n),
    st.sampled_from(["\x00", "a\x00b", "$id", "run:x", "\U0001f600" * 40, "\U0001f600" * 129]),
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def mutate(token: str, how: int, at: int, text: str) -> str:
    """One of several edits of a real token: flip, drop, insert, truncate, re-sign..."""
    i = at % len(token)
    edits: list[Callable[[], str]] = [
        lambda: token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :],
        lambda: token[:i] + token[i + 1 :],
        lambda: token[:i] + text + token[i:],
        lambda: token[:i],
        lambda: token + "==",
        lambda: token + (text or "A") * 3000,
        lambda: token.upper(),
        lambda: token[::-1],
        lambda: _b64(_unb64(token)[:16] + b"{}"),  # old signature, new body
        lambda: _b64(_unb64(token)[16:]),  # body without signature
        lambda: _b64(_unb64(token)[:16] + _unb64(token)[16:].replace(b"1m", b"1h")),
        lambda: token.replace("-", "+").replace("_", "/"),
    ]
    return edits[how % len(edits)]()


# --------------------------------------------------------------------------- fixtures


class Hostile:
    """The shared replica under attack, plus real page tokens harvested from it."""

    def __init__(self, app: App, channel: grpc.aio.Channel, settings: Settings) -> None:
        self.app = app
        self.channel = channel
        self.settings = settings
        self.tokens: list[str] = []

    @property
    def stub(self) -> Any:
        return pb_grpc.AuditServiceStub(self.channel)

    def __repr__(self) -> str:  # keeps Hypothesis' failure reports readable
        return f"Hostile(port={self.app.server.port}, tokens={len(self.tokens)})"


def ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


async def seed(settings: Settings, symbol: str, timeframe: str, slots: int) -> None:
    docs, _ = demo_series(symbol, timeframe, END_MS, slots)
    database = connect(settings.mongo.uri, settings.mongo.database, 2000)
    try:
        await database.db[settings.audit.collection_for(symbol, timeframe)].insert_many(docs)
    finally:
        await database.close()


def hostile_settings(mongo: SecantusDB, **overrides: str) -> Settings:
    env = {
        "AUDIT_SYMBOLS": "BTCUSDT,ETHUSDT",
        "AUDIT_TIMEFRAMES": "1m,1h,1d,1w,1M",
        # Small enough that every accepted window audits quickly.
        "AUDIT_MAX_RANGE_CANDLES": "20000",
        "ENABLE_DUPLICATE_REMOVAL": "true",
        "ENABLE_AUTO_BACKFILL": "true",
        "MIN_AUTO_BACKFILL_GAP": "60",
        "MAX_AUTO_BACKFILL_JOBS": "1000",
        **overrides,
    }
    return Settings.from_env(replica_env(mongo.uri, f"sec_{uuid.uuid4().hex[:12]}", **env))


@contextlib.asynccontextmanager
async def open_hostile(mongo: SecantusDB) -> AsyncIterator[Hostile]:
    """A seeded, audited replica with real page tokens; stopped on exit."""
    s = hostile_settings(mongo)
    await seed(s, "BTCUSDT", "1m", 1440)
    await seed(s, "ETHUSDT", "1m", 1440)
    await seed(s, "ETHUSDT", "1h", 240)
    app = App(s)
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}")
    target = Hostile(app, channel, s)
    try:
        await eventually(lambda: _ready(app), within=15)
        stub = target.stub
        window = {"start_time": ts(END_MS - 1440 * 60_000), "end_time": ts(END_MS)}
        await stub.RunAudit(pb.RunAuditRequest(timeframes=["1m"], **window), timeout=CALL_TIMEOUT)
        await stub.RunAudit(
            pb.RunAuditRequest(
                symbols=["ETHUSDT"],
                timeframes=["1h"],
                start_time=ts(END_MS - 240 * 3_600_000),
                end_time=ts(END_MS),
            ),
            timeout=CALL_TIMEOUT,
        )
        # Real tokens from several different queries: each is foreign to the others.
        for request in (
            pb.ListGapsRequest(page_size=1),
            pb.ListGapsRequest(page_size=2),
            pb.ListGapsRequest(page_size=1, symbol="BTCUSDT"),
            pb.ListGapsRequest(page_size=1, timeframe="1m"),
            pb.ListGapsRequest(page_size=1, min_missing_candles=2),
            pb.ListGapsRequest(page_size=1, start_time=ts(0)),
        ):
            reply = await stub.ListGaps(request, timeout=CALL_TIMEOUT)
            if reply.next_page_token:
                target.tokens.append(reply.next_page_token)
                follow = pb.ListGapsRequest()
                follow.CopyFrom(request)
                follow.page_token = reply.next_page_token
                again = await stub.ListGaps(follow, timeout=CALL_TIMEOUT)
                if again.next_page_token:
                    target.tokens.append(again.next_page_token)
        assert len(target.tokens) >= 4, target.tokens
        yield target
    finally:
        await channel.close()
        await app.stop()


async def _ready(app: App) -> bool:
    return app.ready


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hostile(mongo: SecantusDB) -> AsyncIterator[Hostile]:
    async with open_hostile(mongo) as target:
        yield target


# --------------------------------------------------------------------------- fixed cases


class TestMessageSizeLimit:
    """Requests above GRPC_MAX_MESSAGE_BYTES are refused with RESOURCE_EXHAUSTED."""

    @pytest.mark.parametrize(
        ("method", "request_msg"),
        [
            ("RunAudit", pb.RunAuditRequest(symbols=["S" * 1024] * 80)),
            ("ListGaps", pb.ListGapsRequest(symbol="S" * 70_000)),
            ("ResolveDuplicates", pb.ResolveDuplicatesRequest(request_id="r" * 70_000)),
            ("StreamHealthScores", pb.StreamHealthScoresRequest(timeframes=["1m"] * 30_000)),
        ],
    )
    async def test_oversized_request(self, make_settings, start_replica, method, request_msg):
        """A request past a 64 KiB limit is RESOURCE_EXHAUSTED and the replica lives on."""
        replica = await start_replica(make_settings(GRPC_MAX_MESSAGE_BYTES="65536"))
        assert request_msg.ByteSize() > 65536
        call = getattr(replica.stub, method)(request_msg, timeout=CALL_TIMEOUT)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            if method == "StreamHealthScores":
                await asyncio.wait_for(call.read(), CALL_TIMEOUT)
            else:
                await asyncio.wait_for(call, CALL_TIMEOUT + 5)
        assert err.value.code() == Code.RESOURCE_EXHAUSTED, err.value.details()
        assert "Traceback" not in (err.value.details() or "")
        TRIED[f"oversized {method}"] += 1
        # Just under the limit: decoded and answered (an unconfigured symbol: NOT_FOUND).
        small = pb.ListGapsRequest(symbol="S" * 60_000)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await replica.stub.ListGaps(small, timeout=CALL_TIMEOUT)
        assert err.value.code() == Code.NOT_FOUND, err.value.details()


class TestRequestIdReuse:
    """A request_id is bound to the first body it was used with."""

    async def test_reuse_with_different_body(self, make_settings, start_replica):
        """RunAudit reused with another window is FAILED_PRECONDITION naming request_id."""
        s = make_settings()
        await seed(s, "BTCUSDT", "1m", 240)
        replica = await start_replica(s)
        window = {"start_time": ts(END_MS - 240 * 60_000), "end_time": ts(END_MS)}
        first = pb.RunAuditRequest(timeframes=["1m"], request_id="\x00same\U0001f600", **window)
        await asyncio.wait_for(replica.stub.RunAudit(first, timeout=CALL_TIMEOUT), 20)
        first.end_time.CopyFrom(ts(END_MS - 60_000))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(replica.stub.RunAudit(first, timeout=CALL_TIMEOUT), 20)
        assert err.value.code() == Code.FAILED_PRECONDITION
        assert "request_id" in err.value.details()
        too_long = pb.RunAuditRequest(timeframes=["1m"], request_id="r" * 129, **window)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(replica.stub.RunAudit(too_long, timeout=CALL_TIMEOUT), 20)
        assert err.value.code() == Code.INVALID_ARGUMENT
        TRIED["RunAudit"] += 3


# --------------------------------------------------------------------------- generated input


@pytest.mark.asyncio(loop_scope="module")
class TestGeneratedRequests:
    """Generated requests for every RPC only ever get deliberate status codes."""

    @settings(max_examples=60, **HYPOTHESIS)
    @given(
        symbols=nasty_lists(TEXT),
        timeframes=nasty_lists(TEXT),
        window=windows(SAFE_ANCHORS),
        request_id=REQUEST_IDS,
    )
    async def test_run_audit(self, hostile, symbols, timeframes, window, request_id):
        """RunAudit with hostile lists, windows and request ids."""
        start, end = window
        request = pb.RunAuditRequest(
            symbols=symbols,
            timeframes=timeframes,
            start_time=start,
            end_time=end,
            request_id=request_id,
        )
        await outcome("RunAudit", request, hostile.stub.RunAudit(request, timeout=CALL_TIMEOUT))

    @settings(max_examples=50, **HYPOTHESIS)
    @given(
        symbols=st.lists(st.sampled_from(["BTCUSDT", "ETHUSDT"]), max_size=3),
        timeframes=st.lists(st.sampled_from(["1m", "1h", "1d", "1w", "1M"]), max_size=3),
        window=windows(SAFE_ANCHORS),
    )
    async def test_run_audit_real_series(self, hostile, symbols, timeframes, window):
        """RunAudit of configured series over windows near years 6, 1970, now and 9994."""
        start, end = window
        request = pb.RunAuditRequest(
            symbols=symbols, timeframes=timeframes, start_time=start, end_time=end
        )
        await outcome("RunAudit", request, hostile.stub.RunAudit(request, timeout=CALL_TIMEOUT))

    @settings(max_examples=150, **HYPOTHESIS)
    @given(
        symbol=TEXT,
        timeframe=TEXT,
        window=windows(),
        min_missing=MIN_MISSING,
        page_size=PAGE_SIZES,
        data=st.data(),
    )
    async def test_list_gaps(
        self, hostile, symbol, timeframe, window, min_missing, page_size, data
    ):
        """ListGaps with hostile filters, sizes and real, foreign, tampered or random tokens."""
        real = st.sampled_from(hostile.tokens)
        page_token = data.draw(
            st.one_of(
                st.just(""),
                real,
                st.builds(mutate, real, st.integers(0, 100), st.integers(0, 10_000), TEXT),
                st.binary(max_size=300).map(_b64),
                TEXT,
            ),
            label="page_token",
        )
        start, end = window
        request = pb.ListGapsRequest(
            symbol=symbol,
            timeframe=timeframe,
            start_time=start,
            end_time=end,
            min_missing_candles=min_missing,
            page_size=page_size,
            page_token=page_token,
        )
        await outcome("ListGaps", request, hostile.stub.ListGaps(request, timeout=CALL_TIMEOUT))

    @settings(max_examples=60, **HYPOTHESIS)
    @given(
        min_missing=MIN_MISSING,
        page_size=st.integers(0, 1000),
        window=windows(),
        token_index=st.integers(0, 100),
    )
    async def test_list_gaps_tokens_follow_filters(
        self, hostile, min_missing, page_size, window, token_index
    ):
        """A real token replayed with other filters gets a deliberate status, never worse."""
        start, end = window
        token = hostile.tokens[token_index % len(hostile.tokens)]
        request = pb.ListGapsRequest(
            start_time=start,
            end_time=end,
            min_missing_candles=min_missing,
            page_size=page_size,
            page_token=token,
        )
        await outcome("ListGaps", request, hostile.stub.ListGaps(request, timeout=CALL_TIMEOUT))

    @settings(max_examples=80, **HYPOTHESIS)
    @given(
        symbol=st.one_of(st.sampled_from(["BTCUSDT", "ETHUSDT"]), TEXT),
        timeframe=st.one_of(st.sampled_from(["1m", "1h", "1M", "1w"]), TEXT),
        window=windows(),
        strategy=ENUMS,
        dry_run=st.booleans(),
        request_id=REQUEST_IDS,
    )
    async def test_resolve_duplicates(
        self, hostile, symbol, timeframe, window, strategy, dry_run, request_id
    ):
        """ResolveDuplicates with hostile names, windows, enum numbers and request ids."""
        start, end = window
        request = pb.ResolveDuplicatesRequest(
            symbol=symbol,
            timeframe=timeframe,
            start_time=start,
            end_time=end,
            strategy=strategy,
            dry_run=dry_run,
            request_id=request_id,
        )
        await outcome(
            "ResolveDuplicates",
            request,
            hostile.stub.ResolveDuplicates(request, timeout=CALL_TIMEOUT),
        )

    @settings(max_examples=30, **HYPOTHESIS)
    @given(symbols=nasty_lists(TEXT), timeframes=nasty_lists(TEXT))
    async def test_stream_health_scores(self, hostile, symbols, timeframes):
        """StreamHealthScores with hostile filters opens cleanly or fails deliberately."""
        request = pb.StreamHealthScoresRequest(symbols=symbols, timeframes=timeframes)
        await stream_outcome(hostile.stub, request)

    @settings(max_examples=15, **HYPOTHESIS)
    @given(
        request_id=st.text(min_size=1, max_size=120),
        first_symbol=st.sampled_from(["BTCUSDT", "ETHUSDT"]),
        dry_run=st.booleans(),
    )
    async def test_request_id_reuse_with_another_body(
        self, hostile, request_id, first_symbol, dry_run
    ):
        """A request_id reused with a different body is FAILED_PRECONDITION, for both mutations."""
        stub = hostile.stub
        # A fresh prefix per example: a shrink re-run must not collide with itself.
        request_id = f"{uuid.uuid4().hex[:8]}{request_id}"[:128]
        other = "ETHUSDT" if first_symbol == "BTCUSDT" else "BTCUSDT"
        window = {"start_time": ts(END_MS - 60 * 60_000), "end_time": ts(END_MS)}
        first = pb.RunAuditRequest(
            symbols=[first_symbol], timeframes=["1m"], request_id=request_id, **window
        )
        assert await outcome("RunAudit", first, stub.RunAudit(first, timeout=CALL_TIMEOUT)) == (
            Code.OK
        )
        changed = pb.RunAuditRequest(
            symbols=[other], timeframes=["1m"], request_id=request_id, **window
        )
        code = await outcome("RunAudit", changed, stub.RunAudit(changed, timeout=CALL_TIMEOUT))
        assert code == Code.FAILED_PRECONDITION

        dedupe = pb.ResolveDuplicatesRequest(
            symbol=first_symbol, timeframe="1m", dry_run=dry_run, request_id=request_id, **window
        )
        code = await outcome(
            "ResolveDuplicates", dedupe, stub.ResolveDuplicates(dedupe, timeout=CALL_TIMEOUT)
        )
        assert code == Code.OK
        dedupe.dry_run = not dry_run
        code = await outcome(
            "ResolveDuplicates", dedupe, stub.ResolveDuplicates(dedupe, timeout=CALL_TIMEOUT)
        )
        assert code == Code.FAILED_PRECONDITION

    @settings(max_examples=120, **HYPOTHESIS)
    @given(
        method=st.sampled_from(
            ["GetLeader", "GetStatus", "RunAudit", "ListGaps", "ResolveDuplicates"]
        ),
        frame=st.one_of(st.binary(max_size=4096), st.sampled_from(list(BAD_FRAMES.values()))),
    )
    async def test_raw_frames(self, hostile, method, frame):
        """Bytes that may not be protobuf get a deliberate status, never UNKNOWN."""
        code, details = await raw_call(hostile.channel, method, frame)
        judge(f"raw {method}", code, details)


# --------------------------------------------------------------------------- known bugs


def _stamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


EDGE_REQUESTS = {
    "1M, end=0001-01-01, default start": pb.RunAuditRequest(
        timeframes=["1M"], end_time=_stamp(MIN_S)
    ),
    "1m, end=0001-01-01T00:01, default start": pb.RunAuditRequest(
        timeframes=["1m"], end_time=_stamp(MIN_S + 60)
    ),
    "1M, end=9999-12-31T23:59:59, default start": pb.RunAuditRequest(
        timeframes=["1M"], end_time=_stamp(MAX_S)
    ),
    "1d, last 3 days of 9999": pb.RunAuditRequest(
        timeframes=["1d"], start_time=_stamp(MAX_S - 3 * 86_400), end_time=_stamp(MAX_S)
    ),
    "1m, last hour of 9999": pb.RunAuditRequest(
        timeframes=["1m"], start_time=_stamp(MAX_S - 3600), end_time=_stamp(MAX_S)
    ),
    "1w, last 30 days of 9999": pb.RunAuditRequest(
        timeframes=["1w"], start_time=_stamp(MAX_S - 30 * 86_400), end_time=_stamp(MAX_S)
    ),
}


def _digest(*parts: object) -> str:
    """The filters digest a page token carries, as service.list_gaps and paging compute it."""
    filters = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()
    return hashlib.sha256(filters.encode()).hexdigest()[:16]


_F = _digest("", "", None, None, 0)  # ListGapsRequest() with no filters
FORGED_BODIES = {
    "not json": (b"not json", None),
    "not utf-8": (b"\xff\xfe", None),
    "a list": (b"[]", None),
    "null": (b"null", None),
    "a string": (b'"a"', None),
    "empty object": (b"{}", None),
    "no position": (json.dumps({"f": _F}).encode(), None),
    "empty position": (json.dumps({"f": _F, "a": []}).encode(), None),
    "short position": (json.dumps({"f": _F, "a": ["BTCUSDT", "1m"]}).encode(), None),
    "text start": (json.dumps({"f": _F, "a": ["BTCUSDT", "1m", "x"]}).encode(), None),
    "huge start": (json.dumps({"f": _F, "a": ["BTCUSDT", "1m", 10**30]}).encode(), None),
    "start before year 1": (
        json.dumps({"f": _F, "a": ["BTCUSDT", "1m", -(10**30)]}).encode(),
        None,
    ),
    "position is a number": (json.dumps({"f": _F, "a": 5}).encode(), None),
    # Not an injection: the decoded symbol is coerced to str before it reaches a query.
    "operator as symbol": (json.dumps({"f": _F, "a": [{"$gt": ""}, "1m", 0]}).encode(), None),
}


def _param(name: str, value: Any, mark: Any) -> Any:
    return pytest.param(value, id=name, marks=[mark] if mark else [])


@pytest.mark.asyncio(loop_scope="module")
class TestFormerBugs:
    """Inputs that once got INTERNAL or UNKNOWN now get a deliberate status."""

    @pytest.mark.parametrize("request_msg", list(EDGE_REQUESTS.values()), ids=list(EDGE_REQUESTS))
    async def test_run_audit_at_era_edges(self, hostile, request_msg):
        """RunAudit windows touching year 1 or year 9999 are refused or served, not INTERNAL."""
        call = hostile.stub.RunAudit(request_msg, timeout=CALL_TIMEOUT)
        await outcome("era edge: RunAudit", request_msg, call)

    @pytest.mark.parametrize(
        "body", [_param(name, body, mark) for name, (body, mark) in FORGED_BODIES.items()]
    )
    async def test_forged_page_token(self, hostile, body):
        """A token signed with the deployment's key but an odd body gets a deliberate status."""
        # Whoever can read the database can read the key and sign a token: its body
        # must still be checked.
        tokens = PageTokens(lambda: deployment_secret(hostile.app.database, "page_tokens"))
        token = _b64(await tokens._sign(body) + body)
        request = pb.ListGapsRequest(page_token=token)
        call = hostile.stub.ListGaps(request, timeout=CALL_TIMEOUT)
        await outcome("forged token", request, call)

    @pytest.mark.parametrize("frame", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
    async def test_undecodable_frame_is_invalid_argument(self, hostile, frame):
        """A frame that is not a valid request message is INVALID_ARGUMENT."""
        assert not parses("RunAudit", frame)
        code, details = await raw_call(hostile.channel, "RunAudit", frame)
        judge("raw RunAudit", code, details)
        assert code == Code.INVALID_ARGUMENT, (code, details)


# --------------------------------------------------------------------------- aftermath


@pytest.mark.asyncio(loop_scope="module")
class TestAftermath:
    """The replica that took every input above is still healthy."""

    async def test_server_still_healthy(self, hostile):
        """Liveness and readiness are SERVING, GetStatus answers; prints the tally."""
        health = health_pb2_grpc.HealthStub(hostile.channel)
        for service in ("", SERVICE_NAME):
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        status = await hostile.stub.GetStatus(pb.GetStatusRequest(), timeout=CALL_TIMEOUT)
        assert status.database_reachable
        assert status.replica_id == hostile.settings.server.replica_id
        await hostile.stub.ListGaps(pb.ListGapsRequest(page_size=1), timeout=CALL_TIMEOUT)
        total = sum(TRIED.values())
        print(
            f"\nhostile inputs tried: {total} "
            f"({', '.join(f'{k}={v}' for k, v in sorted(TRIED.items()))})"
            f"\nstatus codes seen: {dict(sorted(CODES.items()))}"
        )
        assert total >= MIN_INPUTS, TRIED
