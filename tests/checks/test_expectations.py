"""Great Expectations suites from the spec, run for real on the UCI bike data and on broken copies of it."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import BIKE_CSV, BIKE_SPEC

from kernel.spec import PipelineSpec, load_spec
from ml import expectations as E
from ml import ingest

DAYS = [date(2012, 6, 1), date(2012, 6, 2), date(2012, 6, 3)]
SANDY = date(2012, 10, 29)  # one row in the source (Hurricane Sandy)

Failures = dict[tuple[str, str | None], Any]


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(BIKE_SPEC)


@pytest.fixture(scope="module")
def station_spec() -> PipelineSpec:
    document = yaml.safe_load(BIKE_SPEC.read_text())
    document["source"]["entity_columns"] = ["station"]
    return PipelineSpec.model_validate(document)


@pytest.fixture(scope="module")
def raw(spec: PipelineSpec) -> pd.DataFrame:
    return ingest.normalise(pd.read_csv(BIKE_CSV), spec).frame


@pytest.fixture(scope="module")
def days(raw: pd.DataFrame, spec: PipelineSpec) -> pd.DataFrame:
    """Three full real days (72 rows) in the raw schema."""
    frame = pd.concat(ingest.split_days(raw, DAYS, spec).values(), ignore_index=True)
    assert len(frame) == 72
    return frame


@pytest.fixture(scope="module")
def gx_loaded(spec: PipelineSpec) -> None:
    """Import Great Expectations once per module (slow); suites are then cheap to build."""
    E.row_expectations(spec)


# GX binds an expectation to the first suite it is validated in, so every test builds fresh suites
# (see test_a_suite_can_be_validated_twice).
@pytest.fixture
def row_suite(spec: PipelineSpec, gx_loaded: None) -> list[Any]:
    return E.row_expectations(spec)


@pytest.fixture
def station_suite(station_spec: PipelineSpec, gx_loaded: None) -> list[Any]:
    return E.row_expectations(station_spec)


@pytest.fixture
def completeness_suite(spec: PipelineSpec, gx_loaded: None) -> list[Any]:
    return E.completeness_expectations(spec)


def failures(outcomes: list[E.ExpectationOutcome]) -> Failures:
    """(expectation, column) -> unexpected_count (or observed value when GX reports no count)."""
    for outcome in outcomes:
        assert outcome.error is None, outcome
    return {
        (o.expectation, o.column): o.unexpected_count if o.unexpected_count is not None else o.observed
        for o in outcomes
        if not o.success
    }


def test_suite_covers_the_spec(row_suite: list[Any], spec: PipelineSpec) -> None:
    kinds = [type(expectation).__name__ for expectation in row_suite]
    assert kinds.count("ExpectTableColumnsToMatchSet") == 1
    assert kinds.count("ExpectColumnValuesToBeOfType") == 1 + len(spec.source_columns)
    rules = spec.expectations.columns.values()
    assert kinds.count("ExpectColumnValuesToBeBetween") == sum(r.min is not None or r.max is not None for r in rules)
    assert kinds.count("ExpectColumnValuesToBeInSet") == sum(r.allowed_values is not None for r in rules)
    assert kinds.count("ExpectColumnValuesToBeUnique") == 1
    assert kinds.count("ExpectColumnValuesToNotBeNull") == 1 + len(spec.expectations.columns)


def test_real_days_pass(days: pd.DataFrame, row_suite: list[Any]) -> None:
    outcomes = E.validate(days, row_suite, "real_days")
    assert len(outcomes) == len(row_suite)
    assert failures(outcomes) == {}
    assert all(o.success for o in outcomes)


def test_injected_nulls(days: pd.DataFrame, row_suite: list[Any]) -> None:
    broken = days.copy()
    broken.loc[[3, 40], "cnt"] = np.nan
    broken.loc[7, "weathersit"] = None
    assert failures(E.validate(broken, row_suite, "nulls")) == {
        ("expect_column_values_to_not_be_null", "cnt"): 2,
        ("expect_column_values_to_not_be_null", "weathersit"): 1,
    }


def test_null_timestamp(days: pd.DataFrame, row_suite: list[Any]) -> None:
    broken = days.copy()
    broken.loc[10, "timestamp"] = pd.NaT
    found = failures(E.validate(broken, row_suite, "null_timestamp"))
    assert found[("expect_column_values_to_not_be_null", "timestamp")] == 1


def test_out_of_range_and_unknown_category(days: pd.DataFrame, row_suite: list[Any]) -> None:
    broken = days.copy()
    broken.loc[1, "temp"] = 1.5
    broken.loc[2, "hum"] = -0.1
    broken.loc[[4, 5, 6], "cnt"] = 2500.0
    broken.loc[9, "weathersit"] = "5"
    assert failures(E.validate(broken, row_suite, "ranges")) == {
        ("expect_column_values_to_be_between", "temp"): 1,
        ("expect_column_values_to_be_between", "hum"): 1,
        ("expect_column_values_to_be_between", "cnt"): 3,
        ("expect_column_values_to_be_in_set", "weathersit"): 1,
    }


def test_wrong_dtype_columns(days: pd.DataFrame, row_suite: list[Any]) -> None:
    broken = days.copy()
    broken["holiday"] = broken["holiday"].astype("int64")
    broken["hum"] = broken["hum"].astype("object")
    found = failures(E.validate(broken, row_suite, "dtypes"))
    # An int64 column is judged on its dtype; an object column element by element.
    assert found == {
        ("expect_column_values_to_be_of_type", "holiday"): "int64",
        ("expect_column_values_to_be_of_type", "hum"): 72,
    }


def test_categorical_read_as_numbers(days: pd.DataFrame, row_suite: list[Any]) -> None:
    broken = days.copy()
    broken["weathersit"] = broken["weathersit"].astype("int64")
    found = failures(E.validate(broken, row_suite, "numeric_category"))
    assert found[("expect_column_values_to_be_of_type", "weathersit")] == "int64"
    assert found[("expect_column_values_to_be_in_set", "weathersit")] == 72


def test_extra_and_missing_columns(days: pd.DataFrame, row_suite: list[Any]) -> None:
    broken = days.drop(columns=["windspeed"]).assign(casual=1.0)
    outcomes = E.validate(broken, row_suite, "columns")
    (table,) = [o for o in outcomes if o.expectation == "expect_table_columns_to_match_set"]
    assert not table.success
    assert "casual" in table.observed
    assert "windspeed" not in table.observed


def test_duplicated_timestamp(days: pd.DataFrame, row_suite: list[Any]) -> None:
    broken = pd.concat([days, days.iloc[[5]]], ignore_index=True)
    assert failures(E.validate(broken, row_suite, "duplicate")) == {
        ("expect_column_values_to_be_unique", "timestamp"): 2,
    }


def two_stations(days: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for station in ["a", "b"]:
        frame = days.copy()
        frame.insert(1, "station", pd.Series([station] * len(frame), dtype="str"))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_entities_share_timestamps(days: pd.DataFrame, station_suite: list[Any]) -> None:
    kinds = [type(expectation).__name__ for expectation in station_suite]
    assert "ExpectCompoundColumnsToBeUnique" in kinds
    assert "ExpectColumnValuesToBeUnique" not in kinds
    assert failures(E.validate(two_stations(days), station_suite, "stations")) == {}


def test_duplicated_timestamp_and_entity(days: pd.DataFrame, station_suite: list[Any]) -> None:
    stations = two_stations(days)
    broken = pd.concat([stations, stations.iloc[[80]]], ignore_index=True)
    assert failures(E.validate(broken, station_suite, "station_duplicate")) == {
        ("expect_compound_columns_to_be_unique", "timestamp,station"): 2,
    }


def test_rows_per_day_counts_real_days(raw: pd.DataFrame, spec: PipelineSpec) -> None:
    frames = ingest.split_days(raw, [date(2012, 10, 28), SANDY, date(2012, 10, 30)], spec)
    frames["2013-01-01"] = ingest.empty_raw(spec)
    counts = E.rows_per_day(frames, spec)
    # From the dataset's documentation: 2012-10-29 has 1 hour, 2012-10-30 has 11.
    assert counts.to_dict(orient="records") == [
        {"day": "2012-10-28", "rows": 24},
        {"day": "2012-10-29", "rows": 1},
        {"day": "2012-10-30", "rows": 11},
        {"day": "2013-01-01", "rows": 0},
    ]


def test_completeness_flags_the_partial_day(
    raw: pd.DataFrame, spec: PipelineSpec, completeness_suite: list[Any]
) -> None:
    frames = ingest.split_days(raw, [SANDY], spec)
    (outcome,) = E.validate(E.rows_per_day(frames, spec), completeness_suite, "sandy")
    assert outcome.expectation == "expect_column_values_to_be_between"
    assert outcome.column == E.ROWS_COLUMN
    assert not outcome.success
    assert outcome.unexpected_count == 1


def test_completeness_passes_a_full_day(raw: pd.DataFrame, spec: PipelineSpec, completeness_suite: list[Any]) -> None:
    frames = ingest.split_days(raw, [date(2012, 10, 28)], spec)
    (outcome,) = E.validate(E.rows_per_day(frames, spec), completeness_suite, "full_day")
    assert outcome.success
    assert outcome.unexpected_count == 0


def test_completeness_counts_every_short_or_empty_day(
    raw: pd.DataFrame, spec: PipelineSpec, completeness_suite: list[Any]
) -> None:
    days = [date(2012, 10, 27), date(2012, 10, 28), SANDY, date(2012, 10, 30), date(2012, 10, 31)]
    frames = ingest.split_days(raw, days, spec) | {"2013-01-02": ingest.empty_raw(spec)}
    (outcome,) = E.validate(E.rows_per_day(frames, spec), completeness_suite, "week")
    assert not outcome.success
    assert outcome.unexpected_count == 3  # 2012-10-29 (1), 2012-10-30 (11), 2013-01-02 (0)


def test_rows_per_day_per_entity(days: pd.DataFrame, station_spec: PipelineSpec) -> None:
    stations = two_stations(days)
    first = stations.loc[stations["timestamp"].dt.date == DAYS[0]].reset_index(drop=True)
    first = first.loc[~((first["station"] == "b") & (first["timestamp"].dt.hour < 4))]
    counts = E.rows_per_day({"2012-06-01": first, "2012-06-02": ingest.empty_raw(station_spec)}, station_spec)
    assert counts["day"].tolist() == ["2012-06-01", "2012-06-01", "2012-06-02"]
    assert counts["series"].iloc[:2].tolist() == ["a", "b"]
    assert pd.isna(counts["series"].iloc[2])
    assert counts[E.ROWS_COLUMN].tolist() == [24, 20, 0]


def thirty_stations(day: pd.DataFrame) -> list[pd.DataFrame]:
    """The day's rows as stations s00..s29, one frame each."""
    return [day.assign(station=pd.Series([f"s{index:02d}"] * len(day), dtype="str")) for index in range(30)]


