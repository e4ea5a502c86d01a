"""Opaque, tamper-evident page tokens (ListGaps, ListHealthScores, ListAnomalies).

A token carries the last (symbol, timeframe, start) served (ListAnomalies: the
last finding's key, with its rule) and a digest of the
query's filters, signed with HMAC-SHA256 under a per-deployment secret
(``auditsvc.storage.mongo.secret_store``: random, generated once and stored in the database),
so every replica accepts every other's tokens and no client can forge one.
The signature detects edits and tokens replayed against another query; it does
not hide anything.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable

from auditsvc.domain.errors import InvalidArgument

_MAX_TOKEN = 2048
# A gap's start is a BSON date: 0001-01-01 .. 9999-12-31.
_FIRST_MS = -62_135_596_800_000
_LAST_MS = 253_402_300_799_999


class PageTokens:
    """Signs and checks page tokens; the secret is loaded once, on first use."""

    def __init__(self, secret: Callable[[], Awaitable[str]]) -> None:
        self._secret = secret
        self._key: asyncio.Future[bytes] | None = None

    async def _load(self) -> bytes:
        secret = await self._secret()
        return hashlib.sha256(f"auditsvc-page-token:{secret}".encode()).digest()

    async def _sign(self, payload: bytes) -> bytes:
        if self._key is None or (self._key.done() and self._key.exception() is not None):
            self._key = asyncio.ensure_future(self._load())  # single flight; failures retried
        key = await asyncio.shield(self._key)
        return hmac.new(key, payload, hashlib.sha256).digest()[:16]

    async def encode(self, filters: str, after: tuple[str, str, int]) -> str:
        return await self._encode(filters, list(after))

    async def encode_finding(self, filters: str, after: tuple[str, str, int, str]) -> str:
        """A token after one content finding's key (symbol, timeframe, open ms, rule)."""
        return await self._encode(filters, list(after))

    async def decode_finding(self, filters: str, token: str) -> tuple[str, str, int, str]:
        """The finding key a token from :meth:`encode_finding` carries."""
        found = await self._decode(filters, token, 4)
        rule = found[3]
        if not isinstance(rule, str) or len(rule) > 64:
            raise _bad()
        sym, tf, start = _checked(found[:3])
        return sym, tf, start, rule

    async def _encode(self, filters: str, after: list[object]) -> str:
        body = json.dumps(
            {"f": hashlib.sha256(filters.encode()).hexdigest()[:16], "a": after},
            separators=(",", ":"),
        ).encode()
        return base64.urlsafe_b64encode(await self._sign(body) + body).decode().rstrip("=")

    async def decode(self, filters: str, token: str) -> tuple[str, str, int]:
        return _checked(await self._decode(filters, token, 3))

    async def _decode(self, filters: str, token: str, size: int) -> list[object]:
        """The cursor's ``size`` items, after the signature and the filters are checked."""
        bad = _bad()
        if len(token) > _MAX_TOKEN:
            raise bad
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise bad from None
        sig, body = raw[:16], raw[16:]
        if len(sig) != 16 or not hmac.compare_digest(sig, await self._sign(body)):
            raise bad
        try:
            data = json.loads(body)
            digest, after = data["f"], data["a"]
        except (ValueError, TypeError, KeyError):
            raise bad from None
        if not isinstance(after, list) or len(after) != size:
            raise bad
        if digest != hashlib.sha256(filters.encode()).hexdigest()[:16]:
            raise InvalidArgument(
                "page token belongs to a different query; keep the same filters",
                field="page_token",
                reason="PAGE_TOKEN_QUERY_MISMATCH",
            )
        return after


def _bad() -> InvalidArgument:
    return InvalidArgument(
        "malformed or tampered page token", field="page_token", reason="INVALID_PAGE_TOKEN"
    )


def _checked(after: list[object]) -> tuple[str, str, int]:
    """(symbol, timeframe, instant) from a decoded cursor, or INVALID_PAGE_TOKEN."""
    sym, tf, start = after
    if not (
        isinstance(sym, str)
        and isinstance(tf, str)
        and type(start) is int
        and _FIRST_MS <= start <= _LAST_MS
    ):
        raise _bad()
    return sym, tf, start
