"""MLflow runs of failed Dagster runs end FAILED: a killed run process (OOM, a lost pod, kill -9) cannot end its own."""

import dagster as dg

from resources.tracking import MlflowTracking


@dg.run_failure_sensor(
    name="mlflow_runs_of_failed_runs",
    description="Ends FAILED the MLflow runs a failed Dagster run left RUNNING (a killed process cannot end them).",
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
)
def mlflow_runs_of_failed_runs(context: dg.RunFailureSensorContext, mlflow: MlflowTracking) -> None:
    """Ends FAILED the MLflow runs that a failed Dagster run left RUNNING."""
    if ended := mlflow.end_runs_of(context.dagster_run.run_id):
        context.log.info(
            f"run {context.dagster_run.run_id} left {len(ended)} MLflow run(s) RUNNING, ended FAILED: {ended}"
        )
