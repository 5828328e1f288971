"""Spec -> asset group: raw, features, model, champion, predictions, the backtest and its report, checks and sensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from checks import data as data_checks
from checks import features as feature_checks
from checks import models as model_checks
from checks import predictions as prediction_checks
from kernel.pipeline import Pipeline
from platform_assets.stages import (
    backtest,
    champion,
    features,
    ingest,
    predictions,
    promote,
    report,
    retire,
    rollback,
    training,
)
from resources.storage import PartitionedParquetIOManager
from sensors import landing
from sensors import retire as retire_sensor


@dataclass
class PipelineDefinitions:
    """Everything one spec contributes to the code location."""

    assets: list[dg.AssetsDefinition] = field(default_factory=list)
    checks: list[dg.AssetChecksDefinition] = field(default_factory=list)
    sensors: list[dg.SensorDefinition] = field(default_factory=list)
    jobs: list[dg.JobDefinition] = field(default_factory=list)


def build_pipeline(
    pipeline: Pipeline, store: PartitionedParquetIOManager, quarantine_uri: str | None = None
) -> PipelineDefinitions:
    """One pipeline's definitions; `store` is the asset store resource, whose ingest log the sensors read."""
    return PipelineDefinitions(
        assets=[
            ingest.build(pipeline),
            features.build(pipeline),
            training.build_model(pipeline),
            champion.build_champion(pipeline),
            predictions.build(pipeline),
            backtest.build(pipeline),
            report.build(pipeline),
        ],
        checks=[
            data_checks.build(pipeline),
            feature_checks.build(pipeline),
            model_checks.build(pipeline),
            prediction_checks.build(pipeline),
        ],
        sensors=[landing.build(pipeline, store, quarantine_uri), retire_sensor.build(pipeline, store)],
        jobs=[rollback.build_rollback(pipeline), promote.build_promote(pipeline), retire.build_retire(pipeline)],
    )
