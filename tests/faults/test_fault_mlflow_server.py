"""The MLflow server dies while a model run logs to it: the run fails in bounded time with MLflow's error, no
`champion` alias lands on a version without a stored, gated record, and once the server is back a re-run promotes.

Real processes: `mlflow server` (SQLite backend, artifacts proxied to a local folder, 127.0.0.1) in its own process
group, and the model+champion run in a child process on a Dagster instance on disk (made as `make dev` makes it),
training on the session's real Ray head. The local wiring always logs to the local SQLite store, so the child swaps
in the tracking resource exactly as the production wiring builds it, `MlflowTracking(tracking_uri=
EnvVar("MLFLOW_TRACKING_URI"))`, and gets the server's URL in that variable. The server's process group gets
SIGKILL at a cue read from the server's database: in a run of three days trained in rounds of one, as soon as the
first day's MLflow run exists as RUNNING, mid-logging, before its model is registered, while the background logger
holds that round and Ray trains the next (`logging`); or once a model version is registered, before its tags and the
stored record (`registered`: the child's registry client is slow, 2 s, only at tagging a version, so the kill lands in
that window every time). The child has MLflow's HTTP retries set low, so it fails in seconds rather than minutes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import date
from pathlib import Path

import dagster as dg
import psutil
import pytest
from dev_stack import free_port
from support import run_range

from devtools.stack import BIN, MLFLOW_SERVER_ENV, prepare_home, stop
from kernel.days import day_range
from kernel.names import CHAMPION, MODEL_GATES
from kernel.paths import PROJECT_ROOT
from platform_assets.definitions import build_definitions
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking
from resources.verdicts import rejected_days

from .conftest import TODAY, FaultRow, promotable_bikes, wait_until

NAME = "unserved_bikes"
FIRST, DAY = "2012-04-25", "2012-06-26"  # the 56-day window of the gates that pass (as the promotion fault's)
# MLflow's client retries a refused connection 7 times with backoff 2 (minutes in all) by default: low here, so the
# run fails in seconds once the server is gone.
CLIENT_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
# Where the kill lands: a count in the server's database that turns positive, and what that moment is.
# (One kill mid-logging covers a run of one round too: the moment is the same, without a round training meanwhile.)
CUES = {
    "logging": ("SELECT count(*) FROM runs WHERE status = 'RUNNING'", "the first round's MLflow run is RUNNING"),
    "registered": ("SELECT count(*) FROM model_versions", "its model version is registered, before tags and record"),
}
# The model days of each cue's run, and the days per training round (the model asset's DAYS_PER_ROUND).
RANGES = {"logging": ("2012-06-24", DAY, 1), "registered": (DAY, DAY, 16)}

MODEL_RUN = """
import sys, time
from datetime import date
from pathlib import Path
import dagster as dg
from support import run_range
from kernel.paths import PROJECT_ROOT
from kernel.settings import Settings
from platform_assets.definitions import build_definitions
from platform_assets.stages import training
from mlflow import MlflowClient
from resources.tracking import MlflowTracking

home, specs, first, last, days_per_round, slow_tags = sys.argv[1:7]
training.DAYS_PER_ROUND = int(days_per_round)
if slow_tags == "slow":
    tag = MlflowClient.set_model_version_tag
    def slow_tag(self, *args, **kwargs):
        time.sleep(2)
        return tag(self, *args, **kwargs)
    MlflowClient.set_model_version_tag = slow_tag
settings = Settings(env="local", root=PROJECT_ROOT, home=Path(home), specs_dir=Path(specs), mlflow_ui_url="http://x")
local = build_definitions(settings, today=date(2013, 1, 1))
# The production wiring's tracking resource (platform_assets/wiring.py), on the local store and Ray head.
tracking = MlflowTracking(tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"))
defs = dg.Definitions(
    assets=local.assets, asset_checks=local.asset_checks, resources={**(local.resources or {}), "mlflow": tracking}
)
with dg.DagsterInstance.get() as instance:
    result = run_range(defs, ["model", "champion"], "unserved_bikes", (first, last), instance)
sys.exit(0 if result.success else 1)
"""


class Server:
    """`mlflow server` on a SQLite file and a local artifact folder, which can be killed and started again on them."""

    def __init__(self, root: Path) -> None:
        self.root, self.log = root, root / "server.log"
        (root / "artifacts").mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def database(self) -> Path:
        return self.root / "mlflow.db"

    def start(self) -> None:
        command = [
            str(BIN / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{self.database}",
            "--artifacts-destination", (self.root / "artifacts").as_uri(),
            "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1], "--workers", "1",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | MLFLOW_SERVER_ENV
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                command, cwd=self.root, env=env, start_new_session=True, stdout=output, stderr=output
            )

    def healthy(self) -> bool:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
            return response.status == 200
        return False

    def kill(self) -> None:
        """SIGKILL to the server's whole process group (its workers too): no chance to finish a request."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None:
            return
        group = self.process.pid
        members = []
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                if os.getpgid(process.pid) == group:
                    members.append(process)
        stop(members, grace=3.0)
        self.process.wait(timeout=30)

    def count(self, query: str) -> int:
        """A count from the server's database, read directly (the client may not call a dead server); 0 before the
        server made its tables."""
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(self.database, timeout=1)) as db:
            return int(db.execute(query).fetchone()[0])
        return 0


def model_run(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, start_new_session=True, stdout=output, stderr=output
        )


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    """The first failed step's error as the UI shows it: Dagster's wrapper, then the exception it was caused by."""
    for record in instance.get_records_for_run(run_id).records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.event_type_value == "STEP_FAILURE":
            error, lines = event.step_failure_data.error, []  # pyright: ignore[reportOptionalMemberAccess]
            while error is not None:
                lines.append(error.message.strip())
                error = error.cause
            return " <- ".join(lines)
    return ""


