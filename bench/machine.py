"""The machine and the versions a run measured, for the report header."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

import psutil


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "cpu_model": cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
    }


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(build_info: dict[str, Any], server_kind: str) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "auditsvc": _version("auditsvc"),
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "pymongo": _version("pymongo"),
        "psutil": _version("psutil"),
        "server": server_kind,
        "server_version": str(build_info.get("version", "unknown")),
        "secantusdb": _version("secantusdb") if server_kind == "SecantusDB" else "",
    }
