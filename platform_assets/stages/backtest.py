"""`<p>/backtest`: each day's actuals against the forecasts of model partitions trained before it (out of sample)."""

import time
from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

import dagster as dg

from kernel import automation
from kernel.frames import Frame
from kernel.names import MODEL_GATES
from kernel.pipeline import Pipeline, run_days
from kernel.records import ChampionRecord, ModelRecord, Rejected
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking
from resources.verdicts import rejected_days

from .serving import champion_model

if TYPE_CHECKING:
    import pandas as pd

    from ml import backtest


class ModelCache:
    """Registered models loaded once per run (each through its verified lineage), and what loading them cost."""

    def __init__(self, mlflow: MlflowTracking) -> None:
        self.mlflow = mlflow
        self.models: dict[str, Any] = {}
        self.seconds = 0.0

    def get(self, record: ModelRecord) -> Any:
        if record.model_uri not in self.models:
            started = time.perf_counter()
            self.models[record.model_uri] = self.mlflow.load_verified(record)
            self.seconds += time.perf_counter() - started
        return self.models[record.model_uri]


def forecasters_for(
    day: date,
    *,
    models: Mapping[str, ModelRecord],
    gate_failed: Mapping[str, str],
    champion: tuple[ChampionRecord, ModelRecord] | None,
    cache: ModelCache,
    horizon_days: int,
) -> "list[backtest.Forecaster]":
    """The model partitions whose horizon covers `day` and, if its window ended before `day`, the champion."""
    from ml import backtest

    forecasters = [
        backtest.Forecaster(
            partition=date.fromisoformat(record.partition),
            version=record.version,
            model=cache.get(record),
            champion=champion is not None and champion[0].version == record.version,
            passed_gates=record.partition not in gate_failed,
        )
        for covering in backtest.covering_partitions(day, horizon_days)
        if (record := models.get(str(covering))) is not None
    ]
    if champion is not None:
        serving, record = champion
        if serving.partition < str(day) and all(f.version != serving.version for f in forecasters):
            model = cache.get(record)
            forecasters.append(backtest.Forecaster(date.fromisoformat(serving.partition), serving.version, model, True))
    return forecasters


def score(
    day: date,
    features: "pd.DataFrame | Rejected | None",
    forecasters: "list[backtest.Forecaster]",
    rejected_models: Mapping[str, str],
    pipeline: Pipeline,
) -> "pd.DataFrame | Rejected":
    """The day's scores, or why it is not scored (its actuals were rejected or never built, no model covers it)."""
    from ml import backtest

    if features is None:
        return Rejected(day=str(day), reason="not scored: its features were never materialised")
    if isinstance(features, Rejected):
        return Rejected(day=str(day), reason=f"not scored: actuals rejected ({features.reason})")
    if not forecasters:
        covering = [str(d) for d in backtest.covering_partitions(day, pipeline.spec.evaluation.horizon_days)]
        rejected = {d: rejected_models[d] for d in covering if d in rejected_models}
        why = f" (model partition(s) rejected: {'; '.join(rejected.values())})" if rejected else ""
        return Rejected(day=str(day), reason=f"not scored: no model partition covers it{why}")
    try:
        return backtest.score_day(day, features, forecasters, pipeline.spec)
    except backtest.NothingToScore as exc:
        return Rejected(day=str(day), reason=f"not scored: {exc}")


def build(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec
    horizon = spec.evaluation.horizon_days

    @pipeline.asset(
        "backtest",
        description=f"Out-of-sample MAE of {spec.name} per day: the model partitions of the {horizon} day(s) before "
        "it, the champion and seasonal naive, on the day's actuals.",
        kinds={"pandas", "mlflow", "parquet"},
        compute=spec.compute.default,
        ins={
            "features": pipeline.day_input("features", allow_missing=True),
            "models": pipeline.preceding_input("model", horizon),
        },
        automation_condition=automation.scorable_missing(pipeline.key("model")),
    )
    def backtest_days(
        context: dg.AssetExecutionContext,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
        features: dict[str, Frame | Rejected],
        models: dict[str, Any],
    ) -> dg.Output[dict[str, Frame | Rejected]]:
        """Out-of-sample MAE per day of every model partition whose horizon covers it, the champion and the baseline."""
        import pandas as pd

        from ml import backtest

        days = run_days(context)
        trained = {d: ModelRecord.model_validate(v) for d, v in models.items() if not isinstance(v, Rejected)}
        rejected_models = {d: v.reason for d, v in models.items() if isinstance(v, Rejected)}
        model_key = pipeline.key("model")
        gate_failed = rejected_days(
            context.instance, model_key, MODEL_GATES, io_manager.fingerprints(model_key, list(trained))
        )
        cache = ModelCache(mlflow)
        served = champion_model(pipeline, io_manager, mlflow)
        champion = None
        if served is not None:
            serving, record, model = served
            cache.models[record.model_uri] = model
            champion = (serving, record)
        values: dict[str, pd.DataFrame | Rejected] = {}
        for day in days:
            actuals = features.get(str(day))
            forecasters = (  # a model is loaded only for a day it will score
                forecasters_for(
                    day, models=trained, gate_failed=gate_failed, champion=champion, cache=cache, horizon_days=horizon
                )
                if isinstance(actuals, pd.DataFrame)
                else []
            )
            values[str(day)] = score(day, actuals, forecasters, rejected_models, pipeline)
        scored = [v for v in values.values() if isinstance(v, pd.DataFrame)]
        not_scored = {d: v.reason for d, v in values.items() if isinstance(v, Rejected)}
        metadata: dict[str, Any] = {
            "days_scored": len(scored),
            "days_not_scored": len(not_scored),
            "not_scored_days": dg.MetadataValue.json(dict(sorted(not_scored.items())[:50])),
            "excluded_rows": int(sum(int(frame["excluded_rows"].iloc[0]) for frame in scored)),
            "models_loaded": len(cache.models),
            "model_load_s": round(cache.seconds, 2),
            "champion_version": champion[0].version if champion else "none",
        }
        if scored:
            scores = pd.concat(scored, ignore_index=True)
            metadata["out_of_sample_improvement"] = backtest.improvement(backtest.daily_models(scores))
            if len(by_series := backtest.per_series(scores)):
                metadata["per_series"] = dg.MetadataValue.md(by_series.to_markdown(index=False, floatfmt=".3f"))
        return dg.Output(values, metadata=metadata)

    return backtest_days
