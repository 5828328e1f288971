"""What every stage of one pipeline shares: its spec, partitions, keys, policies and tags."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import dagster as dg

from kernel.names import ALLOW_MISSING_PARTITIONS, ENTITY_COLUMNS, GATE_CHECKS, GATES, LAZY_INPUT, PIPELINE_TAG
from kernel.paths import write_text_atomically
from kernel.spec import K8sRequests, PipelineSpec

# Dagster's own "any value" type (its stub types it as `typing.Any`, which the checker refuses here).
ANY_VALUE = cast(dg.DagsterType, dg.Any)
# The Kubernetes ServiceAccount of a step that creates or joins its run's Ray cluster (a step with the `ray_cluster`
# resource): the only step pods that may create RayClusters (deploy/k8s/rbac-kuberay.yaml). Every other step runs
# as the executor's step account, which has no Kubernetes rights (platform_assets/wiring.py).
RAY_STEP_SERVICE_ACCOUNT = "dagster-ray-step"
RAY_RESOURCE_KEY = "ray_cluster"


@dataclass(frozen=True)
class Pipeline:
    """A validated spec plus where it runs: the project root and the sample-data rebase shift."""

    spec: PipelineSpec
    root: Path
    shift_days: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def key(self, stage: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, stage])

    @cached_property
    def partitions_def(self) -> dg.DailyPartitionsDefinition:
        shift = timedelta(days=self.shift_days)
        start = self.spec.partitioning.start_date + shift
        end = self.spec.partitioning.end_date
        return dg.DailyPartitionsDefinition(
            start_date=start.isoformat(),
            end_date=(end + shift).isoformat() if end else None,
            timezone=self.spec.partitioning.timezone,
        )

    @property
    def backfill_policy(self) -> dg.BackfillPolicy:
        """One run per range, whoever asks: a backfill from the UI or the daemon is one run for every day (raw and
        features together), and `dagster asset materialize --partition-range` accepts only single-run assets."""
        return dg.BackfillPolicy.single_run()

    @property
    def lookback_days(self) -> int:
        """Whole days of raw history one day of features needs."""
        return -(-self.spec.features.lookback_hours // 24)

    @property
    def owners(self) -> list[str]:
        return list(self.spec.owners)

    @property
    def tags(self) -> dict[str, str]:
        return {PIPELINE_TAG: self.name}

    def pool(self, stage: str) -> str:
        """The Dagster pool of a stage's writer and its checks (`<pipeline>.<stage>`): one slot (every instance's
        default pool limit is 1), so two runs never write or judge the same asset at once, whoever launched them."""
        return f"{self.name}.{stage}"

    def freshness(self, stage: str) -> dg.FreshnessPolicy | None:
        """The spec's freshness window for a stage (features, model, predictions), if it has one."""
        window = getattr(self.spec.freshness, stage, None)
        if window is None:
            return None
        return dg.FreshnessPolicy.time_window(fail_window=window.fail, warn_window=window.warn)

    def window_input(self, stage: str, days: int, *, lazy: bool = False) -> dg.AssetIn:
        """An input of the `days` partitions of `stage` that end on each partition being built; days the
        upstream does not have (before its first partition, or never materialised) are left out, and days
        the upstream's blocking checks rejected load as `Rejected` (the day gate). `lazy`: usable days load as
        references the asset's Ray tasks read themselves (`resources.store.StoredDay`), not as data."""
        return dg.AssetIn(
            key=self.key(stage),
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-(days - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
            ),
            metadata={ALLOW_MISSING_PARTITIONS: True, LAZY_INPUT: lazy, **self._gate(stage)},
            dagster_type=ANY_VALUE,
        )

    def _gate(self, stage: str) -> dict[str, Any]:
        """What the day gate of an input of `stage` needs: its blocking checks and the series' entity columns."""
        return {GATE_CHECKS: list(GATES[stage]), ENTITY_COLUMNS: list(self.spec.source.entity_columns)}

    def day_input(self, stage: str, *, allow_missing: bool = False, lazy: bool = False) -> dg.AssetIn:
        """The same day of `stage`; a day its blocking checks rejected loads as `Rejected` (and, if allowed, a day
        never materialised is left out); `lazy` as for `window_input`."""
        metadata: dict[str, Any] = {**self._gate(stage), LAZY_INPUT: lazy}
        if allow_missing:
            metadata[ALLOW_MISSING_PARTITIONS] = True
        return dg.AssetIn(key=self.key(stage), metadata=metadata, dagster_type=ANY_VALUE)

    def preceding_input(self, stage: str, days: int) -> dg.AssetIn:
        """The `days` partitions of `stage` just before each partition being built, never the day itself; as
        stored (no gate: a backtest scores every model partition, gates passed or not); missing ones left out."""
        return dg.AssetIn(
            key=self.key(stage),
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-days, end_offset=-1, allow_nonexistent_upstream_partitions=True
            ),
            metadata={ALLOW_MISSING_PARTITIONS: True},
            dagster_type=ANY_VALUE,
        )

    def check_spec(self, stage: str, name: str, description: str, **own: Any) -> dg.AssetCheckSpec:
        """A per-day check of a stage: partitioned like the asset, blocking when it is one of the stage's gates."""
        return dg.AssetCheckSpec(
            name,
            asset=self.key(stage),
            description=description,
            blocking=name in GATES.get(stage, ()),
            partitions_def=self.partitions_def,
            **own,
        )

    def asset(
        self,
        stage: str,
        *,
        description: str,
        kinds: set[str],
        partitioned: bool = True,
        compute: K8sRequests | None = None,
        **own: Any,
    ) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
        """`@dg.asset` for one stage with the policy every stage shares applied once: key, group, owners,
        tags, kinds, daily partitions and backfill policy, freshness, the step's Kubernetes requests and the
        stage's one-writer pool. A stage passes only what is its own (inputs, deps, automation; the champion the
        `promotion` pool instead of its own)."""
        shared: dict[str, Any] = {
            "key": self.key(stage),
            "description": description,
            "group_name": self.name,
            "owners": self.owners,
            "tags": self.tags,
            "kinds": kinds,
            # Values are typed for the checker (e.g. `dict[str, DataFrame | Rejected]`); Dagster's type system
            # cannot express such unions, and the asset store checks what it writes.
            "dagster_type": ANY_VALUE,
            "pool": self.pool(stage),
        }
        if partitioned:
            shared |= {"partitions_def": self.partitions_def, "backfill_policy": self.backfill_policy}
        if (freshness := self.freshness(stage)) is not None:
            shared["freshness_policy"] = freshness

        def decorate(fn: Callable[..., Any]) -> dg.AssetsDefinition:
            ray = RAY_RESOURCE_KEY in inspect.signature(fn).parameters
            tags: dict[str, Any] = {} if compute is None and not ray else {"op_tags": self.op_tags(compute, ray=ray)}
            return dg.asset(**(shared | tags | own))(fn)

        return decorate

    def op_tags(self, requests: K8sRequests | None, *, ray: bool = False) -> dict[str, Any]:
        """`dagster-k8s/config` for a step: requests from the spec's compute hints, GPU when asked, and the Ray
        steps' ServiceAccount."""
        container: dict[str, Any] = {}
        pod: dict[str, Any] = {"service_account_name": RAY_STEP_SERVICE_ACCOUNT} if ray else {}
        if requests is not None:
            container["resources"] = {
                "requests": {"cpu": requests.cpu, "memory": requests.memory},
                # The CPU limit too: otherwise the run launcher's limit (deploy/helm/values.yaml) stays, and a
                # request above it is a Job the API server refuses.
                "limits": {"cpu": requests.cpu, "memory": requests.memory},
            }
        if requests is not None and requests.gpu:
            container["resources"]["limits"]["nvidia.com/gpu"] = str(requests.gpu)
            pod["node_selector"] = dict(requests.gpu_node_selector)
            pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        config: dict[str, Any] = {"container_config": container} if container else {}
        if pod:
            config["pod_spec_config"] = pod
        return {"dagster-k8s/config": config}


