"""Which document of a duplicate group survives, and a total order over ids.

Guarantees:

* :func:`compare_values` is a total order over arbitrary values that never
  raises: values of the same type compare natively (so bson ObjectIds, ints and
  strs order as their own types do); anything else, including same-typed values
  that refuse to compare, orders by fully qualified type name, then ``str()``.
* :func:`resolve` is deterministic: given distinct doc_ids, the same refs in
  any order give the same :class:`Resolution`. KEEP_NEWEST keeps the greatest ref by (has a version,
  version, doc_id); KEEP_OLDEST keeps the least by that same ordering.
* ``Resolution.removed`` is every other ref, ordered by doc_id ascending.

Limits: MANUAL is never resolved here (callers only report it), so it raises
ValueError, as do groups of fewer than two refs or with mixed timestamps.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from auditsvc.domain.values import CandleRef, Resolution, Strategy


def _type_name(value: object) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        # A broken __str__ must not abort a cleanup; fall back to the type alone.
        return f"<{_type_name(value)}>"


def _sign(less: bool, greater: bool) -> int:
    return -1 if less else (1 if greater else 0)


def compare_values(a: object, b: object) -> int:
    """-1, 0 or 1 as ``a`` orders before, with, or after ``b``. Never raises."""
    if type(a) is type(b):
        try:
            native = _sign(bool(a < b), bool(b < a))  # type: ignore[operator]
        except Exception:
            native = 0
        if native:
            return native
    else:
        by_type = _sign(_type_name(a) < _type_name(b), _type_name(b) < _type_name(a))
        if by_type:
            return by_type
    sa, sb = _safe_str(a), _safe_str(b)
    return _sign(sa < sb, sb < sa)


value_key = functools.cmp_to_key(compare_values)


def sort_ids(ids: Iterable[object]) -> list[object]:
    """``ids`` sorted ascending by :func:`compare_values`."""
    return sorted(ids, key=value_key)


def _compare_refs(a: CandleRef, b: CandleRef) -> int:
    # Any version outranks no version: a versioned write is known to be newer.
    if (a.version is None) != (b.version is None):
        return -1 if a.version is None else 1
    if a.version is not None:
        by_version = compare_values(a.version, b.version)
        if by_version:
            return by_version
    return compare_values(a.doc_id, b.doc_id)


_ref_key = functools.cmp_to_key(_compare_refs)


def resolve(strategy: Strategy, refs: Sequence[CandleRef]) -> Resolution:
    """Pick the survivor of one duplicate group (>= 2 refs, same timestamp)."""
    if strategy is Strategy.MANUAL:
        raise ValueError("manual duplicates are reported, never resolved automatically")
    if len(refs) < 2:
        raise ValueError(f"a duplicate group needs at least 2 refs, got {len(refs)}")
    timestamp = refs[0].timestamp_ms
    if any(r.timestamp_ms != timestamp for r in refs):
        raise ValueError("a duplicate group must share one timestamp")
    pick = max if strategy is Strategy.KEEP_NEWEST else min
    kept_index = pick(range(len(refs)), key=lambda i: _ref_key(refs[i]))
    removed = sorted(
        (r for i, r in enumerate(refs) if i != kept_index),
        key=lambda r: value_key(r.doc_id),
    )
    return Resolution(timestamp_ms=timestamp, kept=refs[kept_index], removed=tuple(removed))
