"""The day gate binds verdicts to bytes: a day loads only if the bytes on disk carry the fingerprint a passing
verdict judged. Real Dagster runs on a real (temporary, SQLite) instance through the real asset store and `emit`."""

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from checks.emit import emit, judged_by_writer, multi_check, run_chunks
from kernel.names import ALLOW_MISSING_PARTITIONS, FINGERPRINT, GATE_CHECKS, RANGE_END, RANGE_START
from kernel.records import Rejected
from ml.quality import Verdict, judge_days
from resources.storage import PartitionedParquetIOManager
from resources.store import FINGERPRINT_KEY, Written
from resources.verdicts import rejected_days

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-10")
KEY = dg.AssetKey(["demo", "daily"])
CHECK = "positive"
DAYS = ["2024-01-02", "2024-01-03", "2024-01-04"]


def frame(day: str, sign: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"day": [day, day], "value": [sign * float(day[-2:]), sign * 10.0]})


# The days whose values the next run of `daily` writes as negative (so `positive` fails them).
NEGATIVE: set[str] = set()


@dg.asset(key=KEY, partitions_def=DAILY, backfill_policy=dg.BackfillPolicy.single_run())
def daily(context: dg.AssetExecutionContext) -> dict[str, pd.DataFrame]:
    return {day: frame(day, -1.0 if day in NEGATIVE else 1.0) for day in context.partition_keys}


SPECS = [dg.AssetCheckSpec(CHECK, asset=KEY, blocking=True, partitions_def=DAILY)]


@multi_check("demo_checks", SPECS, "demo.raw")
def demo_checks(
    context: dg.AssetCheckExecutionContext, io_manager: dg.ResourceParam[PartitionedParquetIOManager]
) -> Iterator[Any]:
    positive = lambda _day, f: Verdict(bool((f["value"] > 0).all()), "" if (f["value"] > 0).all() else "negative")  # noqa: E731
    yield from emit(
        context, SPECS, run_chunks(context, io_manager, KEY), {CHECK: lambda days: judge_days(days, positive)}
    )


@dg.asset(
    key=["demo", "next"],
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={"upstream": dg.AssetIn(key=KEY, metadata={ALLOW_MISSING_PARTITIONS: True, GATE_CHECKS: [CHECK]})},
)
def downstream(context: dg.AssetExecutionContext, upstream: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Each day records what its upstream day loaded as: a frame, or the rejection's reason."""
    return {
        day: {"loaded": "frame"} if isinstance(upstream.get(day), pd.DataFrame) else {"loaded": str(upstream.get(day))}
        for day in context.partition_keys
    }


WRITTEN = dg.AssetKey(["demo", "written"])
# The days another writer replaces (with negative values) right after the writer of `written` wrote and judged them.
REPLACED_AFTER_WRITE: set[str] = set()


@dg.asset(key=WRITTEN, partitions_def=DAILY, backfill_policy=dg.BackfillPolicy.single_run())
def written(
    context: dg.AssetExecutionContext, io_manager: dg.ResourceParam[PartitionedParquetIOManager]
) -> dict[str, Written]:
    """Each day written and judged by its writer, as a range run's Ray task does."""
    done = {}
    for day in context.partition_keys:
        wrote = io_manager.store.write(WRITTEN.path, day, frame(day))
        done[day] = replace(wrote, verdicts={CHECK: Verdict(True, metadata={"judged_by": "writer"})})
        if day in REPLACED_AFTER_WRITE:
            io_manager.store.write(WRITTEN.path, day, frame(day, -1.0))
    return done


WRITTEN_SPECS = [dg.AssetCheckSpec(CHECK, asset=WRITTEN, blocking=True, partitions_def=DAILY)]


@multi_check("written_checks", WRITTEN_SPECS, "demo.written")
def written_checks(
    context: dg.AssetCheckExecutionContext, io_manager: dg.ResourceParam[PartitionedParquetIOManager]
) -> Iterator[Any]:
    def positive(_day: str, f: pd.DataFrame) -> Verdict:
        return Verdict(bool((f["value"] > 0).all()), metadata={"judged_by": "reader"})

    by_writer = judged_by_writer(context, WRITTEN)
    chunks = run_chunks(context, io_manager, WRITTEN, skip=by_writer)
    yield from emit(context, WRITTEN_SPECS, chunks, {CHECK: lambda days: judge_days(days, positive)}, by_writer)


@pytest.fixture
def store(tmp_path: Path) -> PartitionedParquetIOManager:
    return PartitionedParquetIOManager(base_uri=str(tmp_path / "assets"))


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    NEGATIVE.clear()
    REPLACED_AFTER_WRITE.clear()
    with dg.instance_for_test() as instance:
        yield instance


# What a run selects: the asset alone, the asset and its check, the check alone, the downstream asset.
BUILD = dg.AssetSelection.assets(KEY).without_checks()
BUILD_AND_JUDGE = dg.AssetSelection.assets(KEY)
JUDGE = dg.AssetSelection.checks(dg.AssetCheckKey(KEY, CHECK))
LOAD = dg.AssetSelection.assets(dg.AssetKey(["demo", "next"]))


def run(
    store: PartitionedParquetIOManager,
    instance: dg.DagsterInstance,
    selection: dg.AssetSelection,
    days: tuple[str, str] = (DAYS[0], DAYS[-1]),
) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [daily, downstream, demo_checks, written, written_checks],
        selection=selection,
        instance=instance,
        resources={"io_manager": store},
        tags={RANGE_START: days[0], RANGE_END: days[1]},
        raise_on_error=False,
    )
    assert result.success
    return result


