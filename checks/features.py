"""Checks on `<p>/features`: finite values and a stable schema (blocking), drift vs reference (warning)."""

import functools
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import dagster as dg

from checks.emit import Verdict, emit, judge_days, multi_check, run_chunks
from kernel.days import window_ending
from kernel.names import FINITE_VALUES, NO_DRIFT, SCHEMA_STABLE
from kernel.pipeline import Pipeline, run_days
from kernel.spec import PipelineSpec
from resources.storage import PartitionedParquetIOManager

if TYPE_CHECKING:
    import pandas as pd

    from ml.features import ReferenceBins


PSI_WARN = 0.25


def finite_values(frame: "pd.DataFrame", spec: PipelineSpec) -> Verdict:
    from ml import features as feature_fns

    counts = {c: n for c, n in feature_fns.non_finite_counts(frame, spec).items() if n}
    reason = f"non-finite values in {sorted(counts)}" if counts else ""
    return Verdict(not counts, reason, {"rows": len(frame), "non_finite_by_column": dg.MetadataValue.json(counts)})


def schema_stable(frame: "pd.DataFrame", expected: dict[str, str]) -> Verdict:
    actual = {c: str(t) for c, t in frame.dtypes.items()}
    differs = {c: [actual.get(c), t] for c, t in expected.items() if actual.get(c) != t}
    differs |= {c: [t, None] for c, t in actual.items() if c not in expected}
    reason = f"columns/dtypes differ from the spec's schema: {differs}" if differs else ""
    return Verdict(not differs, reason, {"expected": dg.MetadataValue.json(expected)})


def no_drift(frame: "pd.DataFrame", reference: "Mapping[str, ReferenceBins] | None") -> Verdict:
    """The day's population stability per feature against the reference window, binned once per run (column ->
    bins, `reference_window`)."""
    from ml import features as feature_fns

    if reference is None or frame.empty:
        return Verdict(True, metadata={"note": "no reference window before this run"})
    psi = {c: feature_fns.population_stability(bins, frame[c]) for c, bins in reference.items()}
    drifted = sorted(c for c, v in psi.items() if v > PSI_WARN)
    return Verdict(
        not drifted,
        f"PSI above {PSI_WARN} for {drifted}" if drifted else "",
        {"threshold": PSI_WARN, "psi": dg.MetadataValue.json({c: round(v, 4) for c, v in psi.items()})},
    )


def reference_window(frame: "pd.DataFrame | None", spec: PipelineSpec) -> "dict[str, ReferenceBins] | None":
    """Each numeric feature of the reference window binned for `no_drift` (None: no window before the run)."""
    from ml import features as feature_fns

    if frame is None:
        return None
    return {c: feature_fns.reference_bins(frame[c]) for c in feature_fns.numeric_feature_columns(spec)}


def build(pipeline: Pipeline) -> dg.AssetChecksDefinition:
    spec = pipeline.spec
    key = pipeline.key("features")
    specs = [
        pipeline.check_spec(
            "features", FINITE_VALUES, "Per day: every numeric feature is finite (no NaN or infinity)."
        ),
        pipeline.check_spec(
            "features", SCHEMA_STABLE, "Per day: columns and dtypes match the schema the spec defines."
        ),
        pipeline.check_spec(
            "features",
            NO_DRIFT,
            f"Per day: population stability of each feature vs the training window stays below {PSI_WARN}.",
        ),
    ]

    @multi_check(f"{pipeline.name}_features_checks", specs, pipeline.pool("features"))
    def features_checks(
        context: dg.AssetCheckExecutionContext,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> Iterator[Any]:
        """Finite values, stable schema and drift on each day of this run."""
        from ml import features as feature_fns

        expected_schema = feature_fns.feature_schema(spec)

        @functools.cache
        def reference() -> "dict[str, ReferenceBins] | None":
            first = min(run_days(context))
            window = [str(d) for d in window_ending(first - timedelta(days=1), spec.training.window_days)]
            columns = feature_fns.numeric_feature_columns(spec)
            return reference_window(io_manager.read_columns(key, window, columns), spec)

        yield from emit(
            context,
            specs,
            run_chunks(context, io_manager, key),
            {
                FINITE_VALUES: lambda days: judge_days(days, lambda _, frame: finite_values(frame, spec)),
                SCHEMA_STABLE: lambda days: judge_days(days, lambda _, frame: schema_stable(frame, expected_schema)),
                NO_DRIFT: lambda days: judge_days(days, lambda _, frame: no_drift(frame, reference())),
            },
        )

    return features_checks
