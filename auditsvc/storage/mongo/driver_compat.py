"""Keeps the async driver from locking up for good on Python 3.11.

PyMongo's asyncio client waits on its topology and pool conditions with
``asyncio.wait_for(condition.wait(), timeout)`` (``pymongo.lock._async_cond_wait``).
On Python 3.11, ``wait_for`` runs the wait in a task of its own, and a waiter
must take the condition's lock back before it returns, even when cancelled.
When callers are cancelled during server selection against a database that is
down (a ``wait_for`` of ours timing out, or guarded work cancelled at the end
of a term), the lock can end up held by that inner task after it has finished,
cancelled: seen here, the topology lock's holder was a done, cancelled
``Condition.wait`` task. Nothing releases it, so every later operation of that
client waits on the lock for ever, after the database has come back too.
Measured with SecantusDB: an outage with reads cut off by ``wait_for`` hung the
client in 3 of 3 runs, and a leader that lost its term in one never led again
(tests/cluster/test_db_faults.py, TestClientOutlivesCancelledCalls).

Python 3.12 rewrote ``wait_for`` on ``asyncio.timeout``, which runs the wait
in the caller's own task, so the lock is taken back in the task whose
``async with`` releases it. ``install()`` gives the driver that same
``wait_for`` on 3.11 (``asyncio.timeout`` exists there); with it the same runs
recover (3 of 3), as they do on 3.12 without it. It changes one module global
of the pinned driver and does nothing on 3.12 and later, or if the driver no
longer has that global (then the driver's own code runs unchanged).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

import pymongo.lock

log = logging.getLogger(__name__)

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109 (the driver calls it so)
    """``asyncio.wait_for`` on ``asyncio.timeout``, as Python 3.12 has it: the wait
    runs in the caller's task. A timeout of 0 or less expires at the first
    suspension (3.12 would first hand back an awaitable that is already done;
    the driver only passes condition waits, which always suspend)."""
    async with asyncio.timeout(timeout):
        return await aw


def needed() -> bool:
    """True where the driver's condition waits can leak a lock (Python < 3.12)."""
    return sys.version_info < (3, 12)


def install() -> bool:
    """Gives the driver the 3.12 ``wait_for`` where needed; idempotent.

    Returns True when the driver now uses it.
    """
    if not needed():
        return False
    module: Any = pymongo.lock
    current = getattr(module, "wait_for", None)
    if current is wait_for:
        return True
    if current is not asyncio.wait_for:
        log.warning(
            "the driver no longer waits with asyncio.wait_for; its condition waits are "
            "left as they are (see auditsvc.storage.mongo.driver_compat)"
        )
        return False
    module.wait_for = wait_for
    return True