def build_and_judge(store: PartitionedParquetIOManager, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return run(store, instance, BUILD_AND_JUDGE)


def loaded(store: PartitionedParquetIOManager, instance: dg.DagsterInstance) -> dict[str, str]:
    run(store, instance, LOAD)
    return {day: store.read(dg.AssetKey(["demo", "next"]), day)["loaded"] for day in DAYS}


def gate(store: PartitionedParquetIOManager, instance: dg.DagsterInstance) -> dict[str, str]:
    return rejected_days(instance, KEY, [CHECK], store.fingerprints(KEY, DAYS))


# --- the fingerprint written with the bytes ---


def test_parquet_footer_holds_the_fingerprint_of_the_table(store: PartitionedParquetIOManager) -> None:
    path, fingerprint = store.write_stored(KEY, DAYS[0], frame(DAYS[0]))
    assert fingerprint.startswith("sha256:")
    assert pq.read_metadata(path).metadata[FINGERPRINT_KEY].decode() == fingerprint
    assert store.fingerprint(KEY, DAYS[0]) == fingerprint == store.read_stored(KEY, DAYS[0]).fingerprint
    assert store.write_stored(KEY, DAYS[0], frame(DAYS[0]))[1] == fingerprint, "same content, same fingerprint"
    assert store.write_stored(KEY, DAYS[0], frame(DAYS[0], -1.0))[1] != fingerprint
    pd.testing.assert_frame_equal(store.read(KEY, DAYS[0]), frame(DAYS[0], -1.0))


def test_json_fingerprint_is_the_hash_of_its_bytes(store: PartitionedParquetIOManager) -> None:
    path, fingerprint = store.write_stored(KEY, DAYS[0], {"a": 1})
    assert fingerprint == "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert store.read_stored(KEY, DAYS[0]).fingerprint == fingerprint


def test_a_file_written_by_something_else_or_damaged_has_no_fingerprint(store: PartitionedParquetIOManager) -> None:
    path = Path(store.path_for(KEY, DAYS[0], "parquet"))
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(frame(DAYS[0])), path)
    Path(store.path_for(KEY, DAYS[1], "parquet")).write_bytes(b"not parquet at all")
    assert store.fingerprint(KEY, DAYS[0]) is None
    assert store.fingerprints(KEY, DAYS) == {DAYS[0]: None, DAYS[1]: None}


def test_an_unreadable_file_is_rejected_for_judging_not_raised(store: PartitionedParquetIOManager) -> None:
    path = Path(store.path_for(KEY, DAYS[0], "parquet"))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet at all")
    stored = store.read_for_judging(KEY, [DAYS[0]], allow_missing=False)[DAYS[0]]
    assert stored.fingerprint is None
    assert isinstance(stored.value, Rejected)
    assert "cannot be read" in stored.value.reason


def test_each_partition_materialisation_records_its_fingerprint(
    store: PartitionedParquetIOManager, instance: dg.DagsterInstance
) -> None:
    result = build_and_judge(store, instance)
    recorded = {
        e.partition: e.materialization.metadata[FINGERPRINT].value for e in result.get_asset_materialization_events()
    }
    assert recorded == store.fingerprints(KEY, DAYS)
    assert len(set(recorded.values())) == len(DAYS)
    verdicts = {e.partition: e.metadata[FINGERPRINT].value for e in result.get_asset_check_evaluations()}
    assert verdicts == recorded, "every verdict names the bytes it judged"


