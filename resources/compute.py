"""Ray compute: a resource for an existing Ray cluster and the one fan-out helper assets use."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import dagster as dg
from dagster_ray import RayResource
from pydantic import Field

T = TypeVar("T")


class RayCluster(RayResource):
    """Connects to a running Ray cluster (the dev command's local head, or any cluster address)."""

    address: str = Field(
        default="auto",
        description="Ray address (`host:port` or `ray://host:10001`); `auto` uses RAY_ADDRESS or the local head.",
    )

    @property
    def host(self) -> str:
        return self.address.removeprefix("ray://").split(":")[0] if self.address != "auto" else "127.0.0.1"

    @property
    def ray_address(self) -> str:  # type: ignore[override]
        return self.address

    @property
    def name(self) -> str:
        return f"Ray cluster at {self.address}"

    @property
    def created(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return True


PROGRESS_STEPS = 10


class RayTasksTimedOut(dg.Failure):
    """Ray tasks that did not all finish within their time limit (a lost Ray head, a wedged worker)."""


def ray_map(
    fn: Callable[..., T],
    calls: Sequence[tuple[Any, ...]],
    *,
    timeout: float,
    num_cpus: float = 1,
    progress: Callable[[str], None] | None = None,
) -> list[T]:
    """Run `fn(*args)` for every tuple in `calls` as Ray tasks and return results in order.

    Arguments shared by every call (the same object) are put in the object store once; `progress`
    (e.g. `context.log.info`) hears "k of n tasks done" about every tenth of the way, so a two-year run
    shows it is moving. Every task must be done within `timeout` seconds of the submission (the spec's
    `compute.ray_task_timeout_seconds`), else `RayTasksTimedOut` names the task and the limit: without it a
    run whose Ray head died would wait forever. Requires a connected Ray (a `RayResource` connects at setup).
    """
    import ray

    shared: dict[int, Any] = {}
    counts: dict[int, int] = {}
    for args in calls:
        for arg in args:
            counts[id(arg)] = counts.get(id(arg), 0) + 1
    for args in calls:
        for arg in args:
            if counts[id(arg)] > 1 and id(arg) not in shared:
                shared[id(arg)] = ray.put(arg)
    task = ray.remote(num_cpus=num_cpus)(fn)
    refs = [task.remote(*(shared.get(id(arg), arg) for arg in args)) for args in calls]
    deadline = time.monotonic() + timeout
    step = max(1, len(refs) // PROGRESS_STEPS)
    pending, done = list(refs), 0
    while pending:
        ready, pending = ray.wait(
            pending, num_returns=min(step, len(pending)), timeout=max(0.0, deadline - time.monotonic())
        )
        if not ready:
            raise RayTasksTimedOut(
                f"Ray task {fn.__name__}: {len(pending)} of {len(refs)} not done after {timeout:g}s "
                "(compute.ray_task_timeout_seconds in the spec); is the Ray cluster up? "
                f"RAY_ADDRESS={os.environ.get('RAY_ADDRESS', 'auto')}"
            )
        done += len(ready)
        if progress is not None:
            progress(f"{fn.__name__}: {done} of {len(refs)} Ray tasks done")
    return ray.get(refs)
