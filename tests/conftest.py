"""Shared fixtures: one real Ray head per session, isolated platform state, pipeline builders, `make dev`'s stack."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest
import yaml
from dev_stack import FIRST, NAME, Stack, free_port

from devtools.stack import (
    RAY_LOOPBACK_ENV,
    Ports,
    pick_ports,
    ray_head_command,
    restore_interrupts,
    stop,
    wait_for_port,
)
from kernel.paths import PROJECT_ROOT
from kernel.settings import Settings
from platform_assets.definitions import build_definitions

# Every process of the test session (and its Ray workers) must agree; Ray 2.60 defaults to token auth.
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# As in every environment: MLflow's own (pickle, or skops trusting the artifact) loaders are off.
os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
# The session's head listens on loopback only; its drivers must resolve 127.0.0.1 the same way.
os.environ.update(RAY_LOOPBACK_ENV)
# The suite alike from a terminal or a background job: in-process Dagster runs point this process's SIGTERM at
# SIGINT's handler, and with SIGINT ignored every process a test starts would then ignore SIGTERM too.
restore_interrupts()

BIKE_SPEC = PROJECT_ROOT / "pipelines" / "bike_demand.yaml"
BIKE_CSV = PROJECT_ROOT / "data" / "bike_sharing" / "hour.csv"
AIR_SPEC = PROJECT_ROOT / "pipelines" / "air_quality.yaml"
AIR_CSV = PROJECT_ROOT / "data" / "beijing_pm25" / "PRSA_data_2010.1.1-2014.12.31.csv"
# Far enough in the future that a rebasing spec never shifts in tests unless a test asks for it.
TODAY = date(2013, 1, 1)


HEAD_ATTEMPTS = 3  # concurrent test sessions can pick the same free port and race to bind it


def start_ray_head(log: Path) -> tuple[subprocess.Popen[bytes], Ports]:
    """A Ray head on free loopback ports, listening; ports picked again if another process won the race."""
    attempt = 1
    while True:
        ports = pick_ports(Ports(dagster=0, mlflow=0, ray=6480, ray_dashboard=8365, ray_client=9101, ray_agent=52465))
        with log.open("ab") as out:
            head = subprocess.Popen(
                ray_head_command(ports, cpus=2), env=os.environ.copy(), start_new_session=True, stdout=out, stderr=out
            )
        try:
            wait_for_port(ports.ray_dashboard, "ray", head, timeout=120)
        except SystemExit:
            if head.poll() is None or attempt == HEAD_ATTEMPTS:
                raise
            attempt += 1
        else:
            return head, ports


@pytest.fixture(autouse=True)
def no_ray_connection_left() -> Iterator[None]:
    """A test that leaves this process connected to Ray is an error (it is disconnected here): every later in-process
    run would fail to connect ("ray.init twice"), far from the cause."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail("the test left this process connected to Ray (connect through the RayCluster resource)")


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Ray head on free loopback ports for the whole session, stopped at the end."""
    head, ports = start_ray_head(tmp_path_factory.mktemp("ray") / "ray.log")
    try:
        address = f"127.0.0.1:{ports.ray}"
        os.environ["RAY_ADDRESS"] = address
        yield address
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        with contextlib.suppress(psutil.NoSuchProcess):
            stop([psutil.Process(head.pid), *psutil.Process(head.pid).children(recursive=True)])


@pytest.fixture(scope="session")
def platform_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """State (asset store, MLflow SQLite store) shared by the session; pipelines keep apart by name."""
    return tmp_path_factory.mktemp("platform_home")


def bike_spec_document(**overrides: Any) -> dict[str, Any]:
    """The shipped bike spec as a dict, with top-level sections updated from `overrides`."""
    document = yaml.safe_load(BIKE_SPEC.read_text())
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(document.get(section), dict):
            document[section] = {**document[section], **value}
        else:
            document[section] = value
    return document


PipelineFactory = Callable[..., dg.Definitions]


@pytest.fixture
def make_defs(platform_home: Path, tmp_path: Path) -> PipelineFactory:
    """Build the code location for one spec document (written to its own specs folder), with the session's state
    unless a test needs a `home` of its own (a pipeline name several tests land different files for: its ingest log
    is durable state, as in production)."""

    def build(document: dict[str, Any], today: date = TODAY, home: Path | None = None) -> dg.Definitions:
        specs = tmp_path / f"specs_{document['name']}"
        specs.mkdir(exist_ok=True)
        (specs / f"{document['name']}.yaml").write_text(yaml.safe_dump(document))
        settings = Settings(
            env="local",
            root=PROJECT_ROOT,
            home=home or platform_home,
            specs_dir=specs,
            mlflow_ui_url="http://127.0.0.1:5000",
        )
        return build_definitions(settings, today=today)

    return build


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`python -m devtools.stack` (what `make dev` runs) on free ports with a fresh home and the bike sample landed.

    One per session, for every test that asks for it (tests/test_dev_stack.py, tests/browser/): starting it costs
    minutes. `pytest_collection_modifyitems` below runs those tests last, so it is up only while they run.
    """
    base = tmp_path_factory.mktemp("dev")
    landing, specs = base / "landing", base / "specs"
    landing.mkdir()
    specs.mkdir()
    shutil.copy(BIKE_CSV, landing / "hour.csv")
    document = bike_spec_document(
        name=NAME,
        source={"uri": str(landing / "*.csv")},
        partitioning={"start_date": FIRST, "end_date": "2012-07-01", "rebase_to_yesterday": False},
        training={"window_days": 56, "candidates": [{"family": "hist_gradient_boosting", "params": {"max_iter": 100}}]},
        promotion={"min_improvement_over_baseline": 0.0},
    )
    (specs / f"{NAME}.yaml").write_text(yaml.safe_dump(document))
    ports = {"dagster": free_port(), "mlflow": free_port(), "ray": free_port(), "ray-dashboard": free_port()}
    command = [
        sys.executable, "-m", "devtools.stack", "--home", str(base / "home"),
        *(arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))), "--ray-cpus", "2",
    ]  # fmt: skip
    env = {**os.environ, "PLATFORM_SPECS_DIR": str(specs)}
    env.pop("RAY_ADDRESS", None)
    log = base / "stack.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=output, stderr=output, start_new_session=True
        )
    stack = Stack(f"http://127.0.0.1:{ports['dagster']}", process, log, ports)
    try:
        stack.wait("the platform to come up", lambda: "Platform is up" in log.read_text(), timeout=240)
        yield stack
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(process.pid)
            parent.terminate()
            try:
                parent.wait(timeout=40)
            except psutil.TimeoutExpired:
                stop([parent, *parent.children(recursive=True)])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the shared stack run last and together (it does not compete with the rest of the suite for the
    two cores), the automation test before the browser test, so the UI shows a trained model as well."""

    def order(item: pytest.Item) -> tuple[bool, bool]:
        on_stack = "stack" in getattr(item, "fixturenames", ())
        return on_stack, on_stack and "browser" in item.path.parts

    items.sort(key=order)
