"""A failed Dagster run's MLflow runs still RUNNING (its process was killed) end FAILED; other runs are untouched."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from resources.tracking import MlflowTracking
from sensors.mlflow_runs import mlflow_runs_of_failed_runs


def test_the_mlflow_runs_a_failed_run_left_running_end_failed_and_no_other(tmp_path: Path) -> None:
    @dg.asset
    def killed() -> None:
        raise RuntimeError("stands in for a process killed mid-logging")

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([killed], instance=instance, raise_on_error=False)
    assert not result.success
    tracking = MlflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "art"))
    client = tracking.client()
    experiment = tracking.experiment_id("killed_pipeline")
    orphan = client.create_run(experiment, tags={"dagster_run_id": result.run_id}).info.run_id
    other = client.create_run(experiment, tags={"dagster_run_id": "a-run-still-going"}).info.run_id
    finished = client.create_run(experiment, tags={"dagster_run_id": result.run_id}).info.run_id
    client.set_terminated(finished, status="FINISHED")

    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    context = dg.build_run_status_sensor_context(
        sensor_name="mlflow_runs_of_failed_runs", dagster_event=failure, dagster_instance=instance, dagster_run=run
    ).for_run_failure()
    mlflow_runs_of_failed_runs(context, mlflow=tracking)

    status = {run_id: client.get_run(run_id).info.status for run_id in (orphan, other, finished)}
    assert status == {orphan: "FAILED", other: "RUNNING", finished: "FINISHED"}
