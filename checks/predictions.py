"""Checks on `<p>/predictions`: complete, finite and non-negative, and in a plausible range."""

from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd

from platform_assets.pipeline import Pipeline, run_values
from resources.storage import PartitionedParquetIOManager

COMPLETE = "complete"
FINITE_NON_NEGATIVE = "finite_non_negative"
PLAUSIBLE_RANGE = "plausible_range"
PLAUSIBLE_FACTOR = 3.0


def build(pipeline: Pipeline) -> dg.AssetChecksDefinition:
    spec = pipeline.spec
    key = pipeline.key("predictions")
    target_rule = spec.expectations.columns.get(spec.target)
    ceiling = target_rule.max if target_rule and target_rule.max is not None else None

    @dg.multi_asset_check(
        name=f"{pipeline.name}_predictions_checks",
        specs=[
            dg.AssetCheckSpec(
                COMPLETE,
                asset=key,
                blocking=True,
                additional_deps=[pipeline.key("features")],
                description="One prediction per feature row of each day.",
            ),
            dg.AssetCheckSpec(
                FINITE_NON_NEGATIVE,
                asset=key,
                blocking=True,
                description="Every prediction is finite and not negative.",
            ),
            dg.AssetCheckSpec(
                PLAUSIBLE_RANGE,
                asset=key,
                description=f"Predictions stay below {PLAUSIBLE_FACTOR}x the largest actual (or the spec's max).",
            ),
        ],
        can_subset=True,
    )
    def predictions_checks(
        context: dg.AssetCheckExecutionContext,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> Iterator[dg.AssetCheckResult]:
        """Completeness, finiteness and range of the days of this run."""
        predictions: dict[str, pd.DataFrame] = run_values(context, io_manager, key)
        features: dict[str, pd.DataFrame] = run_values(context, io_manager, pipeline.key("features"))
        selected = {k.name for k in context.selected_asset_check_keys}
        frame = pd.concat(predictions.values(), ignore_index=True)
        values = frame["prediction"].to_numpy(dtype="float64")
        if COMPLETE in selected:
            short = {d: [len(p), len(features[d])] for d, p in predictions.items() if len(p) != len(features[d])}
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=COMPLETE,
                passed=not short,
                metadata={
                    "days": len(predictions),
                    "rows": len(frame),
                    "incomplete_days": dg.MetadataValue.json(dict(list(short.items())[:20])),
                },
            )
        if FINITE_NON_NEGATIVE in selected:
            bad = int((~np.isfinite(values) | (values < 0)).sum())
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=FINITE_NON_NEGATIVE,
                passed=bad == 0,
                metadata={"bad_values": bad, "rows": len(values)},
            )
        if PLAUSIBLE_RANGE in selected:
            actual_max = float(np.nanmax(frame["actual"].to_numpy(dtype="float64"))) if len(frame) else 0.0
            limit = ceiling if ceiling is not None else PLAUSIBLE_FACTOR * actual_max
            observed = float(values.max()) if len(values) else 0.0
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=PLAUSIBLE_RANGE,
                passed=observed <= limit,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"limit": limit, "max_prediction": observed},
            )

    return predictions_checks
