"""Checks on `<p>/raw`: the spec's Great Expectations suite (blocking) and day completeness (warning)."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd

from checks import expectations as gx_suites
from checks.emit import Judgement, emit, multi_check, run_values
from kernel.names import COMPLETE_DAYS, PASSES_EXPECTATIONS
from kernel.pipeline import Pipeline
from kernel.spec import PipelineSpec
from resources.storage import PartitionedParquetIOManager


def passes_expectations(raw: dict[str, pd.DataFrame], spec: PipelineSpec) -> Judgement:
    frame = pd.concat(raw.values(), ignore_index=True)
    outcomes = gx_suites.validate(frame, gx_suites.row_expectations(spec), f"{spec.name}_raw")
    failed = [o.as_dict() for o in outcomes if not o.success]
    return not failed, {
        "partitions": len(raw),
        "rows": len(frame),
        "expectations": len(outcomes),
        "failed_expectations": dg.MetadataValue.json(failed),
        "results": dg.MetadataValue.json([o.as_dict() for o in outcomes]),
    }


def complete_days(raw: dict[str, pd.DataFrame], spec: PipelineSpec) -> Judgement:
    counts = gx_suites.rows_per_day(raw, spec)
    suite = gx_suites.completeness_expectations(spec)
    outcomes = gx_suites.validate(counts, suite, f"{spec.name}_rows") if suite else []
    bounds = spec.expectations.rows_per_partition
    short = counts[(counts["rows"] < bounds.min) | (counts["rows"] > bounds.max)] if bounds else counts.iloc[0:0]
    return all(o.success for o in outcomes), {
        "min_rows": bounds.min if bounds else "unset",
        "max_rows": bounds.max if bounds else "unset",
        "incomplete_days": len(short["day"].unique()),
        "incomplete": dg.MetadataValue.json(short.head(50).to_dict(orient="records")),
        "results": dg.MetadataValue.json([o.as_dict() for o in outcomes]),
    }


def build(pipeline: Pipeline) -> dg.AssetChecksDefinition:
    spec = pipeline.spec
    raw_key = pipeline.key("raw")
    specs = [
        dg.AssetCheckSpec(
            PASSES_EXPECTATIONS,
            asset=raw_key,
            blocking=True,
            description="Schema, types, not-null, ranges and unique timestamps from the spec (Great Expectations).",
        ),
        dg.AssetCheckSpec(
            COMPLETE_DAYS,
            asset=raw_key,
            description="Each day has the spec's expected number of rows; partial days warn, they do not block.",
        ),
    ]

    @multi_check(f"{pipeline.name}_raw_checks", specs)
    def raw_checks(
        context: dg.AssetCheckExecutionContext, io_manager: dg.ResourceParam[PartitionedParquetIOManager]
    ) -> Iterator[dg.AssetCheckResult]:
        """Great Expectations on the days of this run."""
        raw: dict[str, pd.DataFrame] = run_values(context, io_manager, raw_key)
        yield from emit(
            context,
            specs,
            {
                PASSES_EXPECTATIONS: lambda: passes_expectations(raw, spec),
                COMPLETE_DAYS: lambda: complete_days(raw, spec),
            },
        )

    return raw_checks
