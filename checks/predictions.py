"""Checks on `<p>/predictions`: complete, finite and non-negative, and in a plausible range."""

from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd

from checks.emit import Judgement, emit, multi_check, run_values
from kernel.names import COMPLETE, FINITE_NON_NEGATIVE, PLAUSIBLE_RANGE
from kernel.pipeline import Pipeline
from resources.storage import PartitionedParquetIOManager

PLAUSIBLE_FACTOR = 3.0


def complete(predictions: dict[str, pd.DataFrame], features: dict[str, pd.DataFrame]) -> Judgement:
    short = {d: [len(p), len(features[d])] for d, p in predictions.items() if len(p) != len(features[d])}
    return not short, {
        "days": len(predictions),
        "rows": sum(len(p) for p in predictions.values()),
        "incomplete_days": dg.MetadataValue.json(dict(list(short.items())[:20])),
    }


def finite_non_negative(values: np.ndarray) -> Judgement:
    bad = int((~np.isfinite(values) | (values < 0)).sum())
    return bad == 0, {"bad_values": bad, "rows": len(values)}


def plausible_range(frame: pd.DataFrame, values: np.ndarray, ceiling: float | None) -> Judgement:
    actual_max = float(np.nanmax(frame["actual"].to_numpy(dtype="float64"))) if len(frame) else 0.0
    limit = ceiling if ceiling is not None else PLAUSIBLE_FACTOR * actual_max
    observed = float(values.max()) if len(values) else 0.0
    return observed <= limit, {"limit": limit, "max_prediction": observed}


def build(pipeline: Pipeline) -> dg.AssetChecksDefinition:
    spec = pipeline.spec
    key = pipeline.key("predictions")
    target_rule = spec.expectations.columns.get(spec.target)
    ceiling = target_rule.max if target_rule and target_rule.max is not None else None
    specs = [
        dg.AssetCheckSpec(
            COMPLETE,
            asset=key,
            blocking=True,
            additional_deps=[pipeline.key("features")],
            description="One prediction per feature row of each day.",
        ),
        dg.AssetCheckSpec(
            FINITE_NON_NEGATIVE, asset=key, blocking=True, description="Every prediction is finite and not negative."
        ),
        dg.AssetCheckSpec(
            PLAUSIBLE_RANGE,
            asset=key,
            description=f"Predictions stay below {PLAUSIBLE_FACTOR}x the largest actual (or the spec's max).",
        ),
    ]

    @multi_check(f"{pipeline.name}_predictions_checks", specs)
    def predictions_checks(
        context: dg.AssetCheckExecutionContext,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> Iterator[dg.AssetCheckResult]:
        """Completeness, finiteness and range of the days of this run."""
        predictions: dict[str, pd.DataFrame] = run_values(context, io_manager, key)
        features: dict[str, pd.DataFrame] = run_values(context, io_manager, pipeline.key("features"))
        frame = pd.concat(predictions.values(), ignore_index=True)
        values = frame["prediction"].to_numpy(dtype="float64")
        yield from emit(
            context,
            specs,
            {
                COMPLETE: lambda: complete(predictions, features),
                FINITE_NON_NEGATIVE: lambda: finite_non_negative(values),
                PLAUSIBLE_RANGE: lambda: plausible_range(frame, values, ceiling),
            },
        )

    return predictions_checks
