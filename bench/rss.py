"""Peak resident memory of another process, sampled from a thread with psutil."""

from __future__ import annotations

import threading
from types import TracebackType

import psutil

MB = 1024 * 1024


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / MB


class PeakRSS:
    """``with PeakRSS(pid) as peak: ...`` then ``peak.peak_mb`` (sampled every ``interval`` s)."""

    def __init__(self, pid: int, interval: float = 0.002) -> None:
        self._proc = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self.peak = 0
        self.samples = 0

    def _sample(self) -> None:
        try:
            rss = self._proc.memory_info().rss
        except psutil.Error:
            return
        self.samples += 1
        self.peak = max(self.peak, rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRSS:
        self._sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def peak_mb(self) -> float:
        return self.peak / MB


def established_to(pid: int, port: int) -> int:
    """ESTABLISHED TCP connections from ``pid`` to local ``port``."""
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return sum(
        1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == port
    )
