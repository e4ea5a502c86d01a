"""A deployment that cannot acknowledge ``w: majority`` ends start-up with a clear
reason (issue 10, item 5), instead of leading with writes a failover could roll back.

SecantusDB acknowledges majority writes (it journals them, as a one-member replica
set does), so the refusal a real deployment gives (a ``writeConcernError``, here
UnsatisfiableWriteConcern as a mongod with arbiters answers) is injected at the
driver, on the start-up probe only; everything else talks to the real server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import WriteConcernError

from auditsvc.app import App

TIMEOUT = 30.0


async def test_start_up_fails_naming_majority(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve_until_signalled returns by itself; the failure names w:majority and the docs."""
    real_update_one = AsyncCollection.update_one
    probes: list[Any] = []

    async def refusing(self: AsyncCollection[Any], filter: Any, *args: Any, **kw: Any) -> Any:
        if str(filter.get("_id", "")).endswith("/majority-check"):
            probes.append(self.write_concern.document)
            raise WriteConcernError(
                "Not enough data-bearing nodes",
                100,
                {"code": 100, "codeName": "UnsatisfiableWriteConcern"},
            )
        return await real_update_one(self, filter, *args, **kw)

    monkeypatch.setattr(AsyncCollection, "update_one", refusing)
    app = App(make_settings(ENABLE_LEADER_ELECTION="true"))
    await asyncio.wait_for(app.serve_until_signalled(), TIMEOUT)
    assert probes and probes[0].get("w") == "majority"
    assert app.failure is not None
    assert "majority" in app.failure and "docs/AUDITOR.md" in app.failure
    assert not app.ready
