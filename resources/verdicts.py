"""Per-day check verdicts as Dagster records them: the one source of truth for which days are usable.

Dagster stores one check execution per (check, partition). A day is usable only if the latest verdict of
every blocking check passed *and* still targets the day's latest materialisation: a day re-materialised
since its verdict, or never judged (the run died between the asset and its checks), is not usable.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

# Private imports: partitioned check records are preview in Dagster 1.13 (pinned; tests/resources cover them).
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus


def rejected_days(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, checks: Sequence[str], days: Sequence[str]
) -> dict[str, str]:
    """The days among `days` that some blocking check does not currently pass, each with the reason.

    Days with neither a materialisation nor a verdict are not listed: they are missing, not rejected.
    """
    if not days or not checks:
        return {}
    keys = [dg.AssetCheckKey(asset_key, name) for name in checks]
    infos = instance.event_log_storage.get_asset_check_partition_info(keys, partition_keys=list(days))
    latest = {(info.check_key.name, info.partition_key): info for info in infos}
    materialised = instance.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(days)
    )
    where = asset_key.to_user_string()
    reasons: dict[str, str] = {}
    for day in days:
        for name in checks:
            info = latest.get((name, day))
            if info is None:
                if day in materialised:
                    reasons[day] = f"{where} {day}: {name} never judged this day"
                    break
                continue
            if info.latest_execution_status != AssetCheckExecutionRecordStatus.SUCCEEDED:
                reasons[day] = f"{where} {day}: {name} {info.latest_execution_status.value.lower()}"
                break
            if not info.is_current:
                reasons[day] = f"{where} {day}: {name} passed an older materialisation, not the current one"
                break
    return reasons


def materialisation_targets(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, days: Sequence[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """For each day, the latest materialisation a verdict judges (so Dagster knows the verdict is current)."""
    storage_ids = instance.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(days)
    )
    if not storage_ids:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(storage_ids.values())), limit=len(storage_ids)
    ).records
    by_id = {record.storage_id: record for record in records}
    return {
        day: AssetCheckEvaluationTargetMaterializationData(
            storage_id=storage_id, run_id=by_id[storage_id].run_id, timestamp=by_id[storage_id].timestamp
        )
        for day, storage_id in storage_ids.items()
        if storage_id in by_id
    }


def materialising_run(instance: dg.DagsterInstance, asset_key: dg.AssetKey, day: str) -> str | None:
    """The run that wrote the day's latest materialisation."""
    targets = materialisation_targets(instance, asset_key, [day])
    return targets[day].run_id if day in targets else None
