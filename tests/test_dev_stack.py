"""As a user runs it: the run command's Dagster services, a backfill through GraphQL, then automation on its own.

Throughout, every listening TCP socket of the whole process tree (webserver, daemon, code server and run
workers, MLflow, the Ray head, its workers) is recorded; none may be reachable beyond loopback.
"""

from __future__ import annotations

from typing import Any

import psutil
import pytest
from dev_stack import FIRST, LAST, NAME, Stack
from support import is_job_worker, process_tree

pytestmark = pytest.mark.e2e


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


def test_the_mlflow_server_runs_without_its_job_workers(stack: Stack) -> None:
    """MLflow's background job runner (huey consumers, ~36 s of CPU to start) is off: nothing here uses it."""
    workers = [" ".join(p.cmdline()[:4]) for p in process_tree(psutil.Process(stack.process.pid)) if is_job_worker(p)]
    assert not workers, f"MLflow job workers in the stack: {workers}"
