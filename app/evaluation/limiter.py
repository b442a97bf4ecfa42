"""One budget of model calls shared by every worker of an evaluation, so parallel windows never
send a provider more calls than its quota leaves today.

The driver sets each model's budget (the calls left today, from `arena quota`'s picture); every
worker takes one call from it before each request (`app.llm.quota.CallBudget`). The budget lives
in one place: the driver's process (in-process runs), a manager process whose proxy the local
pool's workers call (`multiprocessing.managers`), or a Ray actor on a cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from multiprocessing.managers import BaseManager
from typing import Any

ModelKey = tuple[str, str]


class SharedCallBudget:
    """Calls left per (provider, model); models without a figure are not limited."""

    def __init__(self, limits: Mapping[ModelKey, int]) -> None:
        self._left = {(str(p), str(m)): int(n) for (p, m), n in limits.items()}
        self._lock = threading.Lock()

    def take(self, provider: str, model: str) -> bool:
        """Spend one call of `model`; False when none is left."""
        with self._lock:
            left = self._left.get((provider, model))
            if left is None:
                return True
            if left <= 0:
                return False
            self._left[(provider, model)] = left - 1
            return True

    def left(self, provider: str, model: str) -> int | None:
        """Return the calls of `model` still to take (None: not limited)."""
        with self._lock:
            return self._left.get((provider, model))


class BudgetManager(BaseManager):
    """Serves one `SharedCallBudget` to the local pool's worker processes."""


BudgetManager.register("SharedCallBudget", SharedCallBudget)


class RayCallBudget:
    """A `CallBudget` over a Ray actor holding the `SharedCallBudget` (picklable to tasks)."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    def take(self, provider: str, model: str) -> bool:
        import ray

        return bool(ray.get(self._actor.take.remote(provider, model)))

    def left(self, provider: str, model: str) -> int | None:
        import ray

        found = ray.get(self._actor.left.remote(provider, model))
        return None if found is None else int(found)


def ray_budget(limits: Mapping[ModelKey, int]) -> RayCallBudget:
    """Start the budget as a Ray actor (Ray must be initialised)."""
    import ray

    actor = ray.remote(num_cpus=0)(SharedCallBudget).remote(dict(limits))
    return RayCallBudget(actor)
