"""Checks on `<p>/raw`, a verdict per day: the spec's Great Expectations suite (a gate), completeness (a warning)."""

from collections.abc import Iterator, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

import dagster as dg

from checks import expectations as gx_suites
from checks.emit import emit, judge_days, multi_check, run_chunks
from kernel import series
from kernel.days import hours_in_day
from kernel.names import COMPLETE_DAYS, PASSES_EXPECTATIONS
from kernel.pipeline import Pipeline
from kernel.records import Rejected
from kernel.schema import TIMESTAMP
from kernel.spec import PipelineSpec
from ml.quality import Verdict
from resources.storage import PartitionedParquetIOManager

if TYPE_CHECKING:
    import pandas as pd

EXAMPLE_ROWS = 3


def expectation_verdicts(raw: Mapping[str, Any], spec: PipelineSpec) -> dict[str, Verdict]:
    """The GX suite run once over a chunk of the run's days, each failure attributed to the (day, series) of its
    unexpected rows.

    A day with no rows cannot be judged and is rejected as such; an expectation without row positions (the
    column set, a type, one that raised) fails every day it was run on. An expectation with a `mostly` judges
    each series' day on its own share of passing rows (GX's own verdict is over the whole run). With entity columns
    and `expectations.reject: series_day`, a day some of whose series fail passes for the others, listing the
    rejected ones with their reasons (`rejected_series`, which the day gate leaves out downstream); a day all of
    whose series fail, or any failing series with `reject: day`, fails.
    """
    import pandas as pd

    frames = {day: frame for day, frame in raw.items() if not isinstance(frame, Rejected) and len(frame)}
    verdicts = {day: Verdict(False, "no rows: the source has no data for this day") for day in raw}
    if not frames:
        return judge_days(raw, lambda day, _: verdicts[day])
    frame = pd.concat(frames.values(), ignore_index=True)
    outcomes = gx_suites.validate(frame, gx_suites.row_expectations(spec), f"{spec.name}_raw", with_rows=True)
    days = frame[TIMESTAMP].dt.strftime("%Y-%m-%d")
    labels = series.labels(frame, spec.source.entity_columns)
    groups = frame.groupby([days, labels]).indices
    day_wide: list[dict[str, Any]] = []
    failures: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for outcome in outcomes:
        if not outcome.unexpected_rows:
            if not outcome.success:
                day_wide.append(outcome.as_dict())
            continue
        rows = outcome.unexpected_rows
        located = pd.DataFrame({"row": rows, "day": days.iloc[rows].to_numpy(), "series": labels.iloc[rows].to_numpy()})
        for (day, label), group in located.groupby(["day", "series"]):
            key = (str(day), str(label))
            passing = passing_share(frame.iloc[groups[key]], outcome, len(group))
            if outcome.mostly is not None and passing >= outcome.mostly:
                continue
            examples = frame.iloc[group["row"].head(EXAMPLE_ROWS)].astype("str").to_dict(orient="records")
            found = {"unexpected_count": len(group), "passing_share": round(passing, 4), "examples": examples}
            failures.setdefault(key, []).append(outcome.as_dict() | found)
    day_series: dict[str, list[str]] = {}
    for day, label in groups:
        day_series.setdefault(str(day), []).append(str(label))
    for day, labelled in day_series.items():
        rejected = {label: _reason(failures[(day, label)]) for label in labelled if (day, label) in failures}
        named = (lambda label: {"series": label}) if spec.source.entity_columns else (lambda _: {})
        failed = day_wide + [f | named(label) for label in rejected for f in failures[(day, label)]]
        whole_day = bool(day_wide) or len(rejected) == len(labelled) or spec.expectations.reject == "day"
        metadata: dict[str, Any] = {"rows": len(frames[day]), "expectations": len(outcomes)}
        metadata |= {"series": len(labelled)} if spec.source.entity_columns else {}
        metadata |= {"failed": dg.MetadataValue.json(failed)} if failed else {}
        if not rejected or not spec.source.entity_columns:
            verdicts[day] = Verdict(not failed, _reason(failed), metadata)
        elif whole_day:
            listed = "; ".join(f"{label}: {why}" for label, why in rejected.items())
            reason = _reason(day_wide) if day_wide else f"{len(rejected)} of {len(labelled)} series fail ({listed})"
            verdicts[day] = Verdict(False, reason, metadata)
        else:
            kept = len(labelled) - len(rejected)
            listed = "; ".join(f"{label}: {why}" for label, why in rejected.items())
            reason = f"{len(rejected)} of {len(labelled)} series rejected ({listed}); the other {kept} kept"
            verdicts[day] = Verdict(True, reason, metadata, rejected_series=rejected)
    return judge_days(raw, lambda day, _: verdicts[day])


def _reason(failed: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{f['expectation']} {f.get('column', '')}: {f.get('unexpected_count', 'all')} row(s)"
        + (f" ({f['passing_share']:.0%} pass, mostly={f['mostly']})" if {"mostly", "passing_share"} <= f.keys() else "")
        for f in failed
    )


def passing_share(day: "pd.DataFrame", outcome: gx_suites.ExpectationOutcome, unexpected: int) -> float:
    """The day's share of rows that pass, as GX counts it for `mostly`: over all rows for not-null, over the
    non-missing values otherwise (a missing value is the not-null rule's to judge)."""
    judged = len(day)
    if outcome.column in day.columns and outcome.expectation != "expect_column_values_to_not_be_null":
        judged = int(day[outcome.column].notna().sum())
    return 1 - unexpected / judged if judged else 0.0


def completeness_verdicts(raw: Mapping[str, Any], spec: PipelineSpec) -> dict[str, Verdict]:
    """Rows per day (per entity) within the spec's bounds, moved by an hour on a 23- or 25-hour day (a DST change in
    the partitions' time zone); partial days warn, they do not block."""
    import pandas as pd

    bounds = spec.expectations.rows_per_partition
    built = {day: frame for day, frame in raw.items() if isinstance(frame, pd.DataFrame)}
    by_day: dict[str, list[dict[str, Any]]] = {}  # plain records, one pass: a pandas group per day costs more
    for record in gx_suites.rows_per_day(built, spec).to_dict("records") if built else []:
        by_day.setdefault(record["day"], []).append(record)

    def judge(day: str, _: "pd.DataFrame") -> Verdict:
        counts = by_day[day]
        if bounds is None:
            return Verdict(True, metadata={"rows": sum(c["rows"] for c in counts)})
        low, high = gx_suites.day_bounds(bounds, day, spec.partitioning.timezone)
        short = [c for c in counts if not low <= c["rows"] <= high]
        reason = f"{len(short)} series outside {low}..{high} rows" if short else ""
        if short and spec.source.entity_columns:
            reason += " (" + ", ".join(f"{c['series']}: {c['rows']}" for c in short) + ")"
        hours = hours_in_day(date.fromisoformat(day), spec.partitioning.timezone)
        return Verdict(
            not short,
            reason,
            {"min_rows": low, "max_rows": high, "hours": hours, "rows": dg.MetadataValue.json(counts)},
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
        yield from emit(
            context,
            specs,
            run_chunks(context, io_manager, pipeline.key("raw")),
            {
                PASSES_EXPECTATIONS: lambda raw: expectation_verdicts(raw, spec),
                COMPLETE_DAYS: lambda raw: completeness_verdicts(raw, spec),
            },
        )

    return raw_checks
