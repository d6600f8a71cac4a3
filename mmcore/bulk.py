"""Building many small objects at once without the cyclic garbage collector's pauses.

CPython's cyclic collector runs whenever allocations of container objects (dicts, lists, tuples)
outnumber deallocations by its threshold (700 for the youngest generation), and every so often
traverses *every* tracked object (a full collection). Reading a table of a million rows builds
millions of short-lived dicts and lists while the long-lived heap grows: the collections it
triggers cost more than the reading itself (issue 26: the manifest of 1,000,000 rows took 83 s
of CPU with the collector running and 20 s without it; fitting the processors 7.6 s and 3.6 s).
Reference counting frees those objects either way -- the collector only finds reference
cycles, which a bulk build does not make -- so it is paused for the build and resumed after
it, when any cycle made meanwhile is found by the next collection as usual. The same advice is
in the CPython docs of :func:`gc.disable` and :func:`gc.freeze`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause :mod:`gc`'s automatic collections for the ``with`` block (or a decorated function's
    call), restoring the state found on entry -- nested uses and a collector disabled by the caller
    stay as they were. Raises nothing of its own; an exception in the block propagates after the
    state is restored."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
