"""A real `mlflow server` on PostgreSQL with proxied artifacts, as in production: training logs and registers
through it, and the results are read back through the server, from its artifact store and from the database."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest
from support import check_results, is_job_worker, run_range

from devtools.stack import BIN, MLFLOW_SERVER_ENV, stop
from kernel.names import CHAMPION
from kernel.records import ModelRecord
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

from .conftest import DAY, FIRST, PgDatabase, PipelineFactory, small_spec

pytestmark = pytest.mark.postgres

NAME = "bike_mlflow"
HEALTH_TIMEOUT = 120
PLOTS = {"forecast_vs_actual.png", "residuals.png", "feature_importance.png"}


@dataclass(frozen=True)
class MlflowServer:
    url: str
    artifacts: Path  # --artifacts-destination
    workdir: Path  # the server's cwd: a default ./mlruns would appear here
    database: PgDatabase
    log: Path
    process: subprocess.Popen[bytes]
    started: float  # time.monotonic() at spawn

    def wait_until_healthy(self, timeout: float = HEALTH_TIMEOUT) -> None:
        """Poll `GET /health` until it answers OK; fail with the server's log if it exits or times out."""
        while not healthy(self.url):
            if self.process.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() - self.started > timeout:
                pytest.fail(f"mlflow server not healthy within {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as response:
        return response.status == 200 and response.read().strip() == b"OK"
    return False


def process_tree(leader: int) -> list[psutil.Process]:
    """The server, its descendants, and anything left in its process group (its workers)."""
    processes: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(leader)
        processes[root.pid] = root
        processes.update((child.pid, child) for child in root.children(recursive=True))
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            if os.getpgid(process.pid) == leader:
                processes[process.pid] = process
    return list(processes.values())


def stop_tree(leader: int) -> None:
    """Stop the whole tree with a short grace."""
    stop(process_tree(leader), grace=3.0)


@pytest.fixture(scope="module")
def mlflow_server(postgres_database: PgDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """`mlflow server` on a fresh PostgreSQL database, artifacts proxied to a local folder; its whole process
    tree is stopped afterwards. Spawned, not awaited: users call `wait_until_healthy` (it boots in ~10-30 s, time
    better spent starting Ray and building features)."""
    workdir = tmp_path_factory.mktemp("mlflow_server")
    artifacts = workdir / "artifacts"
    artifacts.mkdir()
    url = f"http://127.0.0.1:{free_port()}"
    # SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3, which this environment does not have.
    backend = postgres_database.url.replace("postgresql://", "postgresql+psycopg2://", 1)
    command = [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", backend,
        "--artifacts-destination", artifacts.as_uri(),
        "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1], "--workers", "1",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | MLFLOW_SERVER_ENV
    log = workdir / "server.log"
    with log.open("ab") as output:
        process = subprocess.Popen(command, cwd=workdir, env=env, start_new_session=True, stdout=output, stderr=output)
    try:
        yield MlflowServer(url, artifacts, workdir, postgres_database, log, process, time.monotonic())
    finally:
        stop_tree(process.pid)
        process.wait(timeout=10)
        left = [p for p in process_tree(process.pid) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, f"mlflow server processes survived: {left}"


@contextlib.contextmanager
def restored_mlflow_uris() -> Iterator[None]:
    """MlflowTracking sets MLflow's process-wide URIs (and their env vars): put them back afterwards, so nothing
    later in the session talks to this module's stopped server."""
    import mlflow

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            if name in os.environ:
                patch.setenv(name, os.environ[name])  # remembered, and restored when the context ends
            else:
                patch.delenv(name, raising=False)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(tracking)
            mlflow.set_registry_uri(registry)


@dataclass
class Trained:
    server: MlflowServer
    tracking: MlflowTracking
    record: dict[str, Any]  # the model partition as the asset stored it
    model_run: dg.ExecuteInProcessResult
    client_dir: Path  # the test process's cwd while training: a local ./mlruns would appear here

    @property
    def run_id(self) -> str:
        return str(self.record["mlflow_run_id"])

    @property
    def version(self) -> str:
        return str(self.record["version"])


@pytest.fixture(scope="module")
def trained(
    mlflow_server: MlflowServer,
    make_module_defs: PipelineFactory,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Trained]:
    """Raw and features over ~60 days, then model and champion for DAY, with the server as tracking URI."""
    # Requested here, not as a parameter (pytest would set the session fixture up first): Ray and the
    # features run need no MLflow, so they run while the server boots.
    request.getfixturevalue("ray_address")
    defs = make_module_defs(small_spec(NAME))
    tracking = MlflowTracking(tracking_uri=mlflow_server.url)
    resources = {**(defs.resources or {}), "mlflow": tracking}
    served = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, resources=resources)
    instance = dg.DagsterInstance.ephemeral()
    client_dir = tmp_path_factory.mktemp("client_cwd")
    with restored_mlflow_uris(), pytest.MonkeyPatch.context() as patch:
        patch.chdir(client_dir)
        features = run_range(served, ["raw", "features"], NAME, (FIRST, DAY), instance)
        assert features.success
        mlflow_server.wait_until_healthy()
        model = run_range(served, ["model", "champion"], NAME, (DAY, DAY), instance)
        assert model.success
        store = resources["io_manager"]
        assert isinstance(store, PartitionedParquetIOManager)
        record = store.read(dg.AssetKey([NAME, "model"]), DAY)
        yield Trained(mlflow_server, tracking, record, model, client_dir)


def test_the_server_runs_without_its_job_workers(trained: Trained) -> None:
    """Started as `make dev` starts it (`MLFLOW_SERVER_ENV`): MLflow's background job runner, its huey consumers,
    is off (it would start eight more processes and burn ~36 s of CPU after the server answers)."""
    workers = [" ".join(p.cmdline()[:4]) for p in process_tree(trained.server.process.pid) if is_job_worker(p)]
    assert not workers, f"MLflow job workers running: {workers}"


def test_the_run_is_logged_through_the_server(trained: Trained) -> None:
    client = trained.tracking.client()
    run = client.get_run(trained.run_id)
    assert run.info.status == "FINISHED"
    assert {"mae", "baseline_mae"} <= set(run.data.metrics)
    assert run.data.metrics["mae"] == pytest.approx(trained.record["metrics"]["mae"])
    assert run.data.metrics["mae"] < run.data.metrics["baseline_mae"]
    assert run.data.tags["partition"] == DAY
    # Proxied artifacts: the client only ever sees the server's own scheme, never a file path.
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == NAME
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    assert str(run.info.artifact_uri).startswith("mlflow-artifacts:")


def test_artifacts_download_through_the_server(trained: Trained, tmp_path: Path) -> None:
    import mlflow.artifacts

    client = trained.tracking.client()
    assert {Path(a.path).name for a in client.list_artifacts(trained.run_id, "plots")} == PLOTS
    plots = Path(
        mlflow.artifacts.download_artifacts(
            run_id=trained.run_id,
            artifact_path="plots",
            dst_path=str(tmp_path / "plots"),
            tracking_uri=trained.server.url,
        )
    )
    assert {p.name for p in plots.iterdir()} == PLOTS
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots.iterdir())

    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{NAME}/{trained.version}",
            dst_path=str(tmp_path / "model"),
            tracking_uri=trained.server.url,
            registry_uri=trained.server.url,
        )
    )
    assert (model_dir / "MLmodel").is_file()
    assert trained.tracking.alias_version(NAME, CHAMPION) == trained.version
    # Through the server: registry tags and the artifact's sha256 checked against the record, then skops.
    model = trained.tracking.load_verified(ModelRecord.model_validate(trained.record))
    assert hasattr(model, "predict")


