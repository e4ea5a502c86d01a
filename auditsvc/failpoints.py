"""Named crash points for fault-injection tests.

``Failpoints.parse("dedupe.between_archive_and_delete=2")`` makes the second
hit of that point end the process at once (``os._exit``), the closest thing
to a SIGKILL at an exact line. Production builds it from an empty string, so
every ``hit`` is a dictionary lookup and nothing else. The CLI reads
AUDITSVC_FAILPOINTS, which is for tests only and deliberately not in the
configuration table.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

CRASH_EXIT_CODE = 137


class Failpoints:
    def __init__(self, armed: dict[str, int] | None = None) -> None:
        self._armed = dict(armed or {})
        self._hits: dict[str, int] = {}

    @classmethod
    def parse(cls, spec: str) -> Failpoints:
        armed: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, count = item.partition("=")
            armed[name.strip()] = int(count or "1")
        return cls(armed)

    def hit(self, name: str) -> None:
        if name not in self._armed:
            return
        self._hits[name] = self._hits.get(name, 0) + 1
        if self._hits[name] == self._armed[name]:
            log.warning("failpoint reached; exiting", extra={"failpoint": name})
            logging.shutdown()
            os._exit(CRASH_EXIT_CODE)
