"""Twelve stations, one CSV each, derived from the real bike sample: the multi-series dataset (data/stations/).

Deterministic (seed `SEED`): station k's demand is the real hourly `cnt` times its own scale and a log-normal noise,
its weather the real weather with a little noise; each station has its own outages (whole days missing) and lost
hours, one station opens late (a series present only in later days), one station-day is broken (a sensor fault:
negative counts), and one station's file is re-sent for a few hours with different counts (two files disagreeing
on the same (station, hour): the spec's duplicates policy decides). Run `python -m benchmarks.stations` to write
the files and measure what each unit of rejection costs (README, "Multi-series data").
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kernel.paths import PROJECT_ROOT

SEED = 2026
BIKE_CSV = PROJECT_ROOT / "data" / "bike_sharing" / "hour.csv"
COLUMNS = ["station", "dteday", "hr", "weathersit", "temp", "atemp", "hum", "windspeed", "holiday", "workingday", "cnt"]
WEATHER = ["temp", "atemp", "hum", "windspeed"]
REPEATS = 3


@dataclass(frozen=True)
class Faults:
    """Where the generated data is broken on purpose (all in the data's own dates)."""

    broken: tuple[str, str]  # (station, day) whose counts are negative all day
    resent: tuple[str, str]  # (station, day) whose first hours are sent again, with other counts, in a second file
    resent_hours: int
    late_station: str  # opens on `late_from`: absent before, not an error
    late_from: str


def station_names(count: int) -> list[str]:
    return [f"S{k:02d}" for k in range(1, count + 1)]


def default_faults(first: date, last: date, stations: list[str]) -> Faults:
    """Faults placed inside the range: the broken day a third in, the re-sent day half way, the late opening at 40 %."""
    days = pd.date_range(first, last, freq="D").strftime("%Y-%m-%d")
    return Faults(
        broken=(stations[min(4, len(stations) - 1)], days[len(days) // 3]),
        resent=(stations[min(6, len(stations) - 1)], days[len(days) // 2]),
        resent_hours=6,
        late_station=stations[-1],
        late_from=days[(2 * len(days)) // 5],
    )


def generate(
    out: Path, first: date = date(2011, 1, 1), last: date = date(2012, 12, 31), stations: int = 12
) -> tuple[list[Path], Faults]:
    """Write one CSV per station (plus the re-sent file) under `out`; return their paths and the faults placed."""
    rng = np.random.default_rng(SEED)
    bike = pd.read_csv(BIKE_CSV)
    dates = pd.to_datetime(bike["dteday"], format="%m/%d/%y")
    bike = bike[(dates >= pd.Timestamp(first)) & (dates <= pd.Timestamp(last))].reset_index(drop=True)
    day = pd.to_datetime(bike["dteday"], format="%m/%d/%y").dt.strftime("%Y-%m-%d")
    names = station_names(stations)
    faults = default_faults(first, last, names)
    unique_days = sorted(day.unique())
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        scale, sigma = rng.uniform(0.3, 1.8), rng.uniform(0.08, 0.25)
        frame = bike.assign(station=name)
        frame["cnt"] = np.round(bike["cnt"] * scale * rng.lognormal(0, sigma, len(bike))).astype(int)
        for column in WEATHER:
            frame[column] = (bike[column] + rng.normal(0, 0.02, len(bike))).clip(0, 1).round(4)
        # Outages: two runs of 1-3 whole days; and about 0.5 % of hours lost at random.
        out_days: set[str] = set()
        for _ in range(2):
            start = int(rng.integers(0, len(unique_days)))
            out_days.update(unique_days[start : start + int(rng.integers(1, 4))])
        keep = ~day.isin(out_days) & (rng.random(len(bike)) > 0.005)
        if name == faults.late_station:
            keep &= day >= faults.late_from
        if name == faults.broken[0]:
            keep |= day == faults.broken[1]  # the broken day is delivered (broken), not lost in an outage
            frame.loc[day == faults.broken[1], "cnt"] = -1
        if name == faults.resent[0]:
            keep |= day == faults.resent[1]
        frame = frame[keep]
        path = out / f"{name}.csv"
        frame[COLUMNS].to_csv(path, index=False)
        paths.append(path)
        if name == faults.resent[0]:
            again = frame[day[keep] == faults.resent[1]].head(faults.resent_hours)
            again = again.assign(cnt=(again["cnt"] * 1.5).round().astype(int) + 1)
            resent = out / f"{name}.resent.csv"
            again[COLUMNS].to_csv(resent, index=False)
            paths.append(resent)
    return paths, faults


def spec_document(landing: Path, first: str, end: str, **overrides: Any) -> dict[str, Any]:
    """The stations pipeline's spec (test-only: the files are generated, not shipped), sections updated from
    `overrides`."""
    document: dict[str, Any] = {
        "name": "stations",
        "description": "Hourly bike rentals at twelve stations (derived from the UCI Bike Sharing sample).",
        "owners": ["team:ml-platform"],
        "source": {
            "uri": str(landing / "*.csv"),
            "format": "csv",
            "timestamp": {"column": "dteday", "format": "%m/%d/%y", "hour_column": "hr"},
            "entity_columns": ["station"],
            "duplicates": "last",
        },
        "target": "cnt",
        "features": {
            "numeric": ["temp", "hum", "workingday"],
            "categorical": ["weathersit"],
            "calendar": ["hour", "day_of_week"],
            "target_lags_hours": [24, 48],
            "rolling": [{"window_hours": 24, "stat": "mean"}],
        },
        "partitioning": {"start_date": first, "end_date": end},
        "training": {
            "window_days": 21,
            "max_rejected_fraction": 0.2,
            "candidates": [{"family": "hist_gradient_boosting", "params": {"max_iter": 60}}],
        },
        "evaluation": {"holdout_days": 5, "baseline_season_hours": 24},
        "promotion": {"min_improvement_over_baseline": 0.0, "max_regression_vs_champion": 0.5},
        "expectations": {
            "columns": {
                "cnt": {"min": 0, "max": 5000},
                "temp": {"min": 0, "max": 1},
                "hum": {"min": 0, "max": 1},
                "weathersit": {"allowed_values": ["1", "2", "3", "4"]},
            },
            "rows_per_partition": {"min": 22, "max": 24},
            "unique_timestamp": True,
        },
        "freshness": {
            "features": {"warn": "26h", "fail": "50h"},
            "model": {"warn": "26h", "fail": "50h"},
            "predictions": {"warn": "26h", "fail": "50h"},
        },
    }
    for section, value in overrides.items():
        document[section] = {**document[section], **value} if isinstance(value, dict) else value
    return document


def measure(out: Path) -> dict[str, Any]:
    """Generate the twelve stations (two years), judge every day with each unit of rejection, and count what each
    throws away: series-days rejected at raw, and series-days of features lost (a rejected raw day takes the days
    whose look-back holds it with it)."""
    from kernel.pipeline import Pipeline
    from kernel.spec import PipelineSpec
    from ml import ingest
    from ml.expectations import completeness_verdicts, expectation_verdicts

    paths, faults = generate(out)
    spec = PipelineSpec.model_validate(spec_document(out, "2011-01-01", "2013-01-01"))
    started = time.perf_counter()
    frames = [ingest.normalise(ingest.read_source_file(str(p), spec, PROJECT_ROOT), spec, str(p)).frame for p in paths]
    collapsed = ingest.collapse_duplicates(pd.concat(frames, ignore_index=True), spec)
    raw = ingest.split_days(collapsed.frame, ingest.days_in(collapsed.frame), spec)
    read_s = time.perf_counter() - started
    series_days = sum(frame["station"].nunique() for frame in raw.values())
    lookback = Pipeline(spec=spec, root=PROJECT_ROOT).lookback_days
    figures: dict[str, Any] = {
        "stations": len(station_names(12)),
        "rows": len(collapsed.frame),
        "days": len(raw),
        "series_days": series_days,
        "faults": vars(faults),
        "read_and_normalise_s": round(read_s, 2),
        "feature_lookback_days": lookback,
    }
    expectation_verdicts(dict(list(raw.items())[:2]), spec)  # GX's imports and first context, not judging
    seconds: dict[str, list[float]] = {"series_day": [], "day": []}
    for _ in range(REPEATS):  # alternating, so load on a shared machine falls on both units alike
        for unit, taken in seconds.items():
            judged = spec.model_copy(
                update={"expectations": spec.expectations.model_copy(update={"reject": unit})}, deep=True
            )
            started = time.perf_counter()
            verdicts = expectation_verdicts(dict(raw), judged)
            taken.append(time.perf_counter() - started)
            failed_days = [day for day, v in verdicts.items() if not v.passed]
            rejected = sum(len(v.rejected_series) for v in verdicts.values()) + sum(
                raw[day]["station"].nunique() for day in failed_days
            )
            figures[unit] = {
                "judge_s_median": round(sorted(taken)[len(taken) // 2], 2),
                "days_failed": len(failed_days),
                "series_days_rejected": rejected,
                "feature_series_days_lost": rejected * (lookback + 1),
            }
    started = time.perf_counter()
    completeness_verdicts(dict(raw), spec)
    figures["completeness_judge_s"] = round(time.perf_counter() - started, 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="folder to write the station files to")
    parser.add_argument("--measure", action="store_true", help="also judge them under each unit of rejection")
    parser.add_argument("--stations", type=int, default=12, help="how many stations to write (not with --measure)")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.out), indent=2))
    else:
        paths, faults = generate(args.out, stations=args.stations)
        print(json.dumps({"files": [str(p) for p in paths], "faults": vars(faults)}, indent=2))


if __name__ == "__main__":
    main()