def run_days(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[date]:
    """The days (partitions) a run materialises, oldest first; checks see their run's days too."""
    keys = (
        context.partition_keys
        if isinstance(context, dg.AssetExecutionContext)
        else context.op_execution_context.partition_keys
    )
    return [date.fromisoformat(key) for key in keys]


class RebasePinError(ValueError):
    """A rebase pin that cannot be read: which file, what is wrong with it, and what to do."""


def pinned_shift_days(name: str, last_day: date, state_dir: Path, today: date) -> int:
    """Whole-week shift that moves `last_day` to within the week before `today`, pinned at first use.

    Pinning keeps partition keys stable across restarts: tomorrow's shift would otherwise move
    every stored partition by a day. Delete the state file to re-align. The pin is written atomically
    (a crash or a full disk leaves no pin rather than half of one); a pin that does not parse anyway
    raises `RebasePinError` naming the file and the fix instead of a bare JSON error.
    """
    path = state_dir / f"{name}.json"
    if path.exists():
        return _read_pin(path)
    weeks = max(0, ((today - timedelta(days=1)) - last_day).days // 7)
    shift = weeks * 7
    write_text_atomically(path, json.dumps({"shift_days": shift, "pinned_at": datetime.now().isoformat()}))
    return shift


def _read_pin(path: Path) -> int:
    fix = "delete it (or run `make clean`) to re-pin the sample's rebase shift"
    try:
        pin = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RebasePinError(f"{path} is not valid JSON ({exc}): {fix}") from exc
    shift = pin.get("shift_days") if isinstance(pin, dict) else None
    if not isinstance(shift, int) or isinstance(shift, bool) or shift < 0 or shift % 7:
        raise RebasePinError(f"{path} holds no whole-week 'shift_days' (got {pin!r}): {fix}")
    return shift
