"""Great Expectations suites built from a pipeline spec, run on pandas frames (GX imported on use)."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from kernel import series
from kernel.days import hours_in_day
from kernel.schema import TIMESTAMP, raw_dtypes
from kernel.spec import ColumnExpectation, PipelineSpec, RowsPerPartition

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