def test_a_single_partition_run_has_its_fingerprint_as_data_version(
    store: PartitionedParquetIOManager, instance: dg.DagsterInstance
) -> None:
    run(store, instance, BUILD, days=(DAYS[0], DAYS[0]))
    record = instance.get_latest_data_version_record(KEY, partition_key=DAYS[0])
    assert record is not None
    assert (record.event_log_entry.tags or {}).get("dagster/data_version") == store.fingerprint(KEY, DAYS[0])


# --- the gate ---


def test_judged_bytes_load(store: PartitionedParquetIOManager, instance: dg.DagsterInstance) -> None:
    build_and_judge(store, instance)
    assert gate(store, instance) == {}
    assert loaded(store, instance) == dict.fromkeys(DAYS, "frame")


def test_a_failed_verdict_rejects_with_its_reason(
    store: PartitionedParquetIOManager, instance: dg.DagsterInstance
) -> None:
    NEGATIVE.add(DAYS[1])
    build_and_judge(store, instance)
    assert gate(store, instance) == {DAYS[1]: f"demo/daily {DAYS[1]}: {CHECK} failed: negative"}


def test_bytes_replaced_after_their_verdict_are_rejected_as_changed(
    store: PartitionedParquetIOManager, instance: dg.DagsterInstance
) -> None:
    build_and_judge(store, instance)
    store.write(KEY, DAYS[1], frame(DAYS[1], -1.0))  # a run that wrote its file and died before events or checks
    reason = gate(store, instance)[DAYS[1]]
    assert "were never judged by positive" in reason and "the file changed since" in reason
    assert loaded(store, instance)[DAYS[1]].startswith("rejected=True")


def test_bytes_with_no_verdict_are_rejected_not_tolerated(
    store: PartitionedParquetIOManager, instance: dg.DagsterInstance
) -> None:
    run(store, instance, BUILD)  # materialised, never judged
    store.write(KEY, "2024-01-05", frame("2024-01-05"))  # neither a materialisation nor a verdict
    rejected = rejected_days(instance, KEY, [CHECK], store.fingerprints(KEY, [*DAYS, "2024-01-05", "2024-01-06"]))
    assert sorted(rejected) == [*DAYS, "2024-01-05"], "2024-01-06 has no file: missing, not rejected"
    assert all("never judged" in reason for reason in rejected.values())


def test_a_wiped_history_rejects_and_says_so(store: PartitionedParquetIOManager, instance: dg.DagsterInstance) -> None:
    NEGATIVE.add(DAYS[1])
    build_and_judge(store, instance)
    instance.wipe_assets([KEY])
    rejected = gate(store, instance)
    assert sorted(rejected) == DAYS
    assert all("history was wiped" in reason for reason in rejected.values())
    assert loaded(store, instance)[DAYS[1]].startswith("rejected=True"), "the failed day does not come back"


def test_bytes_without_a_fingerprint_are_rejected_and_cannot_pass_a_check(
    store: PartitionedParquetIOManager, instance: dg.DagsterInstance
) -> None:
    build_and_judge(store, instance)
    pq.write_table(pa.Table.from_pandas(frame(DAYS[0])), store.path_for(KEY, DAYS[0], "parquet"))
    assert "stored without a readable fingerprint" in gate(store, instance)[DAYS[0]]
    result = run(store, instance, JUDGE)
    judged = {e.partition: e for e in result.get_asset_check_evaluations()}
    assert not judged[DAYS[0]].passed and judged[DAYS[0]].metadata[FINGERPRINT].value == "none"
    assert "stored without a fingerprint" in (judged[DAYS[0]].description or "")
    assert "stored without a readable fingerprint" in gate(store, instance)[DAYS[0]]


def test_an_unreadable_file_fails_its_check_and_is_rejected(
    store: PartitionedParquetIOManager, instance: dg.DagsterInstance
) -> None:
    build_and_judge(store, instance)
    Path(store.path_for(KEY, DAYS[0], "parquet")).write_bytes(b"garbage")
    result = run(store, instance, JUDGE)
    judged = {e.partition: e for e in result.get_asset_check_evaluations()}
    assert not judged[DAYS[0]].passed and "cannot be read" in (judged[DAYS[0]].description or "")
    assert "cannot be read" in loaded(store, instance)[DAYS[0]]


