"""Checks on `<p>/raw`, a verdict per day: the spec's Great Expectations suite (a gate), completeness (a warning)."""

from collections.abc import Iterator
from datetime import date
from typing import TYPE_CHECKING, Any

import dagster as dg

from checks import expectations as gx_suites
from checks.emit import Verdict, emit, judge_days, multi_check, run_values
from kernel.days import hours_in_day
from kernel.names import COMPLETE_DAYS, PASSES_EXPECTATIONS
from kernel.pipeline import Pipeline
from kernel.records import Rejected
from kernel.schema import TIMESTAMP
from kernel.spec import PipelineSpec
from resources.storage import PartitionedParquetIOManager

if TYPE_CHECKING:
    import pandas as pd

EXAMPLE_ROWS = 3


def expectation_verdicts(raw: dict[str, Any], spec: PipelineSpec) -> dict[str, Verdict]:
    """The GX suite run once over the run's days, each failure attributed to the days of its unexpected rows.

    A day with no rows cannot be judged and is rejected as such; an expectation without row positions (the
    column set, a type, one that raised) fails every day it was run on. An expectation with a `mostly` judges
    each day on its own share of passing rows (GX's own verdict is over the whole run).
    """
    import pandas as pd

    frames = {day: frame for day, frame in raw.items() if not isinstance(frame, Rejected) and len(frame)}
    verdicts = {day: Verdict(False, "no rows: the source has no data for this day") for day in raw}
    if not frames:
        return judge_days(raw, lambda day, _: verdicts[day])
    frame = pd.concat(frames.values(), ignore_index=True)
    outcomes = gx_suites.validate(frame, gx_suites.row_expectations(spec), f"{spec.name}_raw", with_rows=True)
    days = frame[TIMESTAMP].dt.strftime("%Y-%m-%d")
    failures: dict[str, list[dict[str, Any]]] = {day: [] for day in frames}
    for outcome in outcomes:
        if not outcome.unexpected_rows:
            if not outcome.success:
                for failed in failures.values():
                    failed.append(outcome.as_dict())
            continue
        located = pd.DataFrame({"row": outcome.unexpected_rows, "day": days.iloc[outcome.unexpected_rows].to_numpy()})
        for day, group in located.groupby("day"):
            passing = passing_share(frames[str(day)], outcome, len(group))
            if outcome.mostly is not None and passing >= outcome.mostly:
                continue
            examples = frame.iloc[group["row"].head(EXAMPLE_ROWS)].astype("str").to_dict(orient="records")
            found = {"unexpected_count": len(group), "passing_share": round(passing, 4), "examples": examples}
            failures[str(day)].append(outcome.as_dict() | found)
    for day, failed in failures.items():
        reason = "; ".join(
            f"{f['expectation']} {f.get('column', '')}: {f.get('unexpected_count', 'all')} row(s)"
            + (
                f" ({f['passing_share']:.0%} pass, mostly={f['mostly']})"
                if {"mostly", "passing_share"} <= f.keys()
                else ""
            )
            for f in failed
        )
        verdicts[day] = Verdict(
            not failed,
            reason,
            {"rows": len(frames[day]), "expectations": len(outcomes)}
            | ({"failed": dg.MetadataValue.json(failed)} if failed else {}),
        )
    return judge_days(raw, lambda day, _: verdicts[day])


def passing_share(day: "pd.DataFrame", outcome: gx_suites.ExpectationOutcome, unexpected: int) -> float:
    """The day's share of rows that pass, as GX counts it for `mostly`: over all rows for not-null, over the
    non-missing values otherwise (a missing value is the not-null rule's to judge)."""
    judged = len(day)
    if outcome.column in day.columns and outcome.expectation != "expect_column_values_to_not_be_null":
        judged = int(day[outcome.column].notna().sum())
    return 1 - unexpected / judged if judged else 0.0


def completeness_verdicts(raw: dict[str, Any], spec: PipelineSpec) -> dict[str, Verdict]:
    """Rows per day (per entity) within the spec's bounds, moved by an hour on a 23- or 25-hour day (a DST change in
    the partitions' time zone); partial days warn, they do not block."""
    bounds = spec.expectations.rows_per_partition

    def judge(day: str, frame: "pd.DataFrame") -> Verdict:
        counts = gx_suites.rows_per_day({day: frame}, spec)
        if bounds is None:
            return Verdict(True, metadata={"rows": int(counts["rows"].sum())})
        low, high = gx_suites.day_bounds(bounds, day, spec.partitioning.timezone)
        short = counts[(counts["rows"] < low) | (counts["rows"] > high)]
        reason = f"{len(short)} series outside {low}..{high} rows" if len(short) else ""
        hours = hours_in_day(date.fromisoformat(day), spec.partitioning.timezone)
        return Verdict(
            short.empty,
            reason,
            {
                "min_rows": low,
                "max_rows": high,
                "hours": hours,
                "rows": dg.MetadataValue.json(counts.to_dict("records")),
            },
        )

    return judge_days(raw, judge)


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
        read = run_values(context, io_manager, pipeline.key("raw"))
        raw = read.values
        yield from emit(
            context,
            specs,
            {
                PASSES_EXPECTATIONS: lambda: expectation_verdicts(raw, spec),
                COMPLETE_DAYS: lambda: completeness_verdicts(raw, spec),
            },
            read.fingerprints,
        )

    return raw_checks
