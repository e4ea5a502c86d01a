"""What a replica knows of the current leader from the leases it has seen.

``LeaderObserver`` records each live lease the elector sees (its own grants and,
as a follower, the holder's), so that forwarding and GetStatus can name the
leader without a database call.

Guarantees:

* **Bounded staleness.** A leader is reported only until the lease it was seen
  with would have expired, measured on the injected monotonic clock from when
  the call that returned the lease was *sent* (the database extended it at or
  after that moment, so the bound errs early, never late). After that
  ``last_known_address()`` and ``known_leader()`` answer '' ("no known
  leader"), never a stale name.
* **One notice per holder.** ``observe`` returns True, and logs, only when the
  holder identity (``REPLICA_ID/<uuid>``) changes, so a new process under the
  same REPLICA_ID is a new leader too; it warns when that holder shares this
  replica's REPLICA_ID but is another process (a twin, or our previous life).

Limits: it knows only what it was shown; it never reads the database, and a
lease it has not seen (a take-over between two rounds) is unknown to it until
the next round.
"""

from __future__ import annotations

import logging
import math

from auditsvc.ops.clock import Clock
from auditsvc.ops.metrics import Metrics
from auditsvc.storage.interfaces import Lease

# The elector's logger: operators (and docs/AUDITOR.md) find election events under it.
log = logging.getLogger("auditsvc.leadership.elector")


class LeaderObserver:
    """The last live leader seen, and until when (monotonic) it may still be named."""

    def __init__(self, clock: Clock, metrics: Metrics, replica_id: str, holder: str) -> None:
        self._clock = clock
        self._metrics = metrics
        self._replica_id = replica_id
        self._holder = holder
        # The epoch of the last lease seen (0 before any).
        self.epoch = 0
        self._leader_id = ""
        self._leader_holder = ""
        self._leader_address = ""
        self._leader_until = -math.inf

    def observe(self, lease: Lease, began: float) -> bool:
        """Records a live lease; ``began`` is when the call that returned it was sent.
        True when its holder differs from the last one seen."""
        self._leader_until = began + (lease.expires_ms - lease.now_ms) / 1000
        self._leader_address = lease.address
        self.epoch = lease.epoch
        self._metrics.epoch.set(lease.epoch)
        if lease.holder == self._leader_holder:
            return False
        self._leader_holder = lease.holder
        self._leader_id = lease.name
        log.info(
            "new leader observed",
            extra={"epoch": lease.epoch, "leader_id": lease.name, "holder": lease.holder},
        )
        if lease.name == self._replica_id and lease.holder != self._holder:
            log.warning(
                "another process holds the lease under this REPLICA_ID (%s): a twin with "
                "the same REPLICA_ID, or this replica's previous process; give every "
                "replica its own REPLICA_ID",
                lease.name,
                extra={"epoch": lease.epoch, "holder": lease.holder},
            )
        return True

    def lapsed(self) -> None:
        """The lease was read and is not live: no leader is known from now on."""
        self._leader_until = -math.inf

    def _live(self) -> bool:
        return bool(self._leader_id) and self._clock.monotonic() < self._leader_until

    def last_known_address(self) -> str:
        """The leader's address while its last seen lease may still hold, else ''."""
        return self._leader_address if self._live() else ""

    def last_seen_address(self) -> str:
        """The last leader's address ever observed, live or not ('' if none)."""
        return self._leader_address

    def known_leader(self) -> str:
        """The last observed live holder's id, '' once its lease would have expired."""
        return self._leader_id if self._live() else ""
