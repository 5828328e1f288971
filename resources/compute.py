"""Ray compute: a resource for an existing Ray cluster and the one fan-out helper assets use."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

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


def ray_map(
    fn: Callable[..., T],
    calls: Sequence[tuple[Any, ...]],
    *,
    num_cpus: float = 1,
    progress: Callable[[str], None] | None = None,
) -> list[T]:
    """Run `fn(*args)` for every tuple in `calls` as Ray tasks and return results in order.

    Arguments shared by every call (the same object) are put in the object store once; `progress`
    (e.g. `context.log.info`) hears "k of n tasks done" about every tenth of the way, so a two-year run
    shows it is moving. Requires a connected Ray (any `RayResource` connects during resource setup).
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
    if progress is not None and refs:
        step = max(1, len(refs) // PROGRESS_STEPS)
        pending, done = list(refs), 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=min(step, len(pending)))
            done += len(ready)
            progress(f"{fn.__name__}: {done} of {len(refs)} Ray tasks done")
    return ray.get(refs)
