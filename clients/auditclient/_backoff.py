"""Exponential backoff with jitter, and when a mutating call may be retried.

Guarantees: :func:`backoff_delay` never exceeds ``maximum`` and never falls below half
of the un-jittered delay; :func:`mutation_attempts` allows more than one attempt only
when the caller supplied the idempotency key itself, and only UNAVAILABLE is retried.
"""

from __future__ import annotations

import random

import grpc

RETRYABLE_MUTATION_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Return the sleep before retry ``attempt`` (0-based).

    That is ``initial * 2**attempt`` capped at ``maximum``, scaled by a random factor
    in [0.5, 1.0] so that clients do not reconnect in lockstep.
    """
    base = min(maximum, initial * 2.0 ** min(attempt, 32))
    return base * random.uniform(0.5, 1.0)


def mutation_attempts(caller_request_id: str | None, max_attempts: int) -> int:
    """Attempts for RunAudit/ResolveDuplicates: 1 unless the caller gave ``request_id``."""
    return max_attempts if caller_request_id is not None else 1
