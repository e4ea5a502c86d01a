"""driver_compat: the driver's condition waits run in the caller's task on 3.11."""

from __future__ import annotations

import asyncio
import sys

import pymongo.lock
import pytest

from auditsvc.storage.mongo import driver_compat


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="only 3.11's wait_for leaks the lock")
def test_install_replaces_the_drivers_wait_for_once() -> None:
    assert driver_compat.install() is True
    assert pymongo.lock.wait_for is driver_compat.wait_for
    assert driver_compat.install() is True


async def test_a_cancelled_condition_wait_leaves_the_lock_free() -> None:
    """The cancellation reaches the caller (3.11's wait_for can swallow one that lands
    as the wait is woken), and the lock is taken back and freed by its ``async with``."""
    condition = pymongo.lock._async_create_condition(pymongo.lock._async_create_lock())

    async def waiter() -> None:
        async with condition:
            await driver_compat.wait_for(condition.wait(), 5)

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.01)
    async with condition:
        condition.notify_all()
        task.cancel()  # cancelled just as it is woken, while it waits for the lock
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert not condition.locked()


async def test_times_out_like_asyncio() -> None:
    with pytest.raises(TimeoutError):
        await driver_compat.wait_for(asyncio.sleep(5), 0.01)
    assert await driver_compat.wait_for(asyncio.sleep(0, "done"), None) == "done"
