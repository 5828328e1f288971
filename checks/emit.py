"""What every check module shares: the run's stored values, and one verdict per day for each selected check.

Dagster's `AssetCheckResult` cannot name a partition, and a range run judges many days at once, so each
check yields an `AssetCheckEvaluation` per day. Those evaluations are recorded as non-blocking on purpose:
a bad day must not fail the step (and with it every good day of the run). Blocking is per day instead: the
check *spec* is blocking (the UI and automation read that), and the day gate in the asset store keeps a
rejected day out of every later run (`resources/verdicts.py`).

A verdict names the bytes it judged: a check reads each day's value together with the fingerprint of the bytes it
came from (one read), and records that fingerprint on the day's evaluation. A day whose file cannot be read or
carries no fingerprint cannot be judged, and fails with that reason.

A run's days are judged a chunk at a time (consecutive days, about `CHUNK_BYTES` of frames), and only the verdicts
are kept: a check step's memory stays flat however long the run's range is.

A day whose bytes the run's own writer judged as it wrote them (`judged_by_writer`: raw's step, the Ray tasks of
features and predictions, with the same `ml.expectations` / `ml.quality` functions, on the frame in their memory) is
not read back: the check step records the writer's verdicts, naming the fingerprint the run's materialisation
recorded. Any other run (a check run alone from the UI, a re-execution) reads the stored bytes and judges them
itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg

# Private (Dagster 1.13 is pinned; tests/checks cover it): a check's verdicts go to the event log as one batch, which
# an instance whose storage batches (resources/event_log.py) writes in one commit, and any other one event by event.
from dagster._core.events import DagsterEvent, DagsterEventBatchMetadata, DagsterEventType, generate_event_batch_id

from kernel.metadata import MAX_LISTED_DAYS
from kernel.names import FINGERPRINT, REJECTED_SERIES, WRITER_VERDICTS
from kernel.pipeline import run_days
from kernel.records import Rejected
from ml.quality import Verdict
from resources.storage import READ_THREADS, PartitionedParquetIOManager
from resources.verdicts import latest_materialisations, materialisation_targets, recorded_fingerprint, target_of

if TYPE_CHECKING:
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

# The attribute of an event log storage that writes batches of check evaluations (resources/event_log.py).
WRITES_CHECK_BATCHES = "writes_check_batches"
# About how many bytes of stored frames a check holds at once: its run's days are judged a chunk at a time.
CHUNK_BYTES = 8 * 2**20
# What a chunk counts for a frame's cell: a number's 8 bytes (a string holds more; a chunk's size is a guide).
CELL_BYTES = 8
# Days read at once into a chunk (two per read thread keeps the threads busy).
READ_AHEAD = 2 * READ_THREADS


# How a check judges a chunk of days (day -> stored value): one verdict per day.
ChunkJudge = Callable[[Mapping[str, Any]], Mapping[str, Verdict]]


@dataclass(frozen=True)
class Judged:
    """What a check judges: each day's stored value and the fingerprint of the bytes it was read from."""

    values: dict[str, Any]
    fingerprints: dict[str, str | None]


@dataclass(frozen=True)
class WriterJudged:
    """A day the run's own writer judged as it wrote it: the fingerprint of the bytes it wrote (as the run's
    materialisation recorded it) and each check's verdict on them."""

    fingerprint: str
    verdicts: dict[str, Verdict]
    target: AssetCheckEvaluationTargetMaterializationData


def judged_by_writer(context: dg.AssetCheckExecutionContext, key: dg.AssetKey) -> dict[str, WriterJudged]:
    """The days of the check's run whose latest materialisation this same run recorded, with its writer's verdict for
    every selected check and the fingerprint of the bytes written (one query for the run's days). A materialisation
    of another run never counts: a check run alone judges the bytes as they are stored now, with the code it runs."""
    selected = [check.name for check in context.selected_asset_check_keys if check.asset_key == key]
    days = [str(day) for day in run_days(context)]
    found = {}
    for day, record in latest_materialisations(context.instance, key, days).items():
        materialisation = record.asset_materialization
        written = materialisation.metadata.get(WRITER_VERDICTS) if materialisation is not None else None
        verdicts = written.value if written is not None else None
        fingerprint = recorded_fingerprint(record)
        if record.run_id != context.run.run_id or fingerprint is None or not isinstance(verdicts, dict):
            continue
        documents = {name: verdicts.get(name) for name in selected}
        if all(isinstance(document, dict) for document in documents.values()):
            judged = {name: Verdict.from_json(d) for name, d in documents.items() if isinstance(d, dict)}
            found[day] = WriterJudged(fingerprint, judged, target_of(record))
    return found