def test_the_pages_plot_urls_serve_the_logged_pngs(trained: Trained) -> None:
    """What the model's page shows in place: each plot from the server's artifact endpoint, as a browser gets it."""
    tracking = MlflowTracking(tracking_uri=trained.server.url, ui_url=trained.server.url)
    for plot in sorted(PLOTS):
        url = tracking.artifact_url(trained.run_id, f"plots/{plot}")
        assert url is not None
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.headers["Content-Type"] == "image/png"
            assert response.read().startswith(b"\x89PNG")


def test_the_version_is_registered_and_promoted(trained: Trained) -> None:
    client = trained.tracking.client()
    version = client.get_model_version(NAME, trained.version)
    assert version.run_id == trained.run_id
    assert version.tags["partition"] == DAY
    assert version.tags["dagster_run_id"] == trained.model_run.run_id
    assert trained.tracking.alias_version(NAME, CHAMPION) == trained.version
    assert client.get_registered_model(NAME).aliases == {CHAMPION: trained.version}
    gates = check_results(trained.model_run)
    assert gates
    assert all(gate.passed for gate in gates.values())


def test_artifacts_landed_in_the_servers_artifact_store(trained: Trained, platform_home: Path) -> None:
    server = trained.server
    experiment_id = str(trained.record["experiment_id"])
    run_dir = server.artifacts / experiment_id / trained.run_id / "artifacts"
    assert {p.name for p in (run_dir / "plots").iterdir()} == PLOTS
    # MLflow 3 logs the model as a LoggedModel of the experiment; the version's source names it (its
    # `model_id` comes back empty over REST).
    source = trained.tracking.client().get_model_version(NAME, trained.version).source
    assert source is not None
    assert source.startswith("models:/m-")
    model_id = source.removeprefix("models:/")
    assert (server.artifacts / experiment_id / "models" / model_id / "artifacts" / "MLmodel").is_file()
    # ...and nowhere else: no ./mlruns next to the client or the server, nothing in the local store.
    assert not (trained.client_dir / "mlruns").exists()
    assert not (server.workdir / "mlruns").exists()
    assert not list((platform_home / "mlflow").glob(f"**/{trained.run_id}"))


def test_the_tracking_rows_are_in_postgres(trained: Trained) -> None:
    database = trained.server.database
    assert dict(database.query("SELECT run_uuid, status FROM runs")) == {trained.run_id: "FINISHED"}
    metrics = {row[0] for row in database.query("SELECT key FROM metrics WHERE run_uuid = %s", (trained.run_id,))}
    assert {"mae", "baseline_mae"} <= metrics
    versions = database.query("SELECT name, version, run_id FROM model_versions")
    assert versions == [(NAME, int(trained.version), trained.run_id)]
    aliases = database.query("SELECT name, alias, version FROM registered_model_aliases")
    assert aliases == [(NAME, CHAMPION, int(trained.version))]
