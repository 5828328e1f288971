"""Checks on `<p>/features`: finite values and a stable schema (blocking), drift vs reference (warning)."""

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import dagster as dg

from checks.emit import emit, judged_by_writer, multi_check, run_chunks
from kernel.names import FINITE_VALUES, NO_DRIFT, SCHEMA_STABLE
from kernel.pipeline import Pipeline, run_days
from ml.quality import PSI_WARN, finite_values, judge_days, no_drift, schema_stable
from resources.day_tasks import drift_reference
from resources.storage import PartitionedParquetIOManager

if TYPE_CHECKING:
    from ml.features import ReferenceBins


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
            return drift_reference(io_manager.store, tuple(key.path), min(run_days(context)), spec)

        written = judged_by_writer(context, key)
        yield from emit(
            context,
            specs,
            run_chunks(context, io_manager, key, skip=written),
            {
                FINITE_VALUES: lambda days: judge_days(days, lambda _, frame: finite_values(frame, spec)),
                SCHEMA_STABLE: lambda days: judge_days(days, lambda _, frame: schema_stable(frame, expected_schema)),
                NO_DRIFT: lambda days: judge_days(days, lambda _, frame: no_drift(frame, reference())),
            },
            written,
        )

    return features_checks
