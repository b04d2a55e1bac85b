"""Keep the garbage collector off the decision path.

A worker's heap is mostly long-lived objects: numpy, scikit-learn and Cedar's
bindings, the policy bundle, the fitted model.  A full collection walks all of
them (about 70 ms here, 130k tracked objects), and the allocations of deciding
trigger one every few thousand actions: measured at 17-30 µs per action
(bench/swap.py).  `settle()` moves everything alive now into the permanent
generation (`gc.freeze`), so collections only look at what the decisions
allocate.  It runs once at start and after each swap, when the previous
snapshot's objects have just become garbage (a swap is rare; its one full
collection is cheaper than what frozen garbage would cost).
"""
from __future__ import annotations

import gc

__all__ = ["settle"]


def settle() -> None:
    """Collect what is garbage now, then freeze the rest out of later collections."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
