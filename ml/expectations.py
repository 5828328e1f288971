"""Great Expectations suites built from a pipeline spec, run on pandas frames (GX imported on use), and what the
per-day checks of `<p>/raw` decide from them, without Dagster.

The same functions judge raw's days wherever their frames are: in the step that builds and writes them (the writer's
verdicts, which the run's check step records) and in a check step that reads the stored bytes back (a check run
alone, or a day no writer judged). A verdict's metadata holds plain values, as `ml.quality`'s do.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from kernel import series
from kernel.days import hours_in_day
from kernel.names import COMPLETE_DAYS, PASSES_EXPECTATIONS
from kernel.records import Rejected
from kernel.schema import TIMESTAMP, raw_dtypes
from kernel.spec import ColumnExpectation, PipelineSpec, RowsPerPartition
from ml.quality import Verdict, judge_days

if TYPE_CHECKING:
    import pandas as pd

ROWS_COLUMN = "rows"
FINITE = sys.float_info.max


def gx_type(dtype: str) -> str:
    """The name GX's type expectation knows a raw dtype by: a tz-aware timestamp column is of pandas' `Timestamp`
    type (the zone itself is `normalise`'s to set)."""
    return "Timestamp" if dtype.startswith("datetime64[ns, ") else dtype


def day_bounds(bounds: RowsPerPartition, day: str, zone: str) -> tuple[int, int]:
    """Rows a day may hold: the spec's bounds for a 24-hour day, moved by the hour a DST change takes or adds."""
    shift = hours_in_day(date.fromisoformat(day), zone) - 24
    return max(0, bounds.min + shift), bounds.max + shift


@dataclass
class ExpectationOutcome:
    """One expectation's verdict with what GX observed."""

    expectation: str
    column: str | None
    success: bool
    observed: Any
    unexpected_count: int | None
    error: str | None
    unexpected_rows: list[int] | None = None
    mostly: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "unexpected_rows"}


def row_expectations(spec: PipelineSpec) -> list[Any]:
    """Schema, types, not-null, ranges, allowed values and timestamp uniqueness (blocking)."""
    import great_expectations.expectations as gxe

    dtypes = raw_dtypes(spec)
    suite: list[Any] = [gxe.ExpectTableColumnsToMatchSet(column_set=list(dtypes), exact_match=True)]
    suite += [gxe.ExpectColumnValuesToBeOfType(column=column, type_=gx_type(dtype)) for column, dtype in dtypes.items()]
    suite.append(gxe.ExpectColumnValuesToNotBeNull(column=TIMESTAMP))
    # An entity column is never blank unless the spec says so, and a number is finite: a range not given is the
    # finite floats, so an `inf` fails its day like any value out of range.
    rules = {column: ColumnExpectation() for column in spec.source.entity_columns} | spec.expectations.columns
    rules |= {column: rules.get(column, ColumnExpectation(not_null=False)) for column in spec.number_columns}
    for column, rule in rules.items():
        mostly = rule.mostly
        if rule.not_null:
            suite.append(gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=mostly))
        if column in spec.number_columns:
            low, high = -FINITE if rule.min is None else rule.min, FINITE if rule.max is None else rule.max
            suite.append(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high, mostly=mostly))
        if rule.allowed_values is not None:
            suite.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=rule.allowed_values, mostly=mostly))
    if spec.expectations.unique_timestamp:
        keys = [TIMESTAMP, *spec.source.entity_columns]
        if len(keys) == 1:
            suite.append(gxe.ExpectColumnValuesToBeUnique(column=TIMESTAMP))
        else:
            suite.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=keys))
    return suite


def completeness_expectations(spec: PipelineSpec) -> list[Any]:
    """Rows per day (per entity) within the spec's bounds (a warning: real days can be partial)."""
    import great_expectations.expectations as gxe

    bounds = spec.expectations.rows_per_partition
    if bounds is None:
        return []
    return [gxe.ExpectColumnValuesToBeBetween(column=ROWS_COLUMN, min_value=bounds.min, max_value=bounds.max)]


def rows_per_day(frames: dict[str, pd.DataFrame], spec: PipelineSpec) -> pd.DataFrame:
    """One row per (day, series present that day) with its row count; a day without rows counts 0 (a series absent
    on a day is not counted: a series may start, pause or end). One grouping over all the days."""
    import numpy as np
    import pandas as pd

    entities = spec.source.entity_columns
    filled = {day: frame for day, frame in frames.items() if len(frame)}
    parts = []
    if filled:
        frame = pd.concat(filled.values(), ignore_index=True)
        keys = [pd.Series(np.repeat(list(filled), [len(f) for f in filled.values()]), name="day")]
        keys += [series.labels(frame, entities).rename("series")] if entities else []
        parts.append(frame.groupby(keys, sort=False).size().reset_index(name=ROWS_COLUMN))
    empty = [day for day in frames if day not in filled]
    if empty:
        parts.append(pd.DataFrame({"day": empty, ROWS_COLUMN: 0} | ({"series": None} if entities else {})))
    columns = ["day", *(["series"] if entities else []), ROWS_COLUMN]
    counts = pd.concat(parts, ignore_index=True)[columns]
    counts["day"] = pd.Categorical(counts["day"], categories=list(frames), ordered=True)  # the days' own order
    counts = counts.sort_values(columns[:-1], kind="stable").reset_index(drop=True)
    return counts.assign(day=counts["day"].astype("str"))