def run_chunks(
    context: dg.AssetCheckExecutionContext,
    store: PartitionedParquetIOManager,
    key: dg.AssetKey,
    typed: Callable[[dict[str, Any]], dict[str, Any]] = dict,
    *,
    skip: Mapping[str, WriterJudged] | None = None,
) -> Iterator[Judged]:
    """The stored values of `key` for the days of the check's run (but those in `skip`, which its writer judged), with
    their fingerprints, a chunk at a time."""
    return stored_chunks(store, key, [str(day) for day in run_days(context) if str(day) not in (skip or {})], typed)


def stored_chunks(
    store: PartitionedParquetIOManager,
    key: dg.AssetKey,
    days: Sequence[str],
    typed: Callable[[dict[str, Any]], dict[str, Any]] = dict,
) -> Iterator[Judged]:
    """The stored values of `key` for `days`, with their fingerprints, in chunks of consecutive days of about
    `CHUNK_BYTES` of frames, each chunk's values passed through `typed` once (e.g. into records) for all its checks.
    A day not built loads as its `Rejected`; one that cannot be judged (unreadable, no fingerprint) as a `Rejected`
    saying so."""
    where = key.to_user_string()
    chunk, held = Judged({}, {}), 0
    for start in range(0, len(days), READ_AHEAD):
        for day, s in store.read_for_judging(key, days[start : start + READ_AHEAD], allow_missing=False).items():
            unnamed = s.fingerprint is None and not isinstance(s.value, Rejected)
            reason = f"{where} {day}: stored without a fingerprint, so no verdict can name it"
            chunk.values[day] = Rejected(day=day, reason=reason) if unnamed else s.value
            chunk.fingerprints[day] = s.fingerprint
            held += _bytes(s.value)
        if held >= CHUNK_BYTES:
            yield Judged(typed(chunk.values), chunk.fingerprints)
            chunk, held = Judged({}, {}), 0
    if chunk.values:
        yield Judged(typed(chunk.values), chunk.fingerprints)


def _bytes(value: Any) -> int:
    """About the memory a stored value holds: a frame's cells at `CELL_BYTES` each (pandas' own count, strings
    included, took longer than judging a small day); else the object's own size."""
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return value.size * CELL_BYTES
    return sys.getsizeof(value)


def multi_check(name: str, specs: Sequence[dg.AssetCheckSpec], pool: str) -> Callable[..., dg.AssetChecksDefinition]:
    """`@dg.multi_asset_check` over `specs`, subsettable so the UI can run one check alone, in the pool of the asset
    it judges (the writer's: no run judges an asset while another writes it)."""
    return dg.multi_asset_check(name=name, specs=list(specs), can_subset=True, pool=pool)


