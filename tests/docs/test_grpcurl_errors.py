"""The error example in docs/GRPCURL.md is what the real grpcurl prints against a
real replica: code, message and the AIP-193 details, line for line."""

from __future__ import annotations

import asyncio
import re
import shlex
import sys
from pathlib import Path

from tests.support import REPO

DOC = REPO / "docs" / "GRPCURL.md"
GRPCURL = Path(sys.executable).parent / "grpcurl"
DOC_TARGET = "127.0.0.1:50051"
NOT_FOUND_EXIT = 64 + 5


def error_example() -> tuple[str, list[str]]:
    """The `$ grpcurl ...` command of the example and the lines it documents."""
    section = DOC.read_text().split("## When a call fails", 1)[1]
    body = re.search(r"^```text\n(.*?)^```\s*$", section, flags=re.MULTILINE | re.DOTALL)
    assert body is not None, "no text block under 'When a call fails'"
    first, *rest = body.group(1).rstrip("\n").split("\n")
    assert first.startswith("$ grpcurl "), first
    return first[2:], rest


class TestGrpcurlErrorOutput:
    """grpcurl shows ErrorInfo and BadRequest for an auditsvc error, as documented."""

    async def test_documented_output_matches(self, make_settings, start_replica):
        """The documented command exits 69 and prints exactly the documented lines."""
        replica = await start_replica(make_settings())
        command, documented = error_example()
        args = [replica.target if a == DOC_TARGET else a for a in shlex.split(command)]
        args[0] = str(GRPCURL)
        process = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            async with asyncio.timeout(30):
                out, err = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await asyncio.wait_for(process.wait(), 10)
        assert process.returncode == NOT_FOUND_EXIT, (out, err)
        assert err.decode().rstrip("\n").split("\n") == documented
