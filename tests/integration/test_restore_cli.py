"""`auditsvc restore-duplicates`: an unknown request id is a distinct non-zero exit."""

from __future__ import annotations

import asyncio

from auditsvc.cli import EXIT_NOT_FOUND
from auditsvc.devtools.dbtools import EXIT_UNKNOWN_REQUEST
from tests.support import BIN, process_env, replica_env

TIMEOUT = 60.0


async def _restore(uri: str, database: str, request_id: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "auditsvc"),
        "restore-duplicates",
        "--request-id",
        request_id,
        env=process_env(replica_env(uri, database)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class TestUnknownRequestId:
    """A request id with nothing archived fails loudly instead of "restored 0"."""

    async def test_unknown_id_exits_with_its_own_code(self, mongo, db_name):
        """Exit EXIT_UNKNOWN_REQUEST, one stderr line naming the id, nothing on stdout."""
        code, out, err = await _restore(mongo.uri, db_name, "no-such-request")
        assert code == EXIT_UNKNOWN_REQUEST == EXIT_NOT_FOUND
        assert code not in (0, 1, 2, 3)
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "'no-such-request'" in lines[0], err
        assert "Traceback" not in err
