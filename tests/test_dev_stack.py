"""As a user runs it: the run command's `dagster dev`, a backfill through GraphQL, then automation on its own.

Throughout, every listening TCP socket of the whole process tree (dagster dev, its code server and run
workers, MLflow, the Ray head, its workers) is recorded; none may be reachable beyond loopback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import yaml
from conftest import BIKE_CSV, bike_spec_document
from support import Listener, process_tree, tcp_listeners

from devtools.stack import stop
from kernel.paths import PROJECT_ROOT

pytestmark = pytest.mark.e2e
NAME = "bike_dev"
FIRST, LAST = "2012-05-01", "2012-06-30"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path, ports: dict[str, int]) -> None:
        self.url, self.process, self.log, self.ports = url, process, log, ports
        self.listeners: set[Listener] = set()  # every one seen while the tests waited, runs included

    def scan_listeners(self) -> list[Listener]:
        """The stack's listening sockets now (also remembered in `self.listeners`)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            now = tcp_listeners(process_tree(psutil.Process(self.process.pid)))
            self.listeners.update(now)
            return now
        return []

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    def runs(self) -> list[dict[str, Any]]:
        data = self.graphql(
            "{ runsOrError { ... on Runs { results { runId status tags { key value } assetSelection { path } } } } }"
        )
        return data["runsOrError"]["results"]

    def wait(self, what: str, condition: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the run command exited; log:\n{self.log.read_text()[-4000:]}"
            self.scan_listeners()
            if value := condition():
                return value
            time.sleep(3)
        pytest.fail(f"timed out waiting for {what}; runs: {self.runs()}\nlog tail:\n{self.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
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


def test_backfill_through_graphql_then_automation_materialises_on_its_own(stack: Stack) -> None:
    days = [d.strftime("%Y-%m-%d") for d in __import__("pandas").date_range(FIRST, LAST)]
    launched = stack.graphql(
        """mutation($params: LaunchBackfillParams!) {
             launchPartitionBackfill(backfillParams: $params) {
               __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
             }
           }""",
        {
            "params": {
                "partitionNames": days,
                "assetSelection": [{"path": [NAME, "raw"]}, {"path": [NAME, "features"]}],
                "title": "e2e backfill",
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def backfill_done() -> str | None:
        data = stack.graphql(
            "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }",
            {"id": backfill_id},
        )
        status = data["partitionBackfillOrError"]["status"]
        return status if status in {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED"} else None

    assert stack.wait("the backfill", backfill_done, timeout=480) in {"COMPLETED", "COMPLETED_SUCCESS"}
    backfill_runs = [r for r in stack.runs() if {"key": "dagster/backfill", "value": backfill_id} in r["tags"]]
    assert backfill_runs, "the backfill launched runs"
    assert len(backfill_runs) <= 2, "one run per asset for 61 days, not one per partition"
    assert all(r["status"] == "SUCCESS" for r in backfill_runs)

    def automated_model() -> dict[str, Any] | None:
        for run in stack.runs():
            tags = {t["key"]: t["value"] for t in run["tags"]}
            paths = {"/".join(a["path"]) for a in run["assetSelection"] or []}
            if tags.get("dagster/from_automation_condition") == "true" and f"{NAME}/model" in paths:
                return run if run["status"] in {"SUCCESS", "FAILURE"} else None
        return None

    run = stack.wait("the automation sensor to train the newest model", automated_model, timeout=420)
    assert run["status"] == "SUCCESS"
    assert {"key": "dagster/partition", "value": LAST} in run["tags"]


def test_every_listening_socket_of_the_stack_is_on_loopback(stack: Stack) -> None:
    """Now, and at every poll of the tests before (while runs, Ray drivers and workers were alive)."""
    now = stack.scan_listeners()
    listening = "\n  ".join(map(str, now))
    assert set(stack.ports.values()) <= {listener.port for listener in now}, f"the services listen:\n  {listening}"
    assert {"gcs_server", "raylet"} <= {listener.name for listener in now}, f"Ray is in the tree:\n  {listening}"
    exposed = sorted((listener for listener in stack.listeners if not listener.on_loopback), key=str)
    assert not exposed, "listening beyond loopback:\n  " + "\n  ".join(map(str, exposed))
