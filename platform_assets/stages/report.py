"""`<p>/backtest_report`: the out-of-sample improvement over the baseline over time, with the in-window figures."""

from typing import TYPE_CHECKING, Any

import dagster as dg

from kernel import automation
from kernel.frames import Frame
from kernel.metadata import picture
from kernel.pipeline import Pipeline
from kernel.records import ModelRecord, Rejected
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

if TYPE_CHECKING:
    import pandas as pd


PLOT = "backtest.png"


def report_table(scores: "list[pd.DataFrame]", records: list[ModelRecord]) -> "pd.DataFrame":
    """One row per day: the out-of-sample figures of the day's forecasts (when it was scored) and, as a secondary
    column, the in-window hold-out improvement of the model partition of that day (the figure that picked it)."""
    import pandas as pd

    from ml import backtest

    table = backtest.summary(pd.concat(scores, ignore_index=True)) if scores else pd.DataFrame()
    in_window = pd.Series(
        [r.improvement_over_baseline for r in records],
        index=pd.to_datetime([r.partition for r in records]),
        name="in_window_improvement",
        dtype="float64",
    )
    table = table.join(in_window, how="outer") if len(table) else in_window.to_frame()
    table.index.name = "day"
    return table.sort_index()


def headline(scores: "list[pd.DataFrame]", table: "pd.DataFrame") -> dict[str, float]:
    """The figures logged to MLflow and shown first: overall and latest rolling out-of-sample improvement."""
    import pandas as pd

    from ml import backtest

    figures = {"in_window_improvement_mean": float(table["in_window_improvement"].mean())}
    if scores:
        daily = backtest.daily_models(pd.concat(scores, ignore_index=True))
        rolling = table[f"improvement_{backtest.ROLLING_DAYS}d"].dropna()
        figures |= {
            "out_of_sample_improvement": backtest.improvement(daily),
            "out_of_sample_mae": float((daily["mae"] * daily["rows"]).sum() / daily["rows"].sum()),
            "out_of_sample_baseline_mae": float((daily["baseline_mae"] * daily["rows"]).sum() / daily["rows"].sum()),
        }
        if len(rolling):
            figures[f"out_of_sample_improvement_last_{backtest.ROLLING_DAYS}d"] = float(rolling.iloc[-1])
    return figures


def report_metadata(
    table: "pd.DataFrame",
    *,
    figures: dict[str, float],
    counts: dict[str, Any],
    by_series: "pd.DataFrame",
    png: bytes,
    logged: tuple[str, str],
    mlflow: MlflowTracking,
) -> dict[str, Any]:
    """Headline figures, the plot in place on the asset's page (the PNG logged to the report's MLflow run), a link;
    with several series, the out-of-sample figures per series and pooled."""
    experiment_id, run_id = logged
    metadata: dict[str, Any] = {
        "dagster/row_count": len(table),
        **figures,
        **counts,
        "backtest": picture("walk-forward backtest", png, mlflow.artifact_url(run_id, f"reports/{PLOT}")),
        "preview": dg.MetadataValue.md(table.tail(10).reset_index().to_markdown(index=False, floatfmt=".3f")),
    }
    if len(by_series):
        metadata["per_series"] = dg.MetadataValue.md(by_series.to_markdown(index=False, floatfmt=".3f"))
    if url := mlflow.run_url(experiment_id, run_id):
        metadata["mlflow_run"] = dg.MetadataValue.url(url)
    return metadata


def build(pipeline: Pipeline) -> dg.AssetsDefinition:
    @pipeline.asset(
        "backtest_report",
        description=f"Walk-forward backtest of {pipeline.name}: out-of-sample improvement over seasonal naive per "
        "day, rolling and overall, beside each model partition's in-window hold-out figure.",
        kinds={"pandas", "mlflow"},
        partitioned=False,
        deps=[pipeline.key("backtest"), pipeline.key("model")],
        automation_condition=automation.after_upstream_update(),
    )
    def backtest_report(
        context: dg.AssetExecutionContext,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> dg.Output[Frame]:
        """Out-of-sample improvement over the baseline (daily, rolling, overall) and in-window hold-out figures."""
        import pandas as pd

        from ml import backtest, plots

        keys = pipeline.partitions_def.get_partition_keys(dynamic_partitions_store=context.instance)
        stored = io_manager.read_many(pipeline.key("model"), keys, allow_missing=True)
        records = [ModelRecord.model_validate(v) for v in stored.values() if not isinstance(v, Rejected)]
        if not records:
            raise dg.Failure(f"{pipeline.key('model').to_user_string()} has no trained partitions yet")
        days = io_manager.read_many(pipeline.key("backtest"), keys, allow_missing=True)
        scores = [v for v in days.values() if isinstance(v, pd.DataFrame)]
        not_scored = {d: v.reason for d, v in days.items() if isinstance(v, Rejected)}
        table = report_table(scores, records)
        figures = headline(scores, table)
        counts: dict[str, Any] = {
            "days_scored": len(scores),
            "days_not_scored": len(not_scored),
            "not_scored_days": dg.MetadataValue.json(dict(sorted(not_scored.items())[:50])),
            "excluded_rows": int(sum(int(frame["excluded_rows"].iloc[0]) for frame in scores)),
        }
        by_series = backtest.per_series(pd.concat(scores, ignore_index=True)) if scores else pd.DataFrame()
        png = plots.backtest(table, figures.get("out_of_sample_improvement"), backtest.ROLLING_DAYS)
        files = {PLOT: png, "backtest.csv": table.reset_index().to_csv(index=False).encode()}
        if len(by_series):
            files["backtest_per_series.csv"] = by_series.to_csv(index=False).encode()
        per_series_metrics = {
            f"series/{label}/out_of_sample_improvement": float(improvement)
            for label, improvement in zip(by_series.get("series", []), by_series.get("improvement", []), strict=True)
            if label != "pooled"
        }
        logged = mlflow.log_report(
            f"{pipeline.name}-backtest",
            f"{pipeline.name}-backtest-{context.run.run_id[:8]}",
            files=files,
            metrics={**figures, **per_series_metrics, "days_scored": len(scores), "days_not_scored": len(not_scored)},
            tags={"pipeline": pipeline.name, "dagster_run_id": context.run.run_id},
        )
        return dg.Output(
            table.reset_index(),
            metadata=report_metadata(
                table, figures=figures, counts=counts, by_series=by_series, png=png, logged=logged, mlflow=mlflow
            ),
        )

    return backtest_report
