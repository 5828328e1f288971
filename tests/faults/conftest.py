"""The fault suite's tools: a landing zone of real files, a disk that fails on cue, and the table of what happened.

Every fault test fills one row: the scenario, what was injected, what was lost (landing rows: delivered files found
neither in the landing zone nor in quarantine afterwards, plus days of good files that the runs the sensor requested
did not store; run rows: partitions left torn or missing after the re-run), ungated promotions (a `champion` alias on
a version without its stored, gated record), duplicate runs (more than one successful run for a partition of a
backfill) and the result; a column that does not apply shows "-". `make faults` runs `pytest -m faults` with
`FAULTS_REPORT` set to `benchmarks/results/faults.json`: the table is printed at the end and written there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Self

import dagster as dg
import pyarrow.fs as pafs
import pytest
import yaml
from support import run_range

from devtools.stack import prepare_home
from kernel.names import CHAMPION, RANGE_END, RANGE_START, SOURCE_FILES_TAG
from kernel.paths import PROJECT_ROOT
from kernel.settings import Settings
from platform_assets.definitions import build_definitions
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

NAME = "faulty_bikes"
REPORT_ENV = "FAULTS_REPORT"
BIKE_CSV = PROJECT_ROOT / "data" / "bike_sharing" / "hour.csv"
# This folder is a package (see tests/integration/conftest.py): its modules import from `.conftest`, not from
# tests/conftest.py, which pyright would not resolve from here; so the little they share is repeated here.
TODAY = date(2013, 1, 1)


def bike_spec_document(**sections: Any) -> dict[str, Any]:
    """The shipped bike spec as a dict, top-level sections updated from `sections`."""
    document = yaml.safe_load((PROJECT_ROOT / "pipelines" / "bike_demand.yaml").read_text())
    for section, value in sections.items():
        document[section] = {**document.get(section, {}), **value} if isinstance(value, dict) else value
    return document


def promotable_bikes(root: Path, name: str) -> Settings:
    """Local settings under `root` (specs in `root/specs`, state in `root/home`) with one bike spec named `name`:
    a 56-day window, one cheap candidate and gates loose enough that its model partitions from 2012-06 pass."""
    specs = root / "specs"
    specs.mkdir()
    document = bike_spec_document(
        name=name,
        partitioning={"start_date": "2012-03-01", "end_date": "2012-08-01", "rebase_to_yesterday": False},
        training={"window_days": 56, "candidates": [{"family": "hist_gradient_boosting", "params": {"max_iter": 100}}]},
        promotion={"min_improvement_over_baseline": 0.0, "max_regression_vs_champion": 10.0},
    )
    (specs / f"{name}.yaml").write_text(yaml.safe_dump(document))
    return local_settings(root)


def local_settings(root: Path) -> Settings:
    """Local settings for a root made by `promotable_bikes` (or a copy of one): specs in `root/specs`, state in
    `root/home`."""
    return Settings(env="local", root=PROJECT_ROOT, home=root / "home", specs_dir=root / "specs", mlflow_ui_url="x")


def copy_state(template: Path, target: Path) -> Path:
    """Copy a test's root (specs, landing zone, asset store, MLflow store and artifacts, Dagster home) to `target`,
    every absolute path in it moved from `template` to `target`; returns `target`.

    MLflow's SQLite store names its artifacts by absolute URI and Dagster's event log names stored files: without
    the move the copy would load, and overwrite, the template's artifacts. SQLite files are rewritten with SQL (every
    text column), other files must be text (the specs, MLflow's `MLmodel`). A copy is as independent of the template
    as a root built from scratch, and much cheaper than training again.
    """
    shutil.copytree(template, target)
    old, new = f"{template}/", f"{target}/"
    for path in target.rglob("*"):
        if not path.is_file() or old.encode() not in (data := path.read_bytes()):
            continue
        if data.startswith(b"SQLite format 3\x00"):
            _move_paths_in_sqlite(path, old, new)
        else:
            path.write_text(data.decode().replace(old, new))
    return target


def _move_paths_in_sqlite(path: Path, old: str, new: str) -> None:
    connection = sqlite3.connect(path)
    try:
        with connection:
            tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for column in [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]:
                    connection.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                        f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                        (old, new, old),
                    )
                    left = connection.execute(
                        f'SELECT count(*) FROM "{table}" WHERE instr("{column}", ?) > 0', (old.encode(),)
                    ).fetchone()[0]
                    assert left == 0, f"{path.name}: {table}.{column} names {old} in {left} non-text values"
    finally:
        connection.close()


# The trained home the promotion and lineage scenarios start from: raw and features FIRST..LATER, a model
# partition for BEFORE promoted to champion, and one for DAY trained (its gates passed) but not promoted yet.
TRAINED = "promoted_bikes"
FIRST, BEFORE, DAY, LATER = "2012-04-25", "2012-06-25", "2012-06-26", "2012-06-27"  # 56-day windows that pass


@dataclass
class TrainedHome:
    """A copy of the trained home: its settings, code location, Dagster home, MLflow tracking and asset store."""

    root: Path
    settings: Settings
    dagster_home: Path
    defs: dg.Definitions
    tracking: MlflowTracking
    store: PartitionedParquetIOManager

    @classmethod
    def at(cls, root: Path) -> Self:
        settings = local_settings(root)
        dagster_home = prepare_home(settings.home)
        defs = build_definitions(settings, today=TODAY)
        resources = defs.resources or {}
        tracking, store = resources["mlflow"], resources["io_manager"]
        assert isinstance(tracking, MlflowTracking) and isinstance(store, PartitionedParquetIOManager)
        return cls(root, settings, dagster_home, defs, tracking, store)

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.dagster_home))

    def model_version(self, day: str) -> str:
        """The registry version the stored model record of `day` names."""
        return str(self.store.read(dg.AssetKey([TRAINED, "model"]), day)["version"])


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory: pytest.TempPathFactory, ray_address: str) -> Path:
    """The trained home, built once per session (training is what the scenarios' setup costs); scenarios get
    their own copy from `trained_home` and never touch this one."""
    root = tmp_path_factory.mktemp("trained_template")
    promotable_bikes(root, TRAINED)
    home = TrainedHome.at(root)
    with home.instance() as instance:
        assert run_range(home.defs, ["raw", "features"], TRAINED, (FIRST, LATER), instance).success
        assert run_range(home.defs, ["model", "champion"], TRAINED, (BEFORE, BEFORE), instance).success
        assert run_range(home.defs, ["model"], TRAINED, (DAY, DAY), instance).success
    first = home.tracking.alias_version(TRAINED, CHAMPION)
    assert first is not None and first == home.model_version(BEFORE) != home.model_version(DAY)
    return root


@pytest.fixture
def trained_home(trained_template: Path, tmp_path: Path) -> TrainedHome:
    """The test's own copy of the trained home (it may do anything to it)."""
    return TrainedHome.at(copy_state(trained_template, tmp_path / "trained"))


@dataclass
class FaultRow:
    """One line of the table: what was done to the platform and what became of it."""

    scenario: str = ""
    injected: str = ""
    lost: int | None = None
    ungated: int | None = None
    duplicates: int | None = None
    result: str = ""
    outcome: str = "not run"
    seconds: float = 0.0


ROWS: list[FaultRow] = []


class FlakyDisk(pafs.LocalFileSystem):
    """The local filesystem with faults on cue at `open_input_file`, the one call that reads a landing file.

    `fail_once[path] = exc` raises `exc` at the next open of `path`; `on_open[path] = fn` runs `fn()` right after
    the next open of `path` succeeded (e.g. a writer replacing the file under the reader). `opened` lists every
    path that was opened. Only pyarrow's I/O is replaced: the code under test runs as it is.
    """

    fail_once: dict[str, BaseException] = {}  # noqa: RUF012 - class-level on purpose: every instance is the one disk
    on_open: dict[str, Callable[[], None]] = {}  # noqa: RUF012
    opened: list[str] = []  # noqa: RUF012

    def open_input_file(self, path: str) -> Any:
        FlakyDisk.opened.append(path)
        if (exc := FlakyDisk.fail_once.pop(path, None)) is not None:
            raise exc
        handle = super().open_input_file(path)
        if (hook := FlakyDisk.on_open.pop(path, None)) is not None:
            hook()
        return handle


@pytest.fixture
def flaky_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FlakyDisk]]:
    """Every `pyarrow.fs.LocalFileSystem()` made during the test is a `FlakyDisk`."""
    FlakyDisk.fail_once, FlakyDisk.on_open, FlakyDisk.opened = {}, {}, []
    monkeypatch.setattr(pafs, "LocalFileSystem", FlakyDisk)
    yield FlakyDisk
    FlakyDisk.fail_once, FlakyDisk.on_open, FlakyDisk.opened = {}, {}, []


