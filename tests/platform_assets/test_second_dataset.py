"""A second dataset, different in every way that matters, works by writing a spec only.

Generated here: three stations sharing timestamps (so timestamps repeat), string and categorical
columns, a day-first timestamp format and a three-month hole in the middle; and the mess of real files,
each handled by a spec option: hours delivered twice (`duplicates: mean`), a few empty target hours
(`mostly`), and a market day marked on one hour only (an event column).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from conftest import PipelineFactory
from support import check_days, run_range

from kernel.names import CHAMPION
from kernel.records import Rejected
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

NAME = "station_rides"
STATIONS = ["north", "south", "river"]
GAP = ("2021-03-01", "2021-05-31")
TWICE = ["2021-06-20 07:00", "2021-06-20 08:00", "2021-06-20 09:00"]  # north's hours sent again, counted anew
EMPTY = ["2021-06-25 03:00", "2021-06-25 04:00"]  # north's target not measured
MARKET = "2021-06-26 11:00"  # the one hour the market-day flag is set on


def generate(path: Path) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    hours = pd.date_range("2021-01-01", "2021-07-31 23:00", freq="h")
    hours = hours[(hours < pd.Timestamp(GAP[0])) | (hours > pd.Timestamp(f"{GAP[1]} 23:59"))]
    days = pd.Index(hours.normalize().unique())
    weather_by_day = pd.Series(rng.choice(["sun", "rain", "snow"], size=len(days), p=[0.6, 0.3, 0.1]), index=days)
    rows = []
    for level, station in zip((60, 35, 20), STATIONS, strict=True):
        weather = weather_by_day.reindex(hours.normalize()).to_numpy()
        temp = 10 + 8 * np.sin(2 * np.pi * hours.day_of_year.to_numpy() / 365) + rng.normal(0, 2, len(hours))
        profile = 1 + np.clip(np.sin(np.pi * (hours.hour.to_numpy() - 6) / 12), 0, None)
        factor = np.select([weather == "rain", weather == "snow"], [0.5, 0.2], 1.0)
        rides = np.round(level * profile * factor + 0.8 * temp + rng.normal(0, 3, len(hours))).clip(0)
        rows.append(
            pd.DataFrame(
                {
                    "ts": hours.strftime("%d.%m.%Y %H:%M"),
                    "station": station,
                    "weather": weather,
                    "temp_c": temp.round(1),
                    "rides": rides.astype(int),
                }
            )
        )
    frame = pd.concat(rows)
    frame["market"] = np.where(frame["ts"] == pd.Timestamp(MARKET).strftime("%d.%m.%Y %H:%M"), 1, np.nan)
    north = frame["station"] == "north"
    stamps = {h: pd.Timestamp(h).strftime("%d.%m.%Y %H:%M") for h in [*TWICE, *EMPTY]}
    again = frame[north & frame["ts"].isin([stamps[h] for h in TWICE])].assign(rides=lambda f: f["rides"] + 10)
    frame["rides"] = frame["rides"].astype("float64").mask(north & frame["ts"].isin([stamps[h] for h in EMPTY]))
    frame = pd.concat([frame, again]).sample(frac=1.0, random_state=1)  # files are rarely sorted
    frame.to_csv(path, index=False)
    return frame


def spec(source: Path) -> dict[str, object]:
    return {
        "name": NAME,
        "description": "Rides per station per hour (generated test data).",
        "owners": ["team:ml-platform"],
        "source": {
            "uri": str(source.parent / "*.csv"),
            "timestamp": {"column": "ts", "format": "%d.%m.%Y %H:%M"},
            "entity_columns": ["station"],
            "duplicates": "mean",
        },
        "target": "rides",
        "features": {
            "numeric": ["temp_c"],
            "categorical": ["weather"],
            "calendar": ["hour", "day_of_week"],
            "target_lags_hours": [24, 168],
            "rolling": [{"window_hours": 24, "stat": "mean"}],
            "events": [{"column": "market", "lagged": True}],
        },
        "partitioning": {"start_date": "2021-01-01", "end_date": "2021-08-01"},
        "training": {
            "window_days": 28,
            "candidates": [{"family": "hist_gradient_boosting", "params": {"max_iter": 60}}],
        },
        "evaluation": {"holdout_days": 7, "baseline_season_hours": 168},
        "promotion": {"min_improvement_over_baseline": 0.05, "max_regression_vs_champion": 0.1},
        "expectations": {
            "columns": {
                "rides": {"min": 0, "max": 1000, "mostly": 0.9},
                "weather": {"allowed_values": ["sun", "rain", "snow"]},
                "station": {"allowed_values": STATIONS},
            },
            "rows_per_partition": {"min": 24, "max": 24},
        },
        "freshness": {
            "features": {"warn": "26h", "fail": "50h"},
            "model": {"warn": "26h", "fail": "50h"},
            "predictions": {"warn": "26h", "fail": "50h"},
        },
    }


@pytest.fixture
def defs(make_defs: PipelineFactory, tmp_path: Path) -> dg.Definitions:
    landing = tmp_path / "landing"
    landing.mkdir()
    generate(landing / "rides.csv")
    return make_defs(spec(landing / "rides.csv"))


def test_a_spec_alone_brings_a_differently_shaped_dataset_through_the_graph(
    defs: dg.Definitions, ray_address: str
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    resources = defs.resources or {}
    store, tracking = resources["io_manager"], resources["mlflow"]
    assert isinstance(store, PartitionedParquetIOManager)
    assert isinstance(tracking, MlflowTracking)

    ingest = run_range(defs, ["raw", "features"], NAME, ("2021-05-20", "2021-07-10"), instance)
    assert ingest.success
    checks = check_days(ingest)
    hole = set(pd.date_range("2021-05-20", GAP[1]).strftime("%Y-%m-%d"))  # the run's days inside the gap
    expectations = checks["passes_expectations"]
    assert {d for d, v in expectations.items() if not v.passed} == hole, "a day without rows cannot be judged"
    assert all(v.description and "no rows" in v.description for d, v in expectations.items() if d in hole)
    incomplete = {d for d, v in checks["complete_days"].items() if not v.passed}
    assert incomplete == hole, "the hole in the data is reported"
    assert {v.severity for v in checks["complete_days"].values()} == {dg.AssetCheckSeverity.WARN}

    # Hours sent twice are averaged into one row, counted in the run's total and on their own day's materialisation.
    raw_events = {
        m.materialization.partition: m.materialization.metadata
        for m in ingest.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey([NAME, "raw"])
    }
    totals = [m["duplicate_rows_collapsed"].value for m in raw_events.values()]
    assert totals == [len(TWICE)] * len(raw_events), "the run's total"
    this_day = "duplicate_rows_collapsed_this_day"
    on_the_day = {day: m[this_day].value for day, m in raw_events.items() if this_day in m}
    assert on_the_day == {"2021-06-20": len(TWICE)}, "counted on its own day's event alone"
    assert raw_events["2021-06-20"]["rows_this_day"].value == 24 * len(STATIONS)
    twice = store.read(dg.AssetKey([NAME, "raw"]), "2021-06-20")
    assert len(twice) == 24 * len(STATIONS)
    assert expectations["2021-06-20"].passed
    # Two empty target hours of 72 pass `mostly: 0.9`; the day's hours without a target stay, as missing.
    assert expectations["2021-06-25"].passed
    assert store.read(dg.AssetKey([NAME, "raw"]), "2021-06-25")["rides"].isna().sum() == len(EMPTY)

    raw = store.read(dg.AssetKey([NAME, "raw"]), "2021-06-15")
    assert len(raw) == 24 * len(STATIONS)
    assert raw["timestamp"].duplicated().sum() == 24 * (len(STATIONS) - 1), "timestamps repeat across stations"
    assert str(raw["weather"].dtype) == "str"

    features = store.read(dg.AssetKey([NAME, "features"]), "2021-06-15")
    assert sorted(features["station"].unique()) == sorted(STATIONS)
    north = features[features["station"] == "north"].set_index("timestamp")
    north_raw = store.read(dg.AssetKey([NAME, "raw"]), "2021-06-14")
    north_raw = north_raw[north_raw["station"] == "north"].set_index("timestamp")["rides"]
    expected = north_raw.reindex(north.index - pd.Timedelta(hours=24)).to_numpy()
    np.testing.assert_array_equal(north["lag_24h"].to_numpy(), expected)
    # The market flag set on one hour marks its whole day, and the next day sees it as "a day ago".
    market = store.read(dg.AssetKey([NAME, "features"]), "2021-06-26")
    assert set(market["market"]) == {1.0}
    # North's hours a day after its empty ones have no 24 h lag: dropped (and counted), not filled.
    assert len(market) == 24 * len(STATIONS) - len(EMPTY)
    day_after = store.read(dg.AssetKey([NAME, "features"]), "2021-06-27")
    assert (set(day_after["market"]), set(day_after["market_lag_24h"])) == ({0.0}, {1.0})

    # Features need their whole 7-day look-back (lag 168 h): the gap's last day rejects them up to 2021-06-07.
    assert isinstance(store.read(dg.AssetKey([NAME, "features"]), "2021-06-08"), pd.DataFrame)
    rejected_features = store.read(dg.AssetKey([NAME, "features"]), "2021-06-07")
    assert isinstance(rejected_features, Rejected) and "2021-05-31" in rejected_features.reason
    too_close = run_range(defs, ["model"], NAME, ("2021-06-20", "2021-06-20"), instance)
    assert too_close.success
    refused = store.read(dg.AssetKey([NAME, "model"]), "2021-06-20")
    assert isinstance(refused, Rejected) and "max_rejected_fraction" in refused.reason
    trained = run_range(defs, ["model", "champion", "predictions"], NAME, ("2021-07-04", "2021-07-04"), instance)
    assert trained.success
    record = store.read(dg.AssetKey([NAME, "model"]), "2021-07-04")
    assert record["rejected_days"] == ["2021-06-07"], "a rejected day within the tolerance is skipped and recorded"
    assert record["missing_target_rows"] == len(EMPTY), "hours without a target are neither learnt nor scored"
    assert record["train_rows"] + record["holdout_rows"] + len(EMPTY) == sum(
        len(store.read(dg.AssetKey([NAME, "features"]), day)) for day in record["train_days"] + record["holdout_days"]
    )
    assert record["metrics"]["mae"] < record["baseline"]["mae"]
    assert tracking.alias_version(NAME, CHAMPION) == record["version"]
    predictions = store.read(dg.AssetKey([NAME, "predictions"]), "2021-07-04")
    assert len(predictions) == 24 * len(STATIONS)
    assert set(predictions["model_version"]) == {record["version"]}