def test_many_rejected_series_are_all_kept_in_the_verdict_and_ten_named_in_its_reason(
    days: pd.DataFrame, station_spec: PipelineSpec, gx_loaded: None
) -> None:
    first = days.loc[days["timestamp"].dt.date == DAYS[0]].reset_index(drop=True)
    stations = thirty_stations(first)
    for station in stations[:12]:
        station.loc[0, "cnt"] = -1.0
    (verdict,) = E.expectation_verdicts({"2012-06-01": pd.concat(stations, ignore_index=True)}, station_spec).values()
    why = "expect_column_values_to_be_between cnt: 1 row(s)"
    assert verdict.passed and verdict.rejected_series == {f"s{index:02d}": why for index in range(12)}
    listed = "; ".join(f"s{index:02d}: {why}" for index in range(10))
    assert verdict.reason == f"12 of 30 series rejected ({listed}; and 2 more); the other 18 kept"


def test_completeness_of_many_series_names_the_short_ones_and_stays_small(
    days: pd.DataFrame, station_spec: PipelineSpec
) -> None:
    """Thirty stations, fourteen of them short one day: the verdict lists the fourteen in `short_series`, names the
    first ten in its reason, and counts the rest; the stations that are complete are counted, not listed."""
    first = days.loc[days["timestamp"].dt.date == DAYS[0]].reset_index(drop=True)
    stations = [station.iloc[: 20 if index % 2 else 24] for index, station in enumerate(thirty_stations(first))]
    stations[29] = stations[29].iloc[:0]  # s29 has not opened yet
    verdicts = E.completeness_verdicts(
        {"2012-06-01": pd.concat(stations, ignore_index=True), "2012-06-02": ingest.empty_raw(station_spec)},
        station_spec,
    )
    short = {f"s{index:02d}": 20 for index in range(1, 29, 2)}
    day = verdicts["2012-06-01"]
    assert not day.passed
    assert day.metadata["short_series"] == short
    assert (day.metadata["rows"], day.metadata["series"]) == (15 * 24 + 14 * 20, 29)
    listed = ", ".join(f"{label}: 20" for label in list(short)[:10])
    assert day.reason == f"14 series outside 22..24 rows ({listed}, and 4 more)"
    empty = verdicts["2012-06-02"]
    assert (empty.passed, empty.metadata["rows"], empty.metadata["series"]) == (False, 0, 0)
    assert empty.reason == "no rows (expected 22..24): the source has no data for this day"
    assert "short_series" not in empty.metadata


def test_a_suite_can_be_validated_twice(days: pd.DataFrame, row_suite: list[Any]) -> None:
    assert failures(E.validate(days, row_suite, "first")) == {}
    broken = days.copy()
    broken.loc[0, "cnt"] = -1.0
    assert failures(E.validate(broken, row_suite, "second")) == {("expect_column_values_to_be_between", "cnt"): 1}


def test_no_completeness_bounds_gives_no_expectations() -> None:
    document = yaml.safe_load(BIKE_SPEC.read_text())
    del document["expectations"]["rows_per_partition"]
    assert E.completeness_expectations(PipelineSpec.model_validate(document)) == []


def test_outcome_as_dict_drops_empty_fields() -> None:
    outcome = E.ExpectationOutcome("expect_x", None, True, None, 0, None)
    assert outcome.as_dict() == {"expectation": "expect_x", "success": True, "unexpected_count": 0}
