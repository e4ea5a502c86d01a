"""Is a TCP port free, and if not, who holds it.

``ensure_free`` tries a plain bind with SO_REUSEADDR, as the gRPC and metrics
servers do, so a port in TIME_WAIT counts as free and only a live listener
counts as busy. It raises ``PortInUse``, a ``ConfigError`` naming the variable
that chose the port, so the command line prints one line and exits 2.

``holder`` names the process that listens on a port by reading /proc
(Linux only; elsewhere, or for another user's process, it returns None).
The check and the real bind are two steps: a process that grabs the port in
between still fails the real bind, which callers map to the same error.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from auditsvc.ops.settings import ConfigError

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


class PortInUse(ConfigError):
    """Something already listens on the port a variable asks for."""

    def __init__(self, variable: str, host: str, port: int) -> None:
        who = holder(port)
        suffix = f" by {who}" if who else ""
        super().__init__(variable, f"{host}:{port} is already in use{suffix}")
        self.port = port


def ensure_free(variable: str, host: str, port: int) -> None:
    """Raises PortInUse if ``host:port`` is taken now, ConfigError if it cannot be
    bound for another reason (no such address, a privileged port); port 0 is free."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(variable, host, port) from None
            raise ConfigError(variable, f"cannot listen on {host}:{port}: {exc.strerror}") from None


def holder(port: int) -> str | None:
    """'pid N (command line)' of the process listening on TCP ``port``, if /proc tells."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
        except OSError:  # gone, or another user's process
            continue
        if links & {f"socket:[{inode}]" for inode in inodes}:
            return f"pid {proc.name} ({_cmdline(proc)})"
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _cmdline(proc: Path) -> str:
    try:
        raw = (proc / "cmdline").read_bytes()
    except OSError:
        return "?"
    text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return text[:120] or "?"