def test_a_queued_or_cancelled_run_planning_the_check_rejects_nothing(
    store: PartitionedParquetIOManager, instance: dg.DagsterInstance
) -> None:
    build_and_judge(store, instance)
    job = dg.Definitions(
        assets=[daily, downstream], asset_checks=[demo_checks], resources={"io_manager": store}
    ).resolve_implicit_global_asset_job_def()
    tags = {RANGE_START: DAYS[0], RANGE_END: DAYS[-1]}
    instance.create_run_for_job(job, tags=tags)  # left queued: never launched
    instance.report_run_canceled(instance.create_run_for_job(job, tags=tags))  # cancelled before it judged
    infos = instance.event_log_storage.get_asset_check_partition_info(
        [dg.AssetCheckKey(KEY, CHECK)], partition_keys=DAYS
    )
    assert {info.latest_execution_status.value for info in infos} == {"PLANNED"}
    assert gate(store, instance) == {}
    assert loaded(store, instance) == dict.fromkeys(DAYS, "frame")


def test_a_verdict_is_credited_to_the_bytes_it_read_not_the_latest_materialisation(
    store: PartitionedParquetIOManager, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(store, instance, BUILD)
    day = DAYS[1]
    original = PartitionedParquetIOManager.read_stored

    def read_then_replaced(self: PartitionedParquetIOManager, key: dg.AssetKey, partition: str | None) -> Any:
        read = original(self, key, partition)
        if partition == day:  # right after the check read the day, another run replaces and records it
            _, fingerprint = self.write_stored(key, day, frame(day, -1.0))
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=KEY, partition=day, metadata={FINGERPRINT: fingerprint})
            )
        return read

    monkeypatch.setattr(PartitionedParquetIOManager, "read_stored", read_then_replaced)
    result = run(store, instance, JUDGE)
    monkeypatch.undo()
    judged = {e.partition: e for e in result.get_asset_check_evaluations()}
    assert judged[day].passed, "the check judged the bytes it read, which were positive"
    assert judged[day].target_materialization_data is None, "not credited to the other run's materialisation"
    assert "the file changed since" in gate(store, instance)[day]
    assert loaded(store, instance)[day].startswith("rejected=True"), "the other run's bytes were never judged"


# --- verdicts reached by the writer ---


def test_a_run_records_its_writers_verdicts_and_a_check_run_alone_judges_the_stored_bytes(
    store: PartitionedParquetIOManager, instance: dg.DagsterInstance
) -> None:
    judged = dg.AssetCheckKey(WRITTEN, CHECK)
    by_run = run(store, instance, dg.AssetSelection.assets(WRITTEN)).get_asset_check_evaluations()
    on_disk = store.fingerprints(WRITTEN, DAYS)
    assert {e.partition: e.metadata["judged_by"].value for e in by_run} == dict.fromkeys(DAYS, "writer")
    assert {e.partition: e.metadata[FINGERPRINT].value for e in by_run} == on_disk
    assert all(e.target_materialization_data is not None for e in by_run), "credited to the run's materialisations"
    alone = run(store, instance, dg.AssetSelection.checks(judged)).get_asset_check_evaluations()
    assert {e.partition: e.metadata["judged_by"].value for e in alone} == dict.fromkeys(DAYS, "reader")
    assert {e.partition: e.metadata[FINGERPRINT].value for e in alone} == on_disk
    assert rejected_days(instance, WRITTEN, [CHECK], on_disk) == {}


def test_a_writers_verdict_names_the_bytes_it_wrote_not_those_that_replaced_them(
    store: PartitionedParquetIOManager, instance: dg.DagsterInstance
) -> None:
    day = DAYS[1]
    REPLACED_AFTER_WRITE.add(day)  # between the writer's judgement and the check step, other bytes take the file
    by_run = run(store, instance, dg.AssetSelection.assets(WRITTEN)).get_asset_check_evaluations()
    verdict = next(e for e in by_run if e.partition == day)
    assert verdict.passed and verdict.metadata["judged_by"].value == "writer"
    assert verdict.metadata[FINGERPRINT].value != store.fingerprint(WRITTEN, day), "it names the bytes it judged"
    rejected = rejected_days(instance, WRITTEN, [CHECK], store.fingerprints(WRITTEN, DAYS))
    assert list(rejected) == [day] and "were never judged by positive" in rejected[day]
