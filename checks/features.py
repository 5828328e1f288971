"""Checks on `<p>/features`: finite values and a stable schema (blocking), drift vs reference (warning)."""

from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import pandas as pd

from platform_assets.ml import features as feature_fns
from platform_assets.pipeline import Pipeline, run_days, run_values
from resources.storage import PartitionedParquetIOManager

FINITE_VALUES = "finite_values"
SCHEMA_STABLE = "schema_stable"
NO_DRIFT = "no_drift"
PSI_WARN = 0.25


def build(pipeline: Pipeline) -> dg.AssetChecksDefinition:
    spec = pipeline.spec
    key = pipeline.key("features")
    expected_schema = feature_fns.feature_schema(spec)

    @dg.multi_asset_check(
        name=f"{pipeline.name}_features_checks",
        specs=[
            dg.AssetCheckSpec(
                FINITE_VALUES,
                asset=key,
                blocking=True,
                description="Every numeric feature is finite (no NaN or infinity).",
            ),
            dg.AssetCheckSpec(
                SCHEMA_STABLE,
                asset=key,
                blocking=True,
                description="Columns and dtypes match the schema the spec defines.",
            ),
            dg.AssetCheckSpec(
                NO_DRIFT,
                asset=key,
                description=f"Population stability of each feature vs the training window stays below {PSI_WARN}.",
            ),
        ],
        can_subset=True,
    )
    def features_checks(
        context: dg.AssetCheckExecutionContext,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> Iterator[dg.AssetCheckResult]:
        """Finite values, stable schema and drift on the days of this run."""
        features: dict[str, pd.DataFrame] = run_values(context, io_manager, key)
        selected = {k.name for k in context.selected_asset_check_keys}
        frame = pd.concat(features.values(), ignore_index=True)
        if FINITE_VALUES in selected:
            counts = {c: n for c, n in feature_fns.non_finite_counts(frame, spec).items() if n}
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=FINITE_VALUES,
                passed=not counts,
                metadata={"rows": len(frame), "non_finite_by_column": dg.MetadataValue.json(counts)},
            )
        if SCHEMA_STABLE in selected:
            problems = {
                day: {c: str(t) for c, t in f.dtypes.items()}
                for day, f in features.items()
                if {c: str(t) for c, t in f.dtypes.items()} != expected_schema
            }
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=SCHEMA_STABLE,
                passed=not problems,
                metadata={
                    "expected": dg.MetadataValue.json(expected_schema),
                    "mismatched_days": dg.MetadataValue.json(dict(list(problems.items())[:5])),
                },
            )
        if NO_DRIFT in selected:
            first = min(run_days(context))
            reference_days = [str(first - timedelta(days=k)) for k in range(spec.training.window_days, 0, -1)]
            reference = io_manager.read_many(key, reference_days, allow_missing=True)
            if not reference or frame.empty:
                yield dg.AssetCheckResult(
                    asset_key=key,
                    check_name=NO_DRIFT,
                    passed=True,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"reference_days": len(reference), "note": "no reference window before this run"},
                )
                return
            ref = pd.concat(reference.values(), ignore_index=True)
            psi = {
                c: feature_fns.population_stability(ref[c], frame[c]) for c in feature_fns.numeric_feature_columns(spec)
            }
            drifted = {c: v for c, v in psi.items() if v > PSI_WARN}
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=NO_DRIFT,
                passed=not drifted,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "threshold": PSI_WARN,
                    "reference_days": len(reference),
                    "psi": dg.MetadataValue.json({c: round(v, 4) for c, v in psi.items()}),
                    "drifted": dg.MetadataValue.json(sorted(drifted)),
                },
            )

    return features_checks
