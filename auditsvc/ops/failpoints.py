"""Named crash points for fault-injection tests.

``Failpoints.parse("dedupe.between_archive_and_delete=2")`` makes the second
hit of that point end the process at once (``os._exit``), the closest thing
to a SIGKILL at an exact line. ``name=N:stop`` instead stops the process with
SIGSTOP at that hit (a frozen process: a GC pause, a frozen VM), to be
continued or killed by the test. Production builds it from an empty string,
so every ``hit`` is a dictionary lookup and nothing else. The CLI reads
AUDITSVC_FAILPOINTS, which is for tests only and deliberately not in the
configuration table.

Points: ``dedupe.before_batch`` (groups decided, their batch not begun),
``dedupe.between_archive_and_delete``, ``dedupe.after_batch``, and in
every fenced batch ``fence.before_check``, ``fence.before_work``,
``fence.before_touch``, ``fence.before_commit`` (after the batch's last
write) and ``fence.after_commit``; ``leadership.before_take_office`` when a new
term has been granted, before it opens its session or kills its predecessor's.
Points that also *pause* for in-process interleaving tests (``await
reach(name)`` with a :class:`Gate` armed by ``gate(name)``):
``cycle.before_store`` (a cycle between its scan and its store),
``live.before_store`` (the live tail between its judgement and its store of a
state change) and ``live.take_office`` (a new leader's tail after its snapshot
of the newest candles, before its first judgement).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

log = logging.getLogger(__name__)

CRASH_EXIT_CODE = 137
MODES = ("exit", "stop")


class Failpoints:
    def __init__(self, armed: dict[str, int] | None = None, modes: dict[str, str] | None = None):
        self._armed = dict(armed or {})
        self._modes = dict(modes or {})
        self._hits: dict[str, int] = {}
        self._gates: dict[str, Gate] = {}

    @classmethod
    def parse(cls, spec: str) -> Failpoints:
        armed: dict[str, int] = {}
        modes: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, rest = item.partition("=")
            count, _, mode = rest.partition(":")
            if (mode or "exit") not in MODES:
                raise ValueError(f"failpoint {name}: unknown mode {mode!r}")
            armed[name.strip()] = int(count or "1")
            modes[name.strip()] = mode or "exit"
        return cls(armed, modes)

    def hit(self, name: str) -> None:
        if name not in self._armed:
            return
        self._hits[name] = self._hits.get(name, 0) + 1
        if self._hits[name] != self._armed[name]:
            return
        if self._modes.get(name) == "stop":
            log.warning("failpoint reached; stopping", extra={"failpoint": name})
            os.kill(os.getpid(), signal.SIGSTOP)
            return
        log.warning("failpoint reached; exiting", extra={"failpoint": name})
        logging.shutdown()
        os._exit(CRASH_EXIT_CODE)

    def gate(self, name: str) -> Gate:
        """Arms a pause at ``name`` for the next ``reach``; tests only."""
        gate = self._gates[name] = Gate()
        return gate

    async def reach(self, name: str) -> None:
        """``hit(name)``, then waits while a test holds the gate armed at ``name``
        (once: the gate is disarmed by the first caller)."""
        self.hit(name)
        gate = self._gates.pop(name, None)
        if gate is not None:
            gate.arrived.set()
            await gate.released.wait()


class Gate:
    """A pause at one point: ``arrived`` is set when the code gets there, and it
    goes on once the test sets ``released``."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.released = asyncio.Event()
