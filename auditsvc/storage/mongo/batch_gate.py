"""The gate of this process's fenced batches: one at a time, on the term's session.

Fenced batches of a term run one after another on one explicit session,
whose lsid is recorded in the lease when the term starts. A successor can then
``killSessions`` that one lsid to abort a batch its dead or paused predecessor
left open, releasing its locks at once instead of after the server's
transaction lifetime limit.

Renewals do not pass through this gate: the lease is never written inside a
batch, so a renewal never waits for a batch, however many are queued.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pymongo.errors import PyMongoError

from auditsvc.storage.mongo.database import Database


class BatchGate:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._lock = asyncio.Lock()
        self._session: Any = None

    async def new_term(self) -> Any:
        """Ends the previous term's session (after its running batch) and opens a new one.

        Returns the new session's lsid, to record in the lease.
        """
        async with self._lock:
            old, self._session = self._session, None
            if old is not None:
                with contextlib.suppress(PyMongoError):
                    await old.end_session()
            self._session = self._database.client.start_session()
            return self._session.session_id

    @property
    def session_id(self) -> Any:
        return None if self._session is None else self._session.session_id

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[Any]:
        """Holds the gate for one batch and yields the term's session."""
        async with self._lock:
            if self._session is None:
                # Fenced writes outside a recorded term (tools, tests): a session of their own.
                self._session = self._database.client.start_session()
            yield self._session

    async def close(self) -> None:
        async with self._lock:
            old, self._session = self._session, None
            if old is not None:
                with contextlib.suppress(PyMongoError):
                    await old.end_session()
