"""`<p>/backtest_report`: walk-forward metrics of every model partition, against the baseline."""

from typing import Any

import dagster as dg
import pandas as pd

from kernel import automation
from kernel.metadata import picture
from kernel.pipeline import Pipeline
from kernel.records import ModelRecord
from ml import plots
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

PLOT = "backtest.png"


def backtest_table(records: list[ModelRecord]) -> pd.DataFrame:
    """One row per model partition: its hold-out MAE, the baseline's and the relative improvement."""
    rows = [
        {
            "partition": r.partition,
            "version": r.version,
            "family": r.family,
            "mae": r.metrics.mae,
            "baseline_mae": r.baseline.mae,
            "smape": r.metrics.smape,
        }
        for r in records
    ]
    table = pd.DataFrame(rows, columns=["partition", "version", "family", "mae", "baseline_mae", "smape"])
    table["improvement"] = 1 - table["mae"] / table["baseline_mae"]
    return table.sort_values("partition").reset_index(drop=True)


def report_metadata(table: pd.DataFrame, png: bytes, logged: tuple[str, str], mlflow: MlflowTracking) -> dict[str, Any]:
    """Headline figures, the plot in place on the asset's page (the PNG logged to the report's MLflow run), a link."""
    experiment_id, run_id = logged
    metadata: dict[str, Any] = {
        "dagster/row_count": len(table),
        "mean_mae": float(table["mae"].mean()),
        "mean_baseline_mae": float(table["baseline_mae"].mean()),
        "share_beating_baseline": float((table["improvement"] > 0).mean()),
        "backtest": picture("walk-forward backtest", png, mlflow.artifact_url(run_id, f"reports/{PLOT}")),
        "preview": dg.MetadataValue.md(table.tail(10).to_markdown(index=False)),
    }
    if url := mlflow.run_url(experiment_id, run_id):
        metadata["mlflow_run"] = dg.MetadataValue.url(url)
    return metadata


def build(pipeline: Pipeline) -> dg.AssetsDefinition:
    @pipeline.asset(
        "backtest_report",
        description=f"Walk-forward backtest of {pipeline.name}: hold-out MAE per model partition vs seasonal naive.",
        kinds={"pandas", "mlflow"},
        partitioned=False,
        deps=[pipeline.key("model")],
        automation_condition=automation.after_upstream_update(),
    )
    def backtest_report(
        context: dg.AssetExecutionContext,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> dg.Output[pd.DataFrame]:
        """Hold-out MAE of every materialised model partition against the seasonal-naive baseline."""
        keys = pipeline.partitions_def.get_partition_keys(dynamic_partitions_store=context.instance)
        stored = io_manager.read_many(pipeline.key("model"), keys, allow_missing=True)
        if not stored:
            raise dg.Failure(f"{pipeline.key('model').to_user_string()} has no materialised partitions yet")
        table = backtest_table(list(ModelRecord.many(stored).values()))
        series = table.set_index(pd.to_datetime(table["partition"]))
        png = plots.backtest(series)
        logged = mlflow.log_report(
            f"{pipeline.name}-backtest",
            f"{pipeline.name}-backtest-{context.run.run_id[:8]}",
            files={PLOT: png, "backtest.csv": table.to_csv(index=False).encode()},
            metrics={"mean_mae": float(table["mae"].mean()), "mean_baseline_mae": float(table["baseline_mae"].mean())},
            tags={"pipeline": pipeline.name, "dagster_run_id": context.run.run_id},
        )
        return dg.Output(table, metadata=report_metadata(table, png, logged, mlflow))

    return backtest_report
