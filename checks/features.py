"""Checks on `<p>/features`: finite values and a stable schema (blocking), drift vs reference (warning)."""

from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import pandas as pd

from checks.emit import Judgement, emit, multi_check, run_values
from kernel.days import window_ending
from kernel.names import FINITE_VALUES, NO_DRIFT, SCHEMA_STABLE
from kernel.pipeline import Pipeline, run_days
from kernel.spec import PipelineSpec
from ml import features as feature_fns
from resources.storage import PartitionedParquetIOManager

PSI_WARN = 0.25


def finite_values(frame: pd.DataFrame, spec: PipelineSpec) -> Judgement:
    counts = {c: n for c, n in feature_fns.non_finite_counts(frame, spec).items() if n}
    return not counts, {"rows": len(frame), "non_finite_by_column": dg.MetadataValue.json(counts)}


def schema_stable(features: dict[str, pd.DataFrame], expected: dict[str, str]) -> Judgement:
    problems = {
        day: {c: str(t) for c, t in f.dtypes.items()}
        for day, f in features.items()
        if {c: str(t) for c, t in f.dtypes.items()} != expected
    }
    return not problems, {
        "expected": dg.MetadataValue.json(expected),
        "mismatched_days": dg.MetadataValue.json(dict(list(problems.items())[:5])),
    }


def no_drift(frame: pd.DataFrame, reference: dict[str, pd.DataFrame], spec: PipelineSpec) -> Judgement:
    if not reference or frame.empty:
        return True, {"reference_days": len(reference), "note": "no reference window before this run"}
    ref = pd.concat(reference.values(), ignore_index=True)
    psi = {c: feature_fns.population_stability(ref[c], frame[c]) for c in feature_fns.numeric_feature_columns(spec)}
    drifted = {c: v for c, v in psi.items() if v > PSI_WARN}
    return not drifted, {
        "threshold": PSI_WARN,
        "reference_days": len(reference),
        "psi": dg.MetadataValue.json({c: round(v, 4) for c, v in psi.items()}),
        "drifted": dg.MetadataValue.json(sorted(drifted)),
    }


def build(pipeline: Pipeline) -> dg.AssetChecksDefinition:
    spec = pipeline.spec
    key = pipeline.key("features")
    expected_schema = feature_fns.feature_schema(spec)
    specs = [
        dg.AssetCheckSpec(
            FINITE_VALUES, asset=key, blocking=True, description="Every numeric feature is finite (no NaN or infinity)."
        ),
        dg.AssetCheckSpec(
            SCHEMA_STABLE, asset=key, blocking=True, description="Columns and dtypes match the schema the spec defines."
        ),
        dg.AssetCheckSpec(
            NO_DRIFT,
            asset=key,
            description=f"Population stability of each feature vs the training window stays below {PSI_WARN}.",
        ),
    ]

    @multi_check(f"{pipeline.name}_features_checks", specs)
    def features_checks(
        context: dg.AssetCheckExecutionContext,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> Iterator[dg.AssetCheckResult]:
        """Finite values, stable schema and drift on the days of this run."""
        features: dict[str, pd.DataFrame] = run_values(context, io_manager, key)
        frame = pd.concat(features.values(), ignore_index=True)

        def drift() -> Judgement:
            first = min(run_days(context))
            reference_days = [str(d) for d in window_ending(first - timedelta(days=1), spec.training.window_days)]
            return no_drift(frame, io_manager.read_many(key, reference_days, allow_missing=True), spec)

        yield from emit(
            context,
            specs,
            {
                FINITE_VALUES: lambda: finite_values(frame, spec),
                SCHEMA_STABLE: lambda: schema_stable(features, expected_schema),
                NO_DRIFT: drift,
            },
        )

    return features_checks
