"""Feature rows: lags on a true hourly grid, rolling stats ending at the smallest lag, entities kept apart."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import AIR_CSV, AIR_SPEC, BIKE_CSV, BIKE_SPEC

from kernel.spec import PipelineSpec, load_spec
from ml import features as F
from ml import ingest

DAY = date(2024, 1, 4)
HOUR = pd.Timedelta(hours=1)


def nulls(values: Any) -> int:
    """Missing values in a column."""
    return int(np.count_nonzero(values.isna().to_numpy()))


def synthetic_spec(
    lags: list[int] | None = None,
    rolling: list[dict[str, Any]] | None = None,
    entities: list[str] | None = None,
    events: list[dict[str, Any]] | None = None,
) -> PipelineSpec:
    lags = lags or [24, 48]
    return PipelineSpec.model_validate(
        {
            "name": "synthetic",
            "description": "hourly test series",
            "source": {
                "uri": "unused/*.csv",
                "timestamp": {"column": "ts", "format": "%Y-%m-%d %H:%M"},
                "entity_columns": entities or [],
            },
            "target": "y",
            "features": {
                "numeric": ["x"],
                "categorical": ["c"],
                "calendar": ["hour", "day_of_week", "month", "day_of_year"],
                "target_lags_hours": lags,
                "rolling": rolling
                if rolling is not None
                else [{"window_hours": 24, "stat": "mean"}, {"window_hours": 6, "stat": "max"}],
                "events": events or [],
            },
            "partitioning": {"start_date": "2024-01-01"},
            "training": {"window_days": 10, "candidates": [{"family": "ridge"}]},
            "evaluation": {"holdout_days": 2, "baseline_season_hours": lags[0]},
            "promotion": {"min_improvement_over_baseline": 0.05, "max_regression_vs_champion": 0.1},
            "freshness": {stage: {"warn": "26h", "fail": "50h"} for stage in ("features", "model", "predictions")},
        }
    )


def hourly(start: str, days: int, offset: float = 1000.0, entity: str | None = None) -> pd.DataFrame:
    """A raw-schema frame whose target is unique per hour (so a value from the wrong hour is detectable)."""
    timestamps = pd.date_range(start, periods=24 * days, freq="h").astype("datetime64[ns]")
    frame = pd.DataFrame({"timestamp": timestamps})
    if entity is not None:
        frame["station"] = pd.Series([entity] * len(frame), dtype="str")
    frame["y"] = offset + np.arange(len(frame), dtype="float64") * 1.5
    frame["x"] = np.linspace(0, 1, len(frame))
    frame["c"] = pd.Series(np.where(np.arange(len(frame)) % 2 == 0, "even", "odd"), dtype="str")
    return frame


def lookup(frame: pd.DataFrame, target: str = "y") -> dict[Any, float]:
    """Timestamp -> target value."""
    return dict(zip(frame["timestamp"], frame[target], strict=True))


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict(orient="records")]


def where(frame: pd.DataFrame, mask: Any) -> pd.DataFrame:
    """Rows where mask holds (typed as a frame)."""
    rows = frame[mask]
    assert isinstance(rows, pd.DataFrame)
    return rows


def test_lags_equal_the_value_that_many_hours_earlier() -> None:
    spec = synthetic_spec()
    raw = hourly("2024-01-01", 5)
    result = F.build_features(raw, DAY, spec)
    values = lookup(raw)
    assert result.dropped_rows == 0
    assert len(result.frame) == 24
    for row in records(result.frame):
        assert row["lag_24h"] == values[row["timestamp"] - 24 * HOUR]
        assert row["lag_48h"] == values[row["timestamp"] - 48 * HOUR]
        assert row["y"] == values[row["timestamp"]]


def test_gap_in_source_gives_missing_lags_and_dropped_rows() -> None:
    spec = synthetic_spec()
    full = hourly("2024-01-01", 5)
    gap = pd.date_range("2024-01-03 05:00", "2024-01-03 07:00", freq="h")
    raw = where(full, ~full["timestamp"].isin(list(gap))).reset_index(drop=True)
    result = F.build_features(raw, DAY, spec)

    # Hours 05-07 of DAY have no value 24 h earlier: dropped, not filled from the neighbouring row.
    assert result.dropped_rows == 3
    assert len(result.frame) == 21
    kept = set(result.frame["timestamp"])
    assert kept.isdisjoint(set(gap + pd.Timedelta(days=1)))
    values = lookup(raw)
    for row in records(result.frame):
        assert row["lag_24h"] == values[row["timestamp"] - 24 * HOUR]
    # A naive row shift would have used the value of a different hour for 08:00.
    by_time = {row["timestamp"]: row for row in records(result.frame)}
    assert by_time[pd.Timestamp("2024-01-04 08:00")]["lag_24h"] == values[pd.Timestamp("2024-01-03 08:00")]


def test_missing_rows_on_the_day_itself_are_not_counted_as_dropped() -> None:
    spec = synthetic_spec()
    full = hourly("2024-01-01", 5)
    raw = where(full, full["timestamp"] != pd.Timestamp("2024-01-04 10:00"))
    result = F.build_features(raw, DAY, spec)
    assert result.dropped_rows == 0
    assert len(result.frame) == 23


def test_not_enough_history_drops_every_row() -> None:
    spec = synthetic_spec()
    raw = hourly("2024-01-03", 2)  # only 24 h before DAY; lag_48h needs 48 h
    result = F.build_features(raw, DAY, spec)
    assert result.dropped_rows == 24
    assert result.frame.empty
    assert list(result.frame.columns) == list(F.feature_schema(spec))


def test_rolling_stats_end_at_the_smallest_lag() -> None:
    spec = synthetic_spec()
    raw = hourly("2024-01-01", 5)
    values = lookup(raw)
    result = F.build_features(raw, DAY, spec)
    for row in records(result.frame):
        ts = row["timestamp"]
        last_day = [values[ts - k * HOUR] for k in range(24, 48)]
        last_six = [values[ts - k * HOUR] for k in range(24, 30)]
        assert row["rolling_mean_24h"] == pytest.approx(np.mean(last_day))
        assert row["rolling_max_6h"] == max(last_six)


def test_rolling_window_follows_a_larger_smallest_lag() -> None:
    spec = synthetic_spec(lags=[48, 72], rolling=[{"window_hours": 24, "stat": "min"}])
    assert spec.features.min_lag_hours == 48
    raw = hourly("2024-01-01", 5)
    values = lookup(raw)
    result = F.build_features(raw, DAY, spec)
    assert len(result.frame) == 24
    for row in records(result.frame):
        ts = row["timestamp"]
        assert row["rolling_min_24h"] == min(values[ts - k * HOUR] for k in range(48, 72))


def test_rolling_tolerates_up_to_half_the_window_missing() -> None:
    spec = synthetic_spec(rolling=[{"window_hours": 24, "stat": "mean"}])
    full = hourly("2024-01-01", 5)
    midnight = pd.Timestamp("2024-01-04 00:00")
    # The 24 h window of DAY 00:00 is 01-02 01:00 .. 01-03 00:00; remove 12 of them but keep lag hours.
    removed = [midnight - k * HOUR for k in range(25, 37)]
    raw = where(full, ~full["timestamp"].isin(removed))
    result = F.build_features(raw, DAY, spec).frame.set_index("timestamp")
    remaining = [lookup(full)[midnight - k * HOUR] for k in range(24, 48) if midnight - k * HOUR not in removed]
    assert len(remaining) == 12
    assert result.loc[midnight, "rolling_mean_24h"] == pytest.approx(np.mean(remaining))


def test_entities_keep_series_apart() -> None:
    spec = synthetic_spec(entities=["station"])
    a = hourly("2024-01-01", 5, offset=1000.0, entity="a")
    b = hourly("2024-01-01", 5, offset=-5000.0, entity="b")
    raw = pd.concat([b, a], ignore_index=True).sort_values("timestamp", kind="stable").reset_index(drop=True)
    result = F.build_features(raw, DAY, spec)
    frame = result.frame

    assert result.dropped_rows == 0
    assert frame["station"].tolist() == ["a"] * 24 + ["b"] * 24
    assert frame["station"].dtype == "str"
    assert bool(frame.groupby("station")["timestamp"].is_monotonic_increasing.all())
    for station, source in [("a", a), ("b", b)]:
        values = lookup(source)
        rows = where(frame, frame["station"] == station)
        for row in records(rows):
            assert row["lag_24h"] == values[row["timestamp"] - 24 * HOUR]
            assert row["rolling_max_6h"] == max(values[row["timestamp"] - k * HOUR] for k in range(24, 30))


def test_entity_gap_only_affects_that_entity() -> None:
    spec = synthetic_spec(entities=["station"])
    a = hourly("2024-01-01", 5, entity="a")
    b = hourly("2024-01-01", 5, offset=0.0, entity="b")
    b = where(b, b["timestamp"] != pd.Timestamp("2024-01-03 12:00"))
    result = F.build_features(pd.concat([a, b], ignore_index=True), DAY, spec)
    assert result.dropped_rows == 1
    assert result.frame["station"].tolist().count("a") == 24
    assert result.frame["station"].tolist().count("b") == 23


def test_calendar_parts() -> None:
    spec = synthetic_spec()
    leap_day = date(2024, 2, 29)  # a Thursday, day 60 of the year
    raw = hourly("2024-02-26", 4)
    frame = F.build_features(raw, leap_day, spec).frame
    assert frame["hour"].tolist() == [float(h) for h in range(24)]
    assert set(frame["day_of_week"]) == {3.0}
    assert set(frame["month"]) == {2.0}
    assert set(frame["day_of_year"]) == {60.0}


def test_output_dtypes_equal_the_feature_schema() -> None:
    spec = synthetic_spec(entities=["station"])
    raw = hourly("2024-01-01", 5, entity="a")
    frame = F.build_features(raw, DAY, spec).frame
    schema = F.feature_schema(spec)
    assert list(frame.columns) == list(schema)
    assert {column: str(dtype) for column, dtype in frame.dtypes.items()} == schema
    assert schema["timestamp"] == "datetime64[ns]"
    assert schema["station"] == schema["c"] == "str"
    assert schema["lag_24h"] == schema["hour"] == schema["y"] == "float64"
    assert F.feature_columns(spec) == [
        "x",
        "hour",
        "day_of_week",
        "month",
        "day_of_year",
        "lag_24h",
        "lag_48h",
        "rolling_mean_24h",
        "rolling_max_6h",
        "c",
    ]


def test_day_without_rows_gives_an_empty_frame_with_the_schema() -> None:
    spec = synthetic_spec()
    result = F.build_features(hourly("2024-01-01", 3), DAY, spec)
    assert result.dropped_rows == 0
    assert result.frame.empty
    assert {column: str(dtype) for column, dtype in result.frame.dtypes.items()} == F.feature_schema(spec)


def test_missing_numeric_input_keeps_the_row() -> None:
    spec = synthetic_spec()
    raw = hourly("2024-01-01", 5)
    raw.loc[raw["timestamp"] == pd.Timestamp("2024-01-04 03:00"), "x"] = np.nan
    result = F.build_features(raw, DAY, spec)
    assert result.dropped_rows == 0
    assert nulls(result.frame["x"]) == 1


def test_non_finite_counts() -> None:
    spec = synthetic_spec()
    frame = F.build_features(hourly("2024-01-01", 5), DAY, spec).frame
    frame.loc[[1, 2], "x"] = np.nan
    frame.loc[5, "lag_24h"] = np.inf
    frame.loc[6, "rolling_max_6h"] = -np.inf
    counts = F.non_finite_counts(frame, spec)
    assert set(counts) == set(F.numeric_feature_columns(spec))
    assert counts["x"] == 2
    assert counts["lag_24h"] == 1
    assert counts["rolling_max_6h"] == 1
    assert sum(counts.values()) == 4


def test_population_stability() -> None:
    rng = np.random.default_rng(7)
    reference = pd.Series(rng.normal(0, 1, 5000))
    same = pd.Series(rng.normal(0, 1, 5000))
    shifted = pd.Series(rng.normal(1, 1, 5000))
    assert F.population_stability(reference, same) < 0.02
    assert F.population_stability(reference, shifted) > 0.5
    assert F.population_stability(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(F.population_stability(reference, pd.Series([np.nan, np.nan])))
    assert F.population_stability(pd.Series([3.0] * 10), pd.Series([3.0] * 4)) == 0.0
    assert F.population_stability(pd.Series([3.0] * 10), pd.Series([3.0, 4.0])) == float("inf")


def test_population_stability_of_a_reference_binned_once() -> None:
    rng = np.random.default_rng(11)
    references = [pd.Series(rng.normal(0, 1, 2000)), pd.Series([3.0] * 10), pd.Series([np.nan])]
    days = [pd.Series(rng.normal(0.3, 1.2, 24)), pd.Series([3.0] * 4), pd.Series([3.0, 4.0]), pd.Series([np.nan])]
    for reference in references:
        binned = F.reference_bins(reference)
        for day in days:
            expected, got = F.population_stability(reference, day), F.population_stability(binned, day)
            assert got == expected or (np.isnan(got) and np.isnan(expected))
    edges = F.reference_bins(references[0]).edges
    for day in [*days[:1], pd.Series([-np.inf, np.inf, *edges[1:-1], 0.0])]:
        binned = F.reference_bins(references[0])
        counts = np.histogram(day.dropna().to_numpy(), edges)[0]
        shares = np.clip(counts / day.notna().sum(), 1e-4, None)
        expected = float(np.sum((shares - binned.shares) * np.log(shares / binned.shares)))
        assert F.population_stability(binned, day) == pytest.approx(expected, rel=1e-12)


@pytest.fixture(scope="module")
def bike() -> tuple[PipelineSpec, pd.DataFrame]:
    spec = load_spec(BIKE_SPEC)
    return spec, ingest.normalise(pd.read_csv(BIKE_CSV), spec).frame


def test_real_bike_day_with_full_history(bike: tuple[PipelineSpec, pd.DataFrame]) -> None:
    spec, raw = bike
    day = date(2012, 6, 15)
    window = where(raw, (raw["timestamp"] >= pd.Timestamp(day - timedelta(days=9))) & (raw["timestamp"].dt.date <= day))
    result = F.build_features(window, day, spec)
    assert result.dropped_rows == 0
    assert len(result.frame) == 24
    assert {column: str(dtype) for column, dtype in result.frame.dtypes.items()} == F.feature_schema(spec)
    values = lookup(raw, target="cnt")
    for row in records(result.frame):
        assert row["lag_168h"] == values[row["timestamp"] - 168 * HOUR]


def test_real_bike_day_after_hurricane_sandy_drops_rows_without_history(
    bike: tuple[PipelineSpec, pd.DataFrame],
) -> None:
    spec, raw = bike
    day = date(2012, 10, 31)
    window = where(raw, (raw["timestamp"] >= pd.Timestamp(day - timedelta(days=9))) & (raw["timestamp"].dt.date <= day))
    present = set(raw["timestamp"])
    rows = where(raw, raw["timestamp"].dt.date == day)["timestamp"].tolist()

    def complete(ts: pd.Timestamp) -> bool:
        lags_ok = all(ts - h * HOUR in present for h in spec.features.target_lags_hours)
        rolling_ok = all(
            sum(ts - k * HOUR in present for k in range(24, 24 + r.window_hours)) >= r.window_hours // 2
            for r in spec.features.rolling
        )
        return lags_ok and rolling_ok

    expected_kept = [ts for ts in rows if complete(ts)]
    result = F.build_features(window, day, spec)
    assert result.dropped_rows == len(rows) - len(expected_kept)
    assert result.dropped_rows > 0
    assert result.frame["timestamp"].tolist() == expected_kept


# Real-data options: events spread over their day, hours with no target, hours that arrive twice.


def with_marks(frame: pd.DataFrame, column: str, hours: list[str]) -> pd.DataFrame:
    """A sparse event column: 1 on the given hours, missing everywhere else (as a source writes it)."""
    out = frame.copy()
    out[column] = np.where(out["timestamp"].isin(pd.to_datetime(hours)), 1.0, np.nan)
    return out


def test_event_marks_every_hour_of_its_day_and_its_lags() -> None:
    spec = synthetic_spec(events=[{"column": "holiday", "lagged": True}, {"column": "promo"}])
    raw = with_marks(hourly("2024-01-01", 5), "holiday", ["2024-01-02 15:00", "2024-01-04 13:00"])
    raw = with_marks(raw, "promo", ["2024-01-03 02:00"])
    result = F.build_features(raw, DAY, spec)
    frame = result.frame
    assert len(frame) == 24
    assert F.event_columns(spec) == ["holiday", "promo", "holiday_lag_24h", "holiday_lag_48h"]
    assert {column: str(dtype) for column, dtype in frame.dtypes.items()} == F.feature_schema(spec)
    # Marked on 13:00 of DAY, so "holiday today" holds from midnight on; the 15:00 mark two days earlier is
    # "holiday two days ago" for every hour, and yesterday had none.
    assert frame["holiday"].tolist() == [1.0] * 24
    assert frame["holiday_lag_24h"].tolist() == [0.0] * 24
    assert frame["holiday_lag_48h"].tolist() == [1.0] * 24
    # An event that is not lagged is only "today": yesterday's promo leaves today at 0.
    assert frame["promo"].tolist() == [0.0] * 24
    assert "promo_lag_24h" not in frame.columns


def test_a_day_without_an_event_mark_is_zero_on_every_hour() -> None:
    spec = synthetic_spec(events=[{"column": "holiday", "lagged": True}])
    raw = with_marks(hourly("2024-01-01", 5), "holiday", ["2024-01-01 08:00"])
    frame = F.build_features(raw, DAY, spec).frame
    assert set(frame["holiday"]) == set(frame["holiday_lag_24h"]) == set(frame["holiday_lag_48h"]) == {0.0}
    assert F.non_finite_counts(frame, spec) == dict.fromkeys(F.numeric_feature_columns(spec), 0)


def test_hour_with_no_target_is_kept_and_the_rows_lagging_it_are_dropped() -> None:
    spec = synthetic_spec(rolling=[])
    raw = hourly("2024-01-01", 5)
    raw.loc[raw["timestamp"] == pd.Timestamp("2024-01-03 09:00"), "y"] = np.nan
    raw.loc[raw["timestamp"] == pd.Timestamp("2024-01-04 20:00"), "y"] = np.nan
    result = F.build_features(raw, DAY, spec)
    # DAY's own 20:00 has no target: a feature row all the same (it can be forecast, not learnt or scored).
    by_time = {row["timestamp"]: row for row in records(result.frame)}
    assert np.isnan(by_time[pd.Timestamp("2024-01-04 20:00")]["y"])
    # 09:00 of DAY would need yesterday's empty 09:00 as its 24 h lag: dropped and counted, not filled.
    assert pd.Timestamp("2024-01-04 09:00") not in by_time
    assert result.dropped_rows == 1
    assert len(result.frame) == 23


def test_an_hour_that_arrives_twice_is_one_feature_row() -> None:
    spec = synthetic_spec()
    raw = hourly("2024-01-01", 5)
    twice = where(raw, raw["timestamp"].isin([pd.Timestamp("2024-01-04 06:00"), pd.Timestamp("2024-01-04 07:00")]))
    later = twice.assign(y=twice["y"] + 0.25)
    result = F.build_features(pd.concat([raw, later], ignore_index=True), DAY, spec)
    assert len(result.frame) == 24
    assert result.frame["timestamp"].is_unique
    assert result.duplicate_rows == 2
    by_time = {row["timestamp"]: row["y"] for row in records(result.frame)}
    assert by_time[pd.Timestamp("2024-01-04 06:00")] == lookup(raw)[pd.Timestamp("2024-01-04 06:00")] + 0.25


def test_real_air_day_with_scattered_empty_hours() -> None:
    """2010-02-14 has one empty PM2.5 hour: it stays a row without a target, and the hours of the next two days
    that would lag it are the only ones dropped."""
    spec = load_spec(AIR_SPEC)
    raw = ingest.normalise(pd.read_csv(AIR_CSV, nrows=24 * 60), spec).frame
    empty = raw.loc[(raw["timestamp"].dt.date == date(2010, 2, 14)) & raw["pm2.5"].isna(), "timestamp"].tolist()
    assert len(empty) == 1
    lookback = timedelta(hours=spec.features.lookback_hours)
    for day, offset in [(date(2010, 2, 14), 0), (date(2010, 2, 15), 24), (date(2010, 2, 16), 48)]:
        window = where(raw, (raw["timestamp"] >= pd.Timestamp(day) - lookback) & (raw["timestamp"].dt.date <= day))
        result = F.build_features(window, day, spec)
        assert result.dropped_rows == (1 if offset else 0)
        assert len(result.frame) == (24 if not offset else 23)
        assert nulls(result.frame["pm2.5"]) == (1 if not offset else 0)
        if offset:
            assert empty[0] + pd.Timedelta(hours=offset) not in set(result.frame["timestamp"])
