"""Ray compute: a resource for an existing Ray cluster and the one fan-out helper assets use."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import dagster as dg
from dagster_ray import RayResource
from pydantic import Field

if TYPE_CHECKING:
    from dagster_ray.types import AnyDagsterContext
    from ray._private.worker import BaseContext

T = TypeVar("T")


def connect_without_ray_data(resource: RayResource) -> BaseContext:
    """`ray.init` with the resource's address, init options and injected env vars, and nothing more.

    dagster-ray's `RayResource.connect` also applies its Ray Data options, locally (importing `ray.data`) and in
    one remote task (a worker must start and import `ray.data` too): 2.5-3.2 s per step against 0.05 s for the
    `ray.init` itself, for a library the platform does not use. Its `data_execution_options` are therefore not
    applied; everything else `connect` passes to `ray.init` is.
    """
    import ray
    from dagster_ray.utils import _process_dagster_env_vars

    options: dict[str, Any] = _process_dagster_env_vars(dict(resource.ray_init_options))
    runtime_env = dict(options.get("runtime_env") or {})
    env_vars = {k: v for k, v in (runtime_env.get("env_vars") or {}).items() if v is not None}
    env_vars |= resource.get_env_vars_to_inject()
    if env_vars:
        runtime_env["env_vars"] = env_vars
    if runtime_env:
        options["runtime_env"] = runtime_env
    context = ray.init(address=resource.ray_address, **options)
    resource._context = context
    return context


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

    def connect(self, context: AnyDagsterContext) -> BaseContext:  # pyright: ignore[reportIncompatibleVariableOverride] (the base method is wrapped by tenacity)
        return connect_without_ray_data(self)


PROGRESS_STEPS = 10
# Retries of a task whose worker process or node died (Ray's default for tasks, stated: a range run survives the
# loss of a node as long as another offers the task's resources). Each task writes whole files atomically, so a
# retried task replaces what its first attempt wrote with the same bytes.
MAX_RETRIES = 3


class RayTasksTimedOut(dg.Failure):
    """Ray tasks that did not all finish within their time limit (a lost Ray head, a wedged worker)."""


# Tasks per CPU of the cluster when a range run's days are split into batches: enough for a slow task not to hold
# the run's tail alone, few enough for each task to read its look-back once for many days.
TASKS_PER_CPU = 2


def day_batches(days: Sequence[T], days_per_task: int | None) -> list[list[T]]:
    """A range run's days in consecutive batches, one Ray task each: `days_per_task` (the spec's
    `compute.ray_days_per_task`) or, unset, about `TASKS_PER_CPU` tasks per CPU of the connected cluster."""
    import ray

    if days_per_task is None:
        tasks = max(1, int(ray.cluster_resources().get("CPU", 1) * TASKS_PER_CPU))
        days_per_task = -(-len(days) // tasks)
    return [list(days[start : start + days_per_task]) for start in range(0, len(days), max(1, days_per_task))]


def ray_map(
    fn: Callable[..., T],
    calls: Sequence[tuple[Any, ...]],
    *,
    timeout: float,
    num_cpus: float = 1,
    resources: Mapping[str, float] | None = None,
    spread: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[T]:
    """Run `fn(*args)` for every tuple in `calls` as Ray tasks and return results in order.

    Arguments shared by every call (the same object) are put in the object store once; `progress`
    (e.g. `context.log.info`) hears "k of n tasks done" about every tenth of the way, so a two-year run
    shows it is moving. Every task must be done within `timeout` seconds of the submission (the spec's
    `compute.ray_task_timeout_seconds`), else `RayTasksTimedOut` names the task and the limit: without it a
    run whose Ray head died would wait forever. Requires a connected Ray (a `RayResource` connects at setup).
    Each task asks for `num_cpus` and the custom `resources` (the spec's hints: it runs only on a node offering
    them); `spread` places tasks over every node (Ray's SPREAD strategy: the day batches of a range run) rather than
    packing the first. A task lost with its node or worker process is retried elsewhere (`MAX_RETRIES`); an error
    raised by `fn` itself is not retried.
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
    task = ray.remote(fn).options(
        num_cpus=num_cpus,
        resources=dict(resources or {}),
        scheduling_strategy="SPREAD" if spread else "DEFAULT",
        max_retries=MAX_RETRIES,
    )
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
