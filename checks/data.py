"""Checks on `<p>/raw`, a verdict per day: the spec's Great Expectations suite (a gate), completeness (a warning).
What they decide is `ml/expectations.py`'s; a range run's raw step judges the days it writes (`judge_raw`)."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from checks.emit import emit, judged_by_writer, multi_check, run_chunks
from kernel.names import COMPLETE_DAYS, PASSES_EXPECTATIONS
from kernel.pipeline import Pipeline
from ml.expectations import completeness_verdicts, expectation_verdicts
from resources.storage import PartitionedParquetIOManager


def build(pipeline: Pipeline) -> dg.AssetChecksDefinition:
    spec = pipeline.spec
    specs = [
        pipeline.check_spec(
            "raw",
            PASSES_EXPECTATIONS,
            "Per day: schema, types, not-null, ranges and unique timestamps from the spec (Great Expectations).",
        ),
        pipeline.check_spec(
            "raw", COMPLETE_DAYS, "Per day: the spec's expected number of rows; partial days warn, they do not block."
        ),
    ]

    @multi_check(f"{pipeline.name}_raw_checks", specs, pipeline.pool("raw"))
    def raw_checks(
        context: dg.AssetCheckExecutionContext, io_manager: dg.ResourceParam[PartitionedParquetIOManager]
    ) -> Iterator[Any]:
        """Great Expectations and completeness on each day of this run."""
        key = pipeline.key("raw")
        written = judged_by_writer(context, key)
        yield from emit(
            context,
            specs,
            run_chunks(context, io_manager, key, skip=written),
            {
                PASSES_EXPECTATIONS: lambda raw: expectation_verdicts(raw, spec),
                COMPLETE_DAYS: lambda raw: completeness_verdicts(raw, spec),
            },
            written,
        )

    return raw_checks