def validate(
    frame: pd.DataFrame, expectations: list[Any], name: str, *, with_rows: bool = False
) -> list[ExpectationOutcome]:
    """Run expectations on a frame with an ephemeral GX context; exceptions inside GX count as failures.
    With `with_rows`, a row-level expectation also names the positions of its unexpected rows."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        context.data_sources.add_pandas(f"{name}_source")
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    # GX stamps expectations with the suite's id: copies keep the caller's list reusable.
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=[copy.copy(e) for e in expectations]))
    result_format: Any = {"result_format": "COMPLETE", "partial_unexpected_count": 0} if with_rows else "SUMMARY"
    result = batch.validate(suite, result_format=result_format)
    outcomes = []
    for item in result.results:
        config = item.expectation_config
        assert config is not None, "GX returned a result without its expectation"
        details = item.result or {}
        error = None
        if item.exception_info and item.exception_info.get("raised_exception"):
            error = str(item.exception_info.get("exception_message"))
        outcomes.append(
            ExpectationOutcome(
                expectation=config.type,
                column=config.kwargs.get("column") or _joined(config.kwargs.get("column_list")),
                success=bool(item.success),
                observed=_jsonable(details.get("observed_value")),
                unexpected_count=details.get("unexpected_count"),
                error=error,
                unexpected_rows=details.get("unexpected_index_list") if with_rows else None,
                mostly=config.kwargs.get("mostly"),
            )
        )
    return outcomes


def _joined(columns: list[str] | None) -> str | None:
    return ",".join(columns) if columns else None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


EXAMPLE_ROWS = 3
# Series named in a reason; the verdict's metadata (`short_series`, `rejected_series`) has them all.
MAX_SERIES_IN_REASON = 10


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
    outcomes = validate(frame, row_expectations(spec), f"{spec.name}_raw", with_rows=True)
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
        metadata |= {"failed": failed} if failed else {}
        if not rejected or not spec.source.entity_columns:
            verdicts[day] = Verdict(not failed, _reason(failed), metadata)
        elif whole_day:
            listed = _first_series([f"{label}: {why}" for label, why in rejected.items()], "; ")
            reason = _reason(day_wide) if day_wide else f"{len(rejected)} of {len(labelled)} series fail ({listed})"
            verdicts[day] = Verdict(False, reason, metadata)
        else:
            kept = len(labelled) - len(rejected)
            listed = _first_series([f"{label}: {why}" for label, why in rejected.items()], "; ")
            reason = f"{len(rejected)} of {len(labelled)} series rejected ({listed}); the other {kept} kept"
            verdicts[day] = Verdict(True, reason, metadata, rejected_series=rejected)
    return judge_days(raw, lambda day, _: verdicts[day])


def _first_series(parts: list[str], separator: str) -> str:
    """A reason's per-series parts, the first `MAX_SERIES_IN_REASON` of them and how many more."""
    shown = parts[:MAX_SERIES_IN_REASON]
    more = len(parts) - len(shown)
    return separator.join(shown) + (f"{separator}and {more} more" if more else "")


def _reason(failed: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{f['expectation']} {f.get('column', '')}: {f.get('unexpected_count', 'all')} row(s)"
        + (f" ({f['passing_share']:.0%} pass, mostly={f['mostly']})" if {"mostly", "passing_share"} <= f.keys() else "")
        for f in failed
    )


def passing_share(day: pd.DataFrame, outcome: ExpectationOutcome, unexpected: int) -> float:
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
    by_day: dict[str, list[dict[Hashable, Any]]] = {}  # plain records, one pass: a pandas group per day costs more
    for record in rows_per_day(built, spec).to_dict("records") if built else []:
        by_day.setdefault(record["day"], []).append(record)

    entities = bool(spec.source.entity_columns)

    def judge(day: str, _: pd.DataFrame) -> Verdict:
        counts = by_day[day]
        metadata: dict[str, Any] = {"rows": sum(c["rows"] for c in counts)}
        metadata |= {"series": sum(1 for c in counts if c["rows"])} if entities else {}
        if bounds is None:
            return Verdict(True, metadata=metadata)
        low, high = day_bounds(bounds, day, spec.partitioning.timezone)
        short = {str(c.get("series")): c["rows"] for c in counts if not low <= c["rows"] <= high}
        reason = f"{len(short)} series outside {low}..{high} rows" if short else ""
        if short and not metadata["rows"]:
            reason = f"no rows (expected {low}..{high}): the source has no data for this day"
        elif short and entities:
            reason += f" ({_first_series([f'{label}: {rows}' for label, rows in short.items()], ', ')})"
            metadata["short_series"] = short
        hours = hours_in_day(date.fromisoformat(day), spec.partitioning.timezone)
        return Verdict(not short, reason, {"min_rows": low, "max_rows": high, "hours": hours} | metadata)

    return judge_days(raw, judge)


def judge_raw(frames: Mapping[str, Any], spec: PipelineSpec) -> dict[str, dict[str, Verdict]]:
    """Every raw check's verdict on each day (day -> check name -> verdict), the suite run once over all the days."""
    by_check = {
        PASSES_EXPECTATIONS: expectation_verdicts(frames, spec),
        COMPLETE_DAYS: completeness_verdicts(frames, spec),
    }
    return {day: {name: verdicts[day] for name, verdicts in by_check.items()} for day in frames}
