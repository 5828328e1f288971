"""Checks on `<p>/raw`: the spec's Great Expectations suite (blocking) and day completeness (warning)."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd

from checks import expectations as gx_suites
from platform_assets.pipeline import Pipeline, run_values
from resources.storage import PartitionedParquetIOManager

PASSES_EXPECTATIONS = "passes_expectations"
COMPLETE_DAYS = "complete_days"


def build(pipeline: Pipeline) -> dg.AssetChecksDefinition:
    spec = pipeline.spec
    raw_key = pipeline.key("raw")

    @dg.multi_asset_check(
        name=f"{pipeline.name}_raw_checks",
        specs=[
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
        ],
        can_subset=True,
    )
    def raw_checks(
        context: dg.AssetCheckExecutionContext, io_manager: dg.ResourceParam[PartitionedParquetIOManager]
    ) -> Iterator[dg.AssetCheckResult]:
        """Great Expectations on the days of this run."""
        raw: dict[str, pd.DataFrame] = run_values(context, io_manager, raw_key)
        selected = {key.name for key in context.selected_asset_check_keys}
        if PASSES_EXPECTATIONS in selected:
            frame = pd.concat(raw.values(), ignore_index=True)
            outcomes = gx_suites.validate(frame, gx_suites.row_expectations(spec), f"{pipeline.name}_raw")
            failed = [o.as_dict() for o in outcomes if not o.success]
            yield dg.AssetCheckResult(
                asset_key=raw_key,
                check_name=PASSES_EXPECTATIONS,
                passed=not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "partitions": len(raw),
                    "rows": len(frame),
                    "expectations": len(outcomes),
                    "failed_expectations": dg.MetadataValue.json(failed),
                    "results": dg.MetadataValue.json([o.as_dict() for o in outcomes]),
                },
            )
        if COMPLETE_DAYS in selected:
            counts = gx_suites.rows_per_day(raw, spec)
            suite = gx_suites.completeness_expectations(spec)
            outcomes = gx_suites.validate(counts, suite, f"{pipeline.name}_rows") if suite else []
            bounds = spec.expectations.rows_per_partition
            short = (
                counts[(counts["rows"] < bounds.min) | (counts["rows"] > bounds.max)] if bounds else counts.iloc[0:0]
            )
            yield dg.AssetCheckResult(
                asset_key=raw_key,
                check_name=COMPLETE_DAYS,
                passed=all(o.success for o in outcomes),
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "min_rows": bounds.min if bounds else "unset",
                    "max_rows": bounds.max if bounds else "unset",
                    "incomplete_days": len(short["day"].unique()),
                    "incomplete": dg.MetadataValue.json(short.head(50).to_dict(orient="records")),
                    "results": dg.MetadataValue.json([o.as_dict() for o in outcomes]),
                },
            )

    return raw_checks