def wait_until(what: str, condition: Callable[[], bool], timeout: float, log: Path, poll: float = 0.05) -> None:
    """Poll `condition` until it holds; after `timeout` seconds fail with the tail of `log` (the process's output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what}; tail of {log.name}:\n{log.read_text(errors='replace')[-4000:]}")


def run_and_kill_when(command: list[str], env: dict[str, str], condition: Callable[[], bool], what: str) -> None:
    """Run `command` (its own process group, from the project root) and SIGKILL the whole group as soon as
    `condition` holds; fail if the process exits first or two minutes pass. The group is killed in any case."""
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not condition():
            assert process.poll() is None, f"the process exited ({process.returncode}) before {what}"
            assert time.monotonic() < deadline, f"no {what} within 120 s"
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
        process.wait(timeout=30)


def request_files(request: dg.RunRequest) -> str:
    """The names of the files a landing run request reads, comma-separated."""
    return ", ".join(Path(path).name for path in json.loads(request.tags[SOURCE_FILES_TAG]))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def raw_key() -> dg.AssetKey:
    return dg.AssetKey([NAME, "raw"])


@dataclass
class Landing:
    """A landing zone of real files, the real landing sensor over it, the runs it requests (launched in-process on
    the sensor's instance, as the daemon would launch them) and the bookkeeping of what was delivered."""

    root: Path
    delivered: list[str] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)
    cursor: str | None = None
    requests: list[dg.RunRequest] = field(default_factory=list)
    launched: list[dg.ExecuteInProcessResult] = field(default_factory=list)
    instance: dg.DagsterInstance = field(default_factory=dg.DagsterInstance.ephemeral)
    _defs: dg.Definitions | None = None
    _sensor: dg.SensorDefinition | None = None

    @property
    def zone(self) -> Path:
        return self.root / "landing"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def defs(self) -> dg.Definitions:
        assert self._defs is not None, "build() first"
        return self._defs

    def build(self, quarantine_uri: str | None = None, **source: Any) -> dg.SensorDefinition:
        """The real code location for a bike spec reading `<zone>/*.csv`, and its landing sensor."""
        self.zone.mkdir(parents=True, exist_ok=True)
        document = bike_spec_document(
            name=NAME,
            source={"uri": str(self.zone / "*.csv"), **source},
            partitioning={"start_date": "2012-01-01", "end_date": "2013-01-01", "rebase_to_yesterday": False},
        )
        specs = self.root / "specs"
        specs.mkdir(exist_ok=True)
        (specs / f"{NAME}.yaml").write_text(yaml.safe_dump(document))
        settings = Settings(
            env="local", root=PROJECT_ROOT, home=self.home, specs_dir=specs, mlflow_ui_url="http://127.0.0.1:5000"
        )
        if quarantine_uri is not None:
            settings = dataclasses.replace(settings, quarantine_uri=quarantine_uri)
        self._defs = build_definitions(settings, today=TODAY)
        self._sensor = self._defs.resolve_sensor_def(f"{NAME}_landing_sensor")
        return self._sensor

    def deliver(self, name: str, data: bytes, holds: tuple[str, ...] = ()) -> Path:
        """A complete file arrives (its content is what must never be lost); `holds` are the days it must land as
        (raw partitions the runs it leads to store), none for a file that must be refused."""
        path = self.zone / name
        path.write_bytes(data)
        self.delivered.append(digest(data))
        self.expected.update(holds)
        return path

    def tick(self) -> dg.SensorResult:
        """One evaluation of the landing sensor with the cursor of the previous one."""
        assert self._sensor is not None, "build() first"
        result = self._sensor(dg.build_sensor_context(cursor=self.cursor, instance=self.instance))
        assert isinstance(result, dg.SensorResult)
        self.cursor = result.cursor
        self.requests += result.run_requests or []
        return result

    def launch(self) -> list[dg.ExecuteInProcessResult]:
        """Run the requests not run yet, each with its assets and tags, in-process on the sensor's instance (as the
        daemon launches them); returns every run so far."""
        job = self.defs.resolve_implicit_global_asset_job_def()
        for request in self.requests[len(self.launched) :]:
            self.launched.append(
                job.execute_in_process(
                    instance=self.instance,
                    asset_selection=list(request.asset_selection or []),
                    tags=request.tags,
                    raise_on_error=False,
                )
            )
        return self.launched

    def ranges(self, result: dg.SensorResult | None = None) -> list[tuple[str, str, str]]:
        """(file name, first day, last day) of each request of one tick, or of every tick so far."""
        requests = self.requests if result is None else (result.run_requests or [])
        return [(request_files(r), r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests]

    def landed(self) -> list[str]:
        return sorted(p.name for p in self.zone.iterdir() if p.is_file())

    def kept(self, *roots: Path) -> set[str]:
        """Digests of every file under the test's folder (and `roots`): the landing zone, quarantine, anywhere."""
        found = set()
        for root in (self.root, *roots):
            for path in root.rglob("*"):
                if path.is_file():
                    found.add(digest(path.read_bytes()))
        return found

    def store(self) -> PartitionedParquetIOManager:
        store = (self.defs.resources or {})["io_manager"]
        assert isinstance(store, PartitionedParquetIOManager)
        return store

    def stored_days(self) -> set[str]:
        """The expected days whose raw partition is stored with rows."""
        if not self.expected:
            return set()
        store = self.store()
        return {day for day in self.expected if store.exists(raw_key(), day) and len(store.read(raw_key(), day)) > 0}

    def lost(self, *roots: Path) -> int:
        """Delivered files kept nowhere, plus expected days the requested runs did not store."""
        kept = self.kept(*roots)
        return sum(1 for d in self.delivered if d not in kept) + len(self.expected - self.stored_days())


@pytest.fixture
def fault(request: pytest.FixtureRequest) -> Iterator[FaultRow]:
    """The test's row of the table; its outcome is filled in from the test's report."""
    row = FaultRow()
    started = time.perf_counter()
    yield row
    row.seconds = round(time.perf_counter() - started, 2)
    report = getattr(request.node, "rep_call", None)
    known = report is not None and hasattr(report, "wasxfail")  # a product bug the test is marked as expecting
    row.outcome = "not run" if report is None else "xfailed" if known else report.outcome
    if report is not None and (report.failed or known):
        crash = getattr(report.longrepr, "reprcrash", None)
        message = getattr(crash, "message", None) or str(report.longrepr).strip().splitlines()[-1]
        row.result = ("KNOWN BUG: " if known else "FAIL: ") + " ".join(message.split())[:150]
    ROWS.append(row)


@pytest.fixture
def landing(tmp_path: Path, fault: FaultRow, ray_address: str) -> Iterator[Landing]:
    """A landing zone whose lost files are counted into the test's row when the test ends (pass or fail)."""
    zone = Landing(tmp_path)
    yield zone
    if fault.lost is None:
        fault.lost = zone.lost()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.rep_call = report  # pyright: ignore[reportAttributeAccessIssue]
    return report


def table(rows: list[FaultRow]) -> str:
    headers = ("scenario", "injected", "lost", "ungated", "duplicates", "result", "seconds")
    shown = lambda count: "-" if count is None else str(count)  # noqa: E731
    cells = [
        (r.scenario, r.injected, shown(r.lost), shown(r.ungated), shown(r.duplicates), r.result, f"{r.seconds:.0f}")
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(headers), line(tuple("-" * w for w in widths)), *(line(c) for c in cells)])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """With FAULTS_REPORT set (`make faults`): print the table and write it, with the run's context, as JSON."""
    target = os.environ.get(REPORT_ENV)
    if not target or not ROWS:
        return
    rows = list(ROWS)
    terminalreporter.write_sep("=", "fault suite")
    terminalreporter.write_line(table(rows))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "python": platform.python_version(),
        "passed": sum(r.outcome == "passed" for r in rows),
        "failed": sum(r.outcome == "failed" for r in rows),
        "lost": sum(r.lost or 0 for r in rows),
        "ungated": sum(r.ungated or 0 for r in rows),
        "duplicates": sum(r.duplicates or 0 for r in rows),
        "scenarios": [asdict(r) for r in rows],
    }
    path = Path(target) if Path(target).is_absolute() else PROJECT_ROOT / target
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)
    shown = path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path
    terminalreporter.write_line(f"written to {shown}")
