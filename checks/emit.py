"""What every check module shares: the run's stored values, and turning selected checks into results."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from kernel.pipeline import run_days
from resources.storage import PartitionedParquetIOManager

# A check's judgement: whether it passed, and the metadata that shows why (threshold and observed value).
Judgement = tuple[bool, dict[str, Any]]


def run_values(
    context: dg.AssetCheckExecutionContext, store: PartitionedParquetIOManager, key: dg.AssetKey
) -> dict[str, Any]:
    """The stored values of `key` for the days of the check's run (an unpartitioned check of a
    partitioned asset would otherwise load every partition)."""
    return store.read_many(key, [str(day) for day in run_days(context)], allow_missing=False)


def multi_check(name: str, specs: Sequence[dg.AssetCheckSpec]) -> Callable[..., dg.AssetChecksDefinition]:
    """`@dg.multi_asset_check` over `specs`, subsettable so the UI can run one check alone."""
    return dg.multi_asset_check(name=name, specs=list(specs), can_subset=True)


def emit(
    context: dg.AssetCheckExecutionContext,
    specs: Sequence[dg.AssetCheckSpec],
    judges: Mapping[str, Callable[[], Judgement]],
) -> Iterator[dg.AssetCheckResult]:
    """Run the judge of every selected check; a blocking check fails with ERROR, any other with WARN."""
    selected = set(context.selected_asset_check_keys)
    for spec in specs:
        if spec.key not in selected:
            continue
        passed, metadata = judges[spec.name]()
        yield dg.AssetCheckResult(
            asset_key=spec.asset_key,
            check_name=spec.name,
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR if spec.blocking else dg.AssetCheckSeverity.WARN,
            metadata=metadata,
        )
