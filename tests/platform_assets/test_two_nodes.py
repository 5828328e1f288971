"""A range run on a real two-node Ray cluster: its day batches land on both nodes, read and write the store themselves,
honour the spec's placement hints, and survive losing a node mid-run.

Real parts: a Ray head and a second Ray node (`devtools/ray_node.py`, its own raylet, object store and workers) on
loopback, the code location, a Dagster instance on disk, the shipped bike sample. Nothing is mocked: the node is
killed with SIGKILL while one of its tasks runs, as a lost machine would be.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from unittest import mock

import dagster as dg
import psutil
import pytest
from conftest import BIKE_CSV, PipelineFactory, bike_spec_document
from support import process_tree, run_range, tcp_listeners

from devtools.stack import Ports, pick_ports, ray_head_command, ray_node_command, stop, wait_for_port
from kernel.days import day_range
from kernel.names import FINGERPRINT
from resources.storage import PartitionedParquetIOManager

NAME = "two_node_bikes"
FIRST, LAST = "2012-05-01", "2012-05-20"
DAYS = [str(day) for day in day_range(date.fromisoformat(FIRST), date.fromisoformat(LAST))]
# The GCS declares a node dead after about two seconds without a health check answer (Ray's default: 15-30 s).
FAST_NODE_DEATH = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "2",
}
ONLY_ON_SECOND = "second_node"  # a custom resource only the second node offers


@dataclass
class TwoNodes:
    address: str
    dashboard: str
    head_id: str
    node: subprocess.Popen[bytes] | None = None
    node_id: str = ""

    def alive(self) -> dict[str, dict[str, float]]:
        """Alive node id -> its total resources, from the head's dashboard (no driver connection)."""
        from ray.util.state import list_nodes

        # Ray's state API lets RAY_ADDRESS (the test session's own head, once a test used it) override `address`;
        # RAY_API_SERVER_ADDRESS overrides both.
        with mock.patch.dict(os.environ, {"RAY_API_SERVER_ADDRESS": self.dashboard}):
            nodes: list[Any] = list_nodes(address=self.dashboard)
        return {n.node_id: n.resources_total for n in nodes if n.state == "ALIVE"}

    def node_processes(self) -> list[psutil.Process]:
        assert self.node is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(self.node.pid)
            return [parent, *parent.children(recursive=True)]
        return []

    def running_on_node(self, task: str) -> list[psutil.Process]:
        """The second node's worker processes running `task` now (Ray titles a busy worker `ray::<task>`)."""
        return [p for p in self.node_processes() if _title(p).startswith(f"ray::{task}")]


def _title(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        return " ".join(process.cmdline())
    return ""


def wait_until(what: str, condition: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    """A Ray head of its own (1 CPU) for this module's runs, quick to declare a lost node dead."""
    ports = pick_ports(Ports(dagster=0, mlflow=0, ray=6680, ray_dashboard=8565, ray_client=9301, ray_agent=52665))
    log = tmp_path_factory.mktemp("two_nodes") / "head.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            ray_head_command(ports, cpus=1),
            env={**os.environ, **FAST_NODE_DEATH},
            start_new_session=True,
            stdout=out,
            stderr=out,
        )
    try:
        wait_for_port(ports.ray_dashboard, "ray", process, timeout=120)
        cluster = TwoNodes(f"127.0.0.1:{ports.ray}", f"http://127.0.0.1:{ports.ray_dashboard}", "")
        wait_until("the head to register", lambda: len(cluster.alive()) == 1)
        cluster.head_id = next(iter(cluster.alive()))
        yield cluster
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            stop([psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)])


@pytest.fixture
def two_nodes(head: TwoNodes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TwoNodes]:
    """The head plus a second node (1 CPU and the `second_node` resource) joined for one test; the test's runs use
    this cluster."""
    with (tmp_path / "node.log").open("ab") as out:
        head.node = subprocess.Popen(
            ray_node_command(head.address, cpus=1, resources={ONLY_ON_SECOND: 1}),
            start_new_session=True,
            stdout=out,
            stderr=out,
        )
    try:
        wait_until("the second node to join", lambda: len(head.alive()) == 2)
        head.node_id = next(node for node in head.alive() if node != head.head_id)
        monkeypatch.setenv("RAY_ADDRESS", head.address)
        yield head
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            stop(head.node_processes())
        wait_until("the second node to leave", lambda: len(head.alive()) == 1)


