"""Checks on `<p>/predictions`: complete, finite and non-negative, and in a plausible range."""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from checks.emit import emit, judged_by_writer, multi_check, run_chunks
from kernel.names import COMPLETE, FINITE_NON_NEGATIVE, PLAUSIBLE_RANGE
from kernel.pipeline import Pipeline
from ml.quality import (
    PLAUSIBLE_FACTOR,
    Verdict,
    complete,
    finite_non_negative,
    judge_days,
    plausible_range,
    prediction_ceiling,
)
from resources.storage import PartitionedParquetIOManager


def build(pipeline: Pipeline) -> dg.AssetChecksDefinition:
    spec = pipeline.spec
    key = pipeline.key("predictions")
    ceiling = prediction_ceiling(spec)
    specs = [
        pipeline.check_spec(
            "predictions",
            COMPLETE,
            "Per day: one prediction per feature row.",
            additional_deps=[pipeline.key("features")],
        ),
        pipeline.check_spec(
            "predictions", FINITE_NON_NEGATIVE, "Per day: every prediction is finite and not negative."
        ),
        pipeline.check_spec(
            "predictions",
            PLAUSIBLE_RANGE,
            f"Per day: predictions stay below {PLAUSIBLE_FACTOR}x the largest actual (or the spec's max).",
        ),
    ]

    @multi_check(f"{pipeline.name}_predictions_checks", specs, pipeline.pool("predictions"))
    def predictions_checks(
        context: dg.AssetCheckExecutionContext,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> Iterator[Any]:
        """Completeness, finiteness and range of each day of this run."""

        def completeness(days: Mapping[str, Any]) -> dict[str, Verdict]:
            feature_rows = io_manager.row_counts(pipeline.key("features"), list(days))
            return judge_days(days, lambda day, frame: complete(frame, feature_rows.get(day)))

        written = judged_by_writer(context, key)
        yield from emit(
            context,
            specs,
            run_chunks(context, io_manager, key, skip=written),
            {
                COMPLETE: completeness,
                FINITE_NON_NEGATIVE: lambda days: judge_days(days, lambda _, frame: finite_non_negative(frame)),
                PLAUSIBLE_RANGE: lambda days: judge_days(days, lambda _, frame: plausible_range(frame, ceiling)),
            },
            written,
        )

    return predictions_checks
