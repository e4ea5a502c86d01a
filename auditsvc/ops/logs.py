"""JSON-lines logging on stdout: one event per line, every line tagged with
replica_id; epoch and cycle_id travel in ``extra``. Secrets never reach a
formatter because no code passes them to a logger; ``redact`` guards the rest.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, replica_id: str, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._replica_id = replica_id
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            "replica_id": self._replica_id,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                event[key] = value
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(event, default=str))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text


def configure(level: str, replica_id: str, secrets: tuple[str, ...] = ()) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(replica_id, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The driver's own debug chatter is not ours to ship.
    logging.getLogger("pymongo").setLevel(max(logging.INFO, root.level))