def bikes(make_defs: PipelineFactory, home: Path, **compute: Any) -> dg.Definitions:
    document = bike_spec_document(
        name=NAME,
        source={"uri": str(BIKE_CSV)},
        partitioning={"start_date": "2012-04-20", "end_date": "2012-06-01", "rebase_to_yesterday": False},
        compute={"ray_cpus_per_task": 1, **compute},
    )
    return make_defs(document, home=home)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("two_node_home")


def features_run(defs: dg.Definitions, instance: dg.DagsterInstance) -> tuple[dict[str, int], dict[str, str]]:
    """Features for DAYS in one run (raw first, if not there yet): where its tasks ran (node id -> tasks) and the
    fingerprint each day's materialisation recorded."""
    if not instance.get_latest_materialization_event(dg.AssetKey([NAME, "raw"])):
        assert run_range(defs, ["raw"], NAME, (FIRST, LAST), instance).success
    result = run_range(defs, ["features"], NAME, (FIRST, LAST), instance)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    materialisations = result.asset_materializations_for_node(f"{NAME}__features")
    assert sorted(m.partition or "" for m in materialisations) == DAYS, "a day missing or materialised twice"
    fingerprints = {m.partition or "": str(m.metadata[FINGERPRINT].value) for m in materialisations}
    nodes: Any = next(m.metadata["ray_nodes"].value for m in materialisations if "ray_nodes" in m.metadata)
    return {str(node): int(tasks) for node, tasks in nodes.items()}, fingerprints


def on_disk(defs: dg.Definitions) -> dict[str, str | None]:
    store = (defs.resources or {})["io_manager"]
    assert isinstance(store, PartitionedParquetIOManager)
    return store.fingerprints(dg.AssetKey([NAME, "features"]), DAYS)


@pytest.mark.timeout(600)
def test_a_range_run_spreads_over_both_nodes_and_honours_the_specs_resources(
    two_nodes: TwoNodes, make_defs: PipelineFactory, home: Path
) -> None:
    defs = bikes(make_defs, home, ray_days_per_task=2)
    with dg.instance_for_test() as instance:
        spread, fingerprints = features_run(defs, instance)
        assert set(spread) == {two_nodes.head_id, two_nodes.node_id}, f"tasks did not land on both nodes: {spread}"
        assert sum(spread.values()) == len(DAYS) // 2, "ray_days_per_task: 2 days per task"
        assert on_disk(defs) == fingerprints, "the tasks' files are not what the run recorded"

        pinned = bikes(make_defs, home, ray_days_per_task=5, ray_resources={ONLY_ON_SECOND: 1})
        placed, again = features_run(pinned, instance)
    assert placed == {two_nodes.node_id: len(DAYS) // 5}, "a task ran where its custom resource is not offered"
    assert again == fingerprints, "the same days built on another node are other bytes"
    assert two_nodes.node is not None
    listeners = tcp_listeners(process_tree(psutil.Process(two_nodes.node.pid)))
    exposed = [listener for listener in listeners if not listener.on_loopback]
    assert listeners and not exposed, f"the second node listens beyond loopback: {exposed}"


@pytest.mark.timeout(600)
def test_killing_the_second_node_mid_run_retries_its_tasks_on_the_head_and_loses_no_day(
    two_nodes: TwoNodes, make_defs: PipelineFactory, home: Path
) -> None:
    defs = bikes(make_defs, home, ray_days_per_task=1)
    killed: list[str] = []

    def kill_while_a_task_runs_there() -> None:
        def running() -> list[str]:
            return [_title(p) for p in two_nodes.running_on_node("build_feature_days")]

        with contextlib.suppress(AssertionError):
            wait_until("a features task on the second node", lambda: bool(running()), timeout=300)
            killed.extend(running())
            for process in two_nodes.node_processes():
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()

    with dg.instance_for_test() as instance:
        killer = threading.Thread(target=kill_while_a_task_runs_there)
        killer.start()
        spread, fingerprints = features_run(defs, instance)
        killer.join()
    assert killed, "the second node was never seen running a task, so it was not killed mid-run"
    # Ray retried its tasks as soon as they failed; the cluster's list of live nodes may lag that by a few seconds.
    wait_until("the killed node to be declared dead", lambda: two_nodes.node_id not in two_nodes.alive(), timeout=60)
    assert two_nodes.head_id in spread, f"no task finished on the head after the kill: {spread}"
    assert sum(spread.values()) == len(DAYS), "a day's task was lost or counted twice"
    assert on_disk(defs) == fingerprints, "a retried day's file is not what the run recorded"
