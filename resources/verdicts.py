"""Per-day check verdicts as Dagster records them: the one source of truth for which days are usable.

A verdict names the bytes it judged: every check evaluation records the fingerprint of the stored value it read
(`kernel.names.FINGERPRINT` in its metadata), and a day is usable only if, for every blocking check, the latest
evaluation that judged the fingerprint the bytes on disk carry now passed. Bytes no verdict judged are not usable,
whatever the event log says about materialisations: written by a run that died before its checks or its events,
replaced since their verdict, stored without a fingerprint, or judged in a history that was wiped since. Planned
evaluations (a run queued, running, cancelled or failed before judging) are not verdicts and are not read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dagster as dg

# Private imports (Dagster 1.13 is pinned; tests/resources cover them): partitioned check records are preview, and
# the gate reads their table directly, one query per check for all the days it judges.
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES
from dagster_shared.serdes import deserialize_value

from kernel.names import FINGERPRINT, REJECTED_SERIES

if TYPE_CHECKING:
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

# Completed evaluations of one check and day searched for one that judged the bytes on disk; older ones judged
# bytes replaced at least this many times since.
HISTORY = 20
# Days per query (SQLite's bound on query parameters is 999 in old builds).
QUERY_DAYS = 500


@dataclass(frozen=True)
class Judgement:
    """One completed evaluation of a check on a day: what it decided, about which bytes, when and why."""

    passed: bool
    fingerprint: str | None
    timestamp: float
    reason: str
    rejected_series: dict[str, str] = field(default_factory=dict)


def judgements(
    instance: dg.DagsterInstance, check: dg.AssetCheckKey, days: Sequence[str]
) -> dict[str, list[Judgement]]:
    """The check's completed evaluations of each of `days`, newest first (planned ones, never judged, are not
    among them). One query per check however many days: a year of days is one read, not 365."""
    # SQLAlchemy and Dagster's SQL storage load here, at run time: a definitions load does not need them.
    import sqlalchemy as db
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
    from dagster._core.storage.sqlalchemy_compat import db_fetch_mappings, db_select

    storage = _sql_storage(instance)
    rows: list[Any] = []
    for chunk in (days[i : i + QUERY_DAYS] for i in range(0, len(days), QUERY_DAYS)):
        query = (
            db_select([AssetCheckExecutionsTable.c.partition, AssetCheckExecutionsTable.c.evaluation_event])
            .where(
                db.and_(
                    AssetCheckExecutionsTable.c.asset_key == check.asset_key.to_string(),
                    AssetCheckExecutionsTable.c.check_name == check.name,
                    AssetCheckExecutionsTable.c.partition.in_(list(chunk)),
                    AssetCheckExecutionsTable.c.execution_status.in_(
                        [status.value for status in COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES]
                    ),
                )
            )
            .order_by(AssetCheckExecutionsTable.c.id.desc())
        )
        with storage.index_connection() as connection:
            rows += db_fetch_mappings(connection, query)
    found: dict[str, list[Judgement]] = {}
    for row in rows:
        if len(found.get(row["partition"], [])) >= HISTORY or not row["evaluation_event"]:
            continue
        entry = deserialize_value(row["evaluation_event"], EventLogEntry)
        evaluation = entry.dagster_event.event_specific_data if entry.dagster_event else None
        if not isinstance(evaluation, dg.AssetCheckEvaluation):
            continue
        fingerprint = evaluation.metadata.get(FINGERPRINT)
        series = evaluation.metadata.get(REJECTED_SERIES)
        found.setdefault(row["partition"], []).append(
            Judgement(
                passed=evaluation.passed,
                fingerprint=str(fingerprint.value) if fingerprint is not None else None,
                timestamp=entry.timestamp,
                reason=evaluation.description or ("passed" if evaluation.passed else "failed"),
                rejected_series=_series(series),
            )
        )
    return {day: sorted(entries, key=lambda j: j.timestamp, reverse=True) for day, entries in found.items()}


def day_reason(
    where: str, day: str, check: str, *, stored: str | None, history: Sequence[Judgement], wiped_at: float | None
) -> str | None:
    """Why the bytes stored for `day` (fingerprint `stored`) are not usable under `check`, or None if they are."""
    if stored is None:
        return (
            f"{where} {day}: stored without a readable fingerprint (written before fingerprints, not by the asset "
            f"store, or damaged), so no verdict of {check} can name these bytes"
        )
    judged = next((judgement for judgement in history if judgement.fingerprint == stored), None)
    if judged is not None:
        return None if judged.passed else f"{where} {day}: {check} failed: {judged.reason}"
    if history:
        latest = history[0]
        what = f"bytes {_short(latest.fingerprint)}" if latest.fingerprint else "bytes it did not name (an old record)"
        return (
            f"{where} {day}: the stored bytes {_short(stored)} were never judged by {check}: its latest verdict "
            f"({_when(latest.timestamp)}) judged {what}; the file changed since"
        )
    if wiped_at is not None:
        return (
            f"{where} {day}: no verdict of {check} on record for the stored bytes {_short(stored)}: the asset's "
            f"history was wiped at {_when(wiped_at)} and these bytes have not been judged since"
        )
    return (
        f"{where} {day}: no verdict of {check} on record for the stored bytes {_short(stored)}: never judged "
        "(written by a run that did not reach its checks)"
    )


@dataclass(frozen=True)
class Gate:
    """What the blocking checks reject of the stored days: whole days (day -> reason), and series of usable days
    (day -> series label -> reason) that a passing verdict of those very bytes rejected on their own."""

    days: dict[str, str]
    series: dict[str, dict[str, str]]


def gate(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, checks: Sequence[str], stored: Mapping[str, str | None]
) -> Gate:
    """The stored days (day -> fingerprint of the bytes on disk) that some blocking check does not currently pass,
    each with the reason, and the series its passing verdicts rejected on the other days. Days never stored are not
    listed: they are missing, not rejected."""
    if not stored or not checks:
        return Gate({}, {})
    where = asset_key.to_user_string()
    wiped_at = _wiped_at(instance, asset_key)
    judged = [d for d, fingerprint in stored.items() if fingerprint is not None]
    histories = {name: judgements(instance, dg.AssetCheckKey(asset_key, name), judged) for name in checks}
    reasons: dict[str, str] = {}
    series: dict[str, dict[str, str]] = {}
    for day, fingerprint in stored.items():
        for name in checks:
            history = histories[name].get(day, [])
            if (
                reason := day_reason(where, day, name, stored=fingerprint, history=history, wiped_at=wiped_at)
            ) is not None:
                reasons[day] = reason
                series.pop(day, None)
                break
            verdict = next(judgement for judgement in history if judgement.fingerprint == fingerprint)
            for label, why in verdict.rejected_series.items():
                series.setdefault(day, {})[label] = f"{where} {day} series {label}: {name} failed: {why}"
    return Gate(reasons, series)


def rejected_days(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, checks: Sequence[str], stored: Mapping[str, str | None]
) -> dict[str, str]:
    """The stored days that some blocking check does not currently pass, each with the reason (`gate`'s days)."""
    return gate(instance, asset_key, checks, stored).days


def _wiped_at(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> float | None:
    """When the asset's history was last wiped (UI "Wipe materializations", which deletes its check records);
    Dagster keeps the time only in the asset's details (asset records hide a wiped asset altogether)."""
    details = _sql_storage(instance)._get_assets_details([asset_key])[0]
    return details.last_wipe_timestamp if details is not None else None


def _sql_storage(instance: dg.DagsterInstance) -> SqlEventLogStorage:
    """The instance's event storage, which the gate queries directly: SQLite or PostgreSQL, every one we run."""
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage):
        raise dg.Failure(
            f"the day gate reads check verdicts from Dagster's SQL event storage (SQLite, PostgreSQL); this instance "
            f"uses {type(storage).__name__}"
        )
    return storage


def _series(value: dg.MetadataValue | None) -> dict[str, str]:
    """The series labels and reasons a verdict's metadata rejected (none: `{}`)."""
    found = value.value if value is not None else None
    return {str(label): str(why) for label, why in found.items()} if isinstance(found, dict) else {}


def _short(fingerprint: str | None) -> str:
    return (fingerprint or "none").removeprefix("sha256:")[:12]


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def materialisation_targets(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, judged: Mapping[str, str | None]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """For each judged day (day -> fingerprint of the bytes judged), the materialisation that recorded writing those
    bytes, if it is the day's latest (so Dagster shows the verdict as current). A verdict on bytes no materialisation
    recorded (its run died before its events, or another run wrote them) targets none: it is never credited to a
    materialisation of other bytes."""
    latest = latest_materialisations(instance, asset_key, list(judged))
    return {
        day: target_of(record)
        for day, record in latest.items()
        if judged[day] is not None and recorded_fingerprint(record) == judged[day]
    }


def target_of(record: dg.EventLogRecord) -> AssetCheckEvaluationTargetMaterializationData:
    """A materialisation record as the target Dagster credits a check evaluation to."""
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
    )


def materialising_run(instance: dg.DagsterInstance, asset_key: dg.AssetKey, day: str) -> str | None:
    """The run that wrote the day's latest materialisation."""
    record = latest_materialisations(instance, asset_key, [day]).get(day)
    return record.run_id if record is not None else None


def latest_materialisations(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, days: Sequence[str]
) -> dict[str, dg.EventLogRecord]:
    """Each day's latest materialisation record (days never materialised are left out), in two queries."""
    if not days:  # Dagster reads no partition filter as every partition
        return {}
    storage_ids = instance.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(days)
    )
    if not storage_ids:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(storage_ids.values())), limit=len(storage_ids)
    ).records
    by_id = {record.storage_id: record for record in records}
    return {day: by_id[storage_id] for day, storage_id in storage_ids.items() if storage_id in by_id}


def recorded_fingerprint(record: dg.EventLogRecord) -> str | None:
    """The fingerprint a materialisation recorded writing (None: an old record without one)."""
    materialisation = record.asset_materialization
    value = materialisation.metadata.get(FINGERPRINT) if materialisation is not None else None
    return str(value.value) if value is not None else None