@pytest.mark.faults
@pytest.mark.timeout(600)
@pytest.mark.parametrize("cue", sorted(CUES))
def test_an_mlflow_server_killed_mid_training_fails_the_run_promotes_nothing_and_a_rerun_converges(
    tmp_path: Path, ray_address: str, fault: FaultRow, cue: str
) -> None:
    query, moment = CUES[cue]
    fault.scenario = f"MLflow server killed mid-training ({cue})"
    fault.injected = f"kill -9 of the mlflow server's process group once {moment}"
    server = Server(tmp_path / "mlflow")
    server.start()  # boots (~10-30 s) while the features are built
    settings = promotable_bikes(tmp_path, NAME)
    dagster_home = prepare_home(settings.home)
    defs = build_definitions(settings, today=TODAY)
    store = (defs.resources or {})["io_manager"]
    assert isinstance(store, PartitionedParquetIOManager)
    model_key, champion_key = dg.AssetKey([NAME, "model"]), dg.AssetKey([NAME, "champion"])
    env = {
        **os.environ,
        **CLIENT_RETRIES,
        "DAGSTER_HOME": str(dagster_home),
        "PYTHONPATH": f"{PROJECT_ROOT}/tests",
        "MLFLOW_TRACKING_URI": server.url,
    }
    first, last, days_per_round = RANGES[cue]
    days = [str(d) for d in day_range(date.fromisoformat(first), date.fromisoformat(last))]
    command = [sys.executable, "-c", MODEL_RUN, str(settings.home), str(settings.specs_dir), first, last]
    command.append(str(days_per_round))
    log = tmp_path / "model_run.log"
    tracking = MlflowTracking(tracking_uri=server.url)  # the test's own view of the registry (only while it is up)

    try:
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            assert run_range(defs, ["raw", "features"], NAME, (FIRST, DAY), instance).success
        wait_until("the mlflow server", server.healthy, 120, server.log, poll=0.5)

        started = time.monotonic()
        run = model_run([*command, "slow" if cue == "registered" else "plain"], env, log)
        try:
            wait_until(moment, lambda: server.count(query) > 0 or run.poll() is not None, 300, log, poll=0.02)
            assert run.poll() is None, f"the model run exited ({run.returncode}) before {moment}"
            server.kill()
            code = run.wait(timeout=120)  # bounded by the low client retries
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait(timeout=30)
        failed_after = time.monotonic() - started

        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            killed = instance.get_runs(limit=1)[0]
            message = failure_message(instance, killed.run_id)
            materialised = [
                r.asset_key
                for r in instance.get_records_for_run(
                    killed.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
                ).records
            ]
        assert (code, killed.status) == (1, dg.DagsterRunStatus.FAILURE), log.read_text()[-3000:]
        assert server.url in message or "Max retries exceeded" in message, message

        # The server back on the same store: what did the kill leave in the registry and the asset store?
        server.start()
        wait_until("the restarted mlflow server", server.healthy, 120, server.log, poll=0.5)
        client = tracking.client()
        versions = client.search_model_versions(f"name = '{NAME}'")
        aliases = client.get_registered_model(NAME).aliases if versions else {}
        orphans = [str(v.version) for v in versions]  # no model record was stored for this day: all are orphans
        assert cue != "registered" or orphans, "the kill did not land after the version was registered"
        assert not [d for d in days if store.exists(model_key, d)], "a model record was stored by the failed run"
        assert model_key not in materialised, f"the failed run materialised model partitions: {materialised}"
        assert not store.exists(champion_key, None), "a champion record was stored by the failed run"
        assert CHAMPION not in aliases, f"the failed run left a champion alias: {aliases}"
        stuck = [r.info.status for r in client.search_runs([e.experiment_id for e in client.search_experiments()])]

        rerun = model_run([*command, "plain"], env, log)
        try:
            assert rerun.wait(timeout=300) == 0, log.read_text()[-3000:]
        finally:
            if rerun.poll() is None:
                os.killpg(rerun.pid, signal.SIGKILL)
                rerun.wait(timeout=30)
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            assert instance.get_runs(limit=1)[0].status == dg.DagsterRunStatus.SUCCESS
            gates_failed = rejected_days(instance, model_key, MODEL_GATES, store.fingerprints(model_key, [DAY]))
        # Every day of the re-run materialised with its own finished MLflow run, versions registered in day order.
        rerun_records = [store.read(model_key, d) for d in days]
        assert [client.get_run(r["mlflow_run_id"]).info.status for r in rerun_records] == ["FINISHED"] * len(days)
        versions_by_day = [int(r["version"]) for r in rerun_records]
        assert versions_by_day == sorted(versions_by_day), versions_by_day
        alias = tracking.alias_version(NAME, CHAMPION)
        record = str(store.read(model_key, DAY)["version"])
        champion = str(store.read(champion_key, None)["version"])
        # Ungated: the alias on a version whose gates did not pass, or that is not the stored champion record.
        fault.ungated = int(alias is not None and (DAY in gates_failed or alias != record or alias != champion))
        assert fault.ungated == 0, (alias, record, champion, gates_failed)
        assert alias == record == champion, (alias, record, champion)
        assert alias not in orphans, f"the champion is v{alias}, registered by the failed run without a record"
    finally:
        server.stop()
    cause = " ".join(message.rsplit(" <- ", 1)[-1].split())[:70]
    fault.result = (
        f"run FAILURE {failed_after:.0f} s after launch ({cause}); server back: {len(orphans)} version(s) without a "
        f"record {orphans}, no alias, MLflow run(s) {stuck}; re-run SUCCESS: alias = stored record = v{alias}"
    )
