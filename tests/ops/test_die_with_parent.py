"""die_with_parent: a started command stops when its parent is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import psutil
import pytest

from tests.support import REPO

PARENT = """
import subprocess, sys, time
from auditsvc.devtools import die_with_parent
child = subprocess.Popen(die_with_parent.command(["sleep", "120"]))
print(child.pid, flush=True)
time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _runs_sleep(pid: int) -> bool:
    return psutil.Process(pid).cmdline()[:1] == ["sleep"]


def _until(check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within}s"
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_child_stops_when_the_parent_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())  # bounded by the test's timeout
        # The command runs in the wrapper's own process: same pid, its own argv.
        _until(lambda: _runs_sleep(child), within=10)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        _until(lambda: _gone(child), within=10)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        if child and not _gone(child):
            os.kill(child, signal.SIGKILL)
        if parent.stdout is not None:
            parent.stdout.close()
