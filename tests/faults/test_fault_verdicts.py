"""Something happens between a verdict and the bytes it judged; the day gate must still pass only judged bytes.

Each scenario starts from `raw` for ten days of May 2012 built with its checks (the real code location, a Dagster
instance on disk made as `make dev` makes it; built once per module, each scenario on its own copy, but for the wipe
scenario, whose delivery differs), does one thing to the link between the files and their verdicts, then runs the
downstream `features` for the last three days (each look-back window holds eight raw days, together all ten) on a
real Ray head. "ungated" counts the features days built from raw bytes that no passing verdict judged: it must be 0.

- a run that wrote its files and was killed before Dagster recorded their materialisations;
- "Wipe materializations" (which deletes the check records), with one day that had failed its check;
- a run left queued and one cancelled before they judged (their planned check rows);
- a verdict looked up after the check read the file, while another writer replaced and recorded it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from support import run_range

from devtools.stack import prepare_home, recover_interrupted
from kernel.names import FINGERPRINT, GATES, RANGE_END, RANGE_START
from kernel.paths import PROJECT_ROOT, StatePaths
from kernel.records import Rejected
from kernel.settings import Settings
from platform_assets.definitions import build_definitions
from resources.storage import PartitionedParquetIOManager

from .conftest import BIKE_CSV, TODAY, FaultRow, FlakyDisk, bike_spec_document, copy_state, run_and_kill_when

NAME = "judged_bikes"
FIRST, LAST = "2012-05-01", "2012-05-10"
BUILT = ("2012-05-08", LAST)  # features days whose look-back windows hold every raw day of the range
BAD_DAY = "2012-05-05"
RAW_DAYS = [str(d.date()) for d in pd.date_range(FIRST, LAST)]

# A raw run of the range (its checks not selected, as the launchpad allows) in its own process; once the last
# day's file is renamed into place, the disk hangs: handle_output has not returned, so Dagster has recorded nothing.
HANGING_RUN = """
import sys, time
from datetime import date
from pathlib import Path
import dagster as dg
import pyarrow.fs as pafs
from kernel.names import RANGE_END, RANGE_START
from kernel.paths import PROJECT_ROOT
from kernel.settings import Settings
from platform_assets.definitions import build_definitions
from support import landed

home, specs, first, last, source = sys.argv[1:6]

class HangsAfterTheLastDay(pafs.LocalFileSystem):
    def move(self, src, dest):
        super().move(src, dest)
        if dest.endswith(f"/raw/{last}.parquet"):
            time.sleep(600)

pafs.LocalFileSystem = HangsAfterTheLastDay
settings = Settings(env="local", root=PROJECT_ROOT, home=Path(home), specs_dir=Path(specs), mlflow_ui_url="http://x")
job = build_definitions(settings, today=date(2013, 1, 1)).resolve_implicit_global_asset_job_def()
job = job.get_subset(asset_selection={dg.AssetKey(["judged_bikes", "raw"])}, asset_check_selection=set())
with dg.DagsterInstance.get() as instance:
    job.execute_in_process(instance=instance, tags={RANGE_START: first, RANGE_END: last, **landed(Path(source))})
