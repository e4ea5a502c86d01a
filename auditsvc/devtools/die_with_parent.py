"""Runs a command that the kernel stops when the process that started it dies.

``python -m auditsvc.devtools.die_with_parent PARENT_PID SIGNAL COMMAND [ARG ...]``
sets PR_SET_PDEATHSIG in its own process, checks that PARENT_PID is still its
parent (the parent may have died before the setting took), then execs COMMAND
in the same process, which keeps the setting. So a database or replica that a
test, the bench or ``make run`` starts is stopped whatever signal ends its
parent, SIGKILL included, and keeps its pid, so signals and waits reach it as
before.

Why a wrapper and not ``preexec_fn``: code run between fork and exec in a
threaded parent (pytest with gRPC and driver threads) segfaulted children
here; this runs in a fresh, single-threaded interpreter instead.

Limits: Linux only (elsewhere COMMAND simply runs). The kernel sends the signal
when the *thread* that started the process ends, so start it from the main
thread or from one that lives as long as the process. One interpreter start
(about 30 ms) per command.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1


def command(argv: Sequence[str], sig: int = signal.SIGTERM) -> list[str]:
    """``argv`` wrapped so that it gets ``sig`` when this process dies."""
    return [sys.executable, "-m", __name__, str(os.getpid()), str(int(sig)), *argv]


def main(args: Sequence[str]) -> None:
    if len(args) < 3:
        sys.exit("usage: python -m auditsvc.devtools.die_with_parent PARENT_PID SIGNAL COMMAND...")
    parent, sig, argv = int(args[0]), int(args[1]), list(args[2:])
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, sig) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            sys.exit(f"parent {parent} ended before {argv[0]} started")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