def emit(
    context: dg.AssetCheckExecutionContext,
    specs: Sequence[dg.AssetCheckSpec],
    chunks: Iterable[Judged],
    verdicts: Mapping[str, ChunkJudge],
    written: Mapping[str, WriterJudged] | None = None,
) -> Iterator[Any]:
    """For every selected check: its verdict per day (ERROR if the check is a gate, else WARN) naming the
    fingerprint it judged, recorded as one batch, and a summary observation on the asset (days judged, days failed
    and why). Every selected check judges a chunk of days (`verdicts`: check name -> how it judges a chunk) before
    the next chunk is read; only the verdicts are kept. The days in `written` take their writer's verdicts."""
    selected = [spec for spec in specs if spec.key in set(context.selected_asset_check_keys)]
    assets_def = context.op_execution_context.assets_def
    for spec in selected:
        yield dg.Output(None, output_name=assets_def.get_output_name_for_asset_check_key(spec.key))
    judged: dict[str, str | None] = {}  # day -> fingerprint of the bytes judged
    days_judged: dict[str, dict[str, Verdict]] = {spec.name: {} for spec in selected}
    for day, by_writer in (written or {}).items():
        judged[day] = by_writer.fingerprint
        for spec in selected:
            days_judged[spec.name][day] = by_writer.verdicts[spec.name]
    for chunk in chunks:
        judged |= chunk.fingerprints
        for spec in selected:
            days_judged[spec.name] |= verdicts[spec.name](chunk.values)
        del chunk  # before the next chunk is read, not after: one chunk's frames at a time
    looked_up: dict[dg.AssetKey, dict[str, Any]] = {}  # each asset's materialisations of the judged bytes, once
    for spec in selected:
        by_day = days_judged[spec.name]
        if spec.asset_key not in looked_up:
            by_writer = {day: w.target for day, w in (written or {}).items()}  # looked up with their verdicts
            read = {day: judged.get(day) for day in by_day if day not in by_writer}
            looked_up[spec.asset_key] = materialisation_targets(context.instance, spec.asset_key, read) | by_writer
        targets = looked_up[spec.asset_key]
        severity = dg.AssetCheckSeverity.ERROR if spec.blocking else dg.AssetCheckSeverity.WARN
        evaluations = []
        for day, verdict in sorted(by_day.items()):
            fingerprint = judged.get(day)
            passed = verdict.passed and fingerprint is not None  # a verdict that names no bytes passes none
            reason = verdict.reason or ("" if fingerprint is not None else "judged bytes without a fingerprint")
            evaluations.append(
                dg.AssetCheckEvaluation(
                    asset_key=spec.asset_key,
                    check_name=spec.name,
                    passed=passed,
                    partition=day,
                    severity=severity,
                    blocking=False,
                    description=reason or ("passed" if passed else "failed"),
                    metadata={
                        **verdict.metadata,
                        **({"reason": reason} if reason else {}),
                        **_series_metadata(verdict.rejected_series),
                        FINGERPRINT: fingerprint or "none",
                    },
                    target_materialization_data=targets.get(day),
                )
            )
        yield from recorded(context, evaluations)
        failed = {day: v.reason or "no fingerprint" for day, v in by_day.items() if not v.passed or not judged.get(day)}
        listed = sorted(failed)[:MAX_LISTED_DAYS]
        summary = f"{spec.name} on {spec.asset_key.to_user_string()}: {len(by_day)} day(s) judged, {len(failed)} failed"
        summary += f": {listed}{' ...' if len(failed) > len(listed) else ''}" if failed else ""
        partial = {
            day: sorted(v.rejected_series)
            for day, v in sorted(by_day.items())
            if day not in failed and v.rejected_series
        }
        shown = dict(list(partial.items())[:MAX_LISTED_DAYS])
        if partial:
            more = " ..." if len(partial) > len(shown) else ""
            summary += f"; {len(partial)} passed without some of their series: {shown}{more}"
        (context.log.warning if failed or partial else context.log.info)(summary)
        yield dg.AssetObservation(
            asset_key=spec.asset_key,
            metadata={
                "check": spec.name,
                "days_judged": len(by_day),
                "days_failed": len(failed),
                "failed_days": dg.MetadataValue.json(dict(sorted(failed.items())[:MAX_LISTED_DAYS])),
                **(
                    {
                        "series_days_rejected": sum(len(labels) for labels in partial.values()),
                        "rejected_series": dg.MetadataValue.json(shown),
                    }
                    if partial
                    else {}
                ),
            },
        )


def _series_metadata(rejected: Mapping[str, str]) -> dict[str, Any]:
    """The series a passing day rejected (label -> reason), for the day gate to leave out downstream."""
    return {REJECTED_SERIES: dg.MetadataValue.json(dict(rejected))} if rejected else {}


def recorded(context: dg.AssetCheckExecutionContext, evaluations: Sequence[dg.AssetCheckEvaluation]) -> Iterator[Any]:
    """The evaluations recorded as Dagster records a yielded one (same event, same message), as one batch if the
    instance's event log writes check batches (Dagster's own accept batches of asset events only)."""
    if not getattr(context.instance.event_log_storage, WRITES_CHECK_BATCHES, False):
        yield from evaluations
        return
    step = context.op_execution_context.get_step_execution_context()
    batch = generate_event_batch_id()
    for index, evaluation in enumerate(evaluations):
        yield DagsterEvent.from_step(
            event_type=DagsterEventType.ASSET_CHECK_EVALUATION,
            step_context=step,
            event_specific_data=evaluation,
            message=f"Asset check '{evaluation.check_name}' on '{evaluation.asset_key.to_user_string()}' "
            + ("passed." if evaluation.passed else "did not pass.")
            + (f" Description: '{evaluation.description}'" if evaluation.description is not None else ""),
            batch_metadata=DagsterEventBatchMetadata(batch, index == len(evaluations) - 1),
        )