"""


class Platform:
    """The code location over a landing zone of May 2012, its asset store and its Dagster home, all under `root`."""

    def __init__(self, root: Path) -> None:
        self.landing, self.specs, self.home = root / "landing", root / "specs", root / "home"
        source = pd.read_csv(BIKE_CSV)
        self.source = source[(source["yr"] == 1) & (source["mnth"] == 5)]
        self.settings = Settings(
            env="local", root=PROJECT_ROOT, home=self.home, specs_dir=self.specs, mlflow_ui_url="http://x"
        )
        self.dagster_home = prepare_home(self.home)
        self.defs = build_definitions(self.settings, today=TODAY)
        store = (self.defs.resources or {})["io_manager"]
        assert isinstance(store, PartitionedParquetIOManager)
        self.store = store
        self.raw = dg.AssetKey([NAME, "raw"])
        self.features = dg.AssetKey([NAME, "features"])

    @classmethod
    def create(cls, root: Path) -> Platform:
        """A new root: the spec, and May 2012 delivered to the landing zone."""
        (root / "landing").mkdir()
        (root / "specs").mkdir()
        document = bike_spec_document(
            name=NAME,
            source={"uri": str(root / "landing" / "*.csv")},
            partitioning={"start_date": FIRST, "end_date": "2012-06-01", "rebase_to_yesterday": False},
        )
        (root / "specs" / f"{NAME}.yaml").write_text(yaml.safe_dump(document))
        platform = cls(root)
        platform.deliver(platform.source)
        return platform

    def deliver(self, frame: pd.DataFrame) -> None:
        frame.to_csv(self.landing / "hour.csv", index=False)

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.dagster_home))

    def build_raw(self, instance: dg.DagsterInstance) -> None:
        """Raw for the range with its checks: the run must succeed (a failed day is a verdict, not an error)."""
        result = run_range(self.defs, ["raw"], NAME, (FIRST, LAST), instance)
        assert result.success, "the raw run of the range failed"

    def build_features(self, instance: dg.DagsterInstance) -> dict[str, pd.DataFrame | Rejected]:
        """The downstream run: features for BUILT; it must succeed, its days built or rejected with the reason."""
        result = run_range(self.defs, ["features"], NAME, BUILT, instance)
        assert result.success, "the features run failed"
        days = [str(d.date()) for d in pd.date_range(*BUILT)]
        values = {day: self.store.read(self.features, day) for day in days}
        return {day: value for day, value in values.items() if isinstance(value, pd.DataFrame | Rejected)}


def ungated(values: dict[str, pd.DataFrame | Rejected], unjudged: Sequence[str]) -> int:
    """Features days built although their look-back window (the day and the seven before) holds a raw day whose
    bytes no passing verdict judged."""
    return sum(
        isinstance(value, pd.DataFrame) and any(0 <= (pd.Timestamp(day) - pd.Timestamp(u)).days <= 7 for u in unjudged)
        for day, value in values.items()
    )


def reasons(values: dict[str, pd.DataFrame | Rejected]) -> str:
    return " | ".join(value.reason for value in values.values() if isinstance(value, Rejected))


@pytest.fixture(scope="module")
def judged_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """May 2012 delivered and raw built with its checks, every day passing: built once, copied by `judged`."""
    root = tmp_path_factory.mktemp("judged_template")
    platform = Platform.create(root)
    with platform.instance() as instance:
        platform.build_raw(instance)
    return root


@pytest.fixture
def judged(judged_template: Path, tmp_path: Path) -> Platform:
    """The test's own copy of the judged raw (its landing zone, asset store and Dagster home)."""
    return Platform(copy_state(judged_template, tmp_path / "judged"))


@pytest.mark.faults
@pytest.mark.timeout(400)
def test_files_written_by_a_run_killed_before_its_events_are_not_used(
    tmp_path: Path, ray_address: str, fault: FaultRow
) -> None:
    fault.scenario = "killed after writes, before events"
    fault.injected = "kill -9 of a raw run (checks not selected) after all 10 days' files, before Dagster recorded them"
    # Its own platform, not a copy: the corrected delivery must replace the ingest log's entry of the same landing
    # path, and a copy's entries name the template's paths.
    platform = Platform.create(tmp_path)
    with platform.instance() as instance:
        platform.build_raw(instance)
    store = StatePaths(platform.home).assets / NAME / "raw"
    old = {day: pd.read_parquet(store / f"{day}.parquet") for day in (FIRST, LAST)}

    platform.deliver(platform.source.assign(cnt=platform.source["cnt"] + 1000))  # a corrected delivery
    started = time.time()
    env = {**os.environ, "DAGSTER_HOME": str(platform.dagster_home), "PYTHONPATH": f"{PROJECT_ROOT}/tests"}
    source = str(platform.landing / "hour.csv")  # its run lands it, as the landing sensor's run would
    command = [sys.executable, "-c", HANGING_RUN, str(platform.home), str(platform.specs), FIRST, LAST, source]
    run_and_kill_when(command, env, lambda: (store / f"{LAST}.parquet").stat().st_mtime > started, "the last day")
    new = {day: pd.read_parquet(store / f"{day}.parquet") for day in (FIRST, LAST)}
    assert all(not new[day].equals(old[day]) for day in new), "the killed run did not replace the files"
    recover_interrupted(platform.home)  # what `make dev` does first on its next start

    with platform.instance() as instance:
        killed = instance.get_runs(limit=1)[0]
        recorded = instance.get_materialized_partitions(platform.raw)
        assert not [
            r for r in instance.fetch_materializations(platform.raw, limit=100).records if r.run_id == killed.run_id
        ], "the kill landed after the materialisations were recorded"
        features = platform.build_features(instance)
    fault.ungated = ungated(features, RAW_DAYS)
    assert fault.ungated == 0, f"features built from never-judged raw bytes: {sorted(features)}"
    assert len(features) == 3 and "were never judged by passes_expectations" in reasons(features), reasons(features)
    assert "the file changed since" in reasons(features)
    assert len(recorded) == 10

    with platform.instance() as instance:  # a complete run judges the new bytes; the same days then build
        platform.build_raw(instance)
        rebuilt = platform.build_features(instance)
    assert all(isinstance(value, pd.DataFrame) for value in rebuilt.values()), reasons(rebuilt)
    fault.result = (
        "3 of 3 features days rejected: 'the stored bytes ... were never judged by passes_expectations: its latest "
        "verdict judged bytes ...; the file changed since'; after a complete re-run all 3 build"
    )


@pytest.mark.faults
@pytest.mark.timeout(400)
def test_a_wiped_history_rejects_every_day_and_the_failed_one_stays_out(
    tmp_path: Path, ray_address: str, fault: FaultRow
) -> None:
    fault.scenario = "wipe materializations, then load"
    fault.injected = f"raw judged (one day, {BAD_DAY}, failed its check), then instance.wipe_assets (the UI's wipe)"
    platform = Platform.create(tmp_path)
    bad_hours = pd.to_datetime(platform.source["dteday"], format="%m/%d/%y").dt.strftime("%Y-%m-%d") == BAD_DAY
    platform.deliver(platform.source.assign(cnt=platform.source["cnt"].where(~bad_hours, -5)))
    with platform.instance() as instance:
        platform.build_raw(instance)
        before = platform.build_features(instance)
        assert ungated(before, [BAD_DAY]) == 0 and "passes_expectations failed" in reasons(before), reasons(before)
        instance.wipe_assets([platform.raw])
        after = platform.build_features(instance)
    fault.ungated = ungated(after, RAW_DAYS)
    assert fault.ungated == 0, "a wiped history let raw days load as DataFrames (the failed one included)"
    assert "history was wiped at" in reasons(after), reasons(after)
    fault.result = "3 of 3 features days rejected: 'no verdict ... on record ...: the asset's history was wiped at ...'"


@pytest.mark.faults
@pytest.mark.timeout(400)
def test_planned_checks_of_a_queued_and_a_cancelled_run_reject_no_day(
    judged: Platform, ray_address: str, fault: FaultRow
) -> None:
    fault.scenario = "queued and cancelled runs"
    fault.injected = "raw judged; then a raw run of the range left queued and one cancelled before judging"
    platform = judged
    raw_checks = {dg.AssetCheckKey(platform.raw, name) for name in GATES["raw"]}
    job = platform.defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={platform.raw}, asset_check_selection=raw_checks
    )
    with platform.instance() as instance:
        tags = {RANGE_START: FIRST, RANGE_END: LAST}
        instance.create_run_for_job(job, asset_selection=frozenset({platform.raw}), tags=tags)
        cancelled = instance.create_run_for_job(job, asset_selection=frozenset({platform.raw}), tags=tags)
        instance.report_run_canceled(cancelled)
        infos = instance.event_log_storage.get_asset_check_partition_info(list(raw_checks))
        assert {i.latest_execution_status.value for i in infos} == {"PLANNED"}, "the runs planned no check rows"
        features = platform.build_features(instance)
    fault.ungated = ungated(features, [])
    assert all(isinstance(value, pd.DataFrame) for value in features.values()), reasons(features)
    fault.result = "planned rows (PLANNED, runs queued/cancelled) ignored: 3 of 3 features days built on judged bytes"


@pytest.mark.faults
@pytest.mark.timeout(400)
def test_a_verdict_is_credited_to_the_bytes_the_check_read(
    flaky_disk: type[FlakyDisk], judged: Platform, ray_address: str, fault: FaultRow
) -> None:
    fault.scenario = "verdict credited to other bytes"
    fault.injected = f"while a check run reads raw {LAST}, another writer replaces it (bad counts) and records it"
    platform = judged
    checks_only = platform.defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection={dg.AssetCheckKey(platform.raw, n) for n in GATES["raw"]}
    )
    with platform.instance() as instance:

        def another_writer() -> None:  # its file and its materialisation land while the check reads the old bytes
            platform.store.write(platform.raw, LAST, platform.store.read(platform.raw, LAST).assign(cnt=-1))
            written = platform.store.fingerprint(platform.raw, LAST)
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=platform.raw, partition=LAST, metadata={FINGERPRINT: written})
            )

        flaky_disk.on_open[platform.store.path_for(platform.raw, LAST, "parquet")] = another_writer
        checked = checks_only.execute_in_process(
            instance=instance, tags={RANGE_START: FIRST, RANGE_END: LAST}, raise_on_error=False
        )
        assert checked.success and not flaky_disk.on_open, "the other writer did not run during the check"
        features = platform.build_features(instance)
    fault.ungated = ungated(features, [LAST])
    assert fault.ungated == 0, "the check's verdict on the old bytes passed the other writer's bad bytes"
    assert "never judged by passes_expectations" in reasons(features), reasons(features)
    assert isinstance(features[LAST], Rejected), "the day whose window holds the replaced bytes was built"
    fault.result = f"features {LAST} rejected: raw {LAST}'s bytes were never judged (the verdict names the old ones)"
