"""The raw gate's verdict per day, on real Beijing PM2.5 days: `mostly` judges each day on its own rows."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from conftest import AIR_CSV, AIR_SPEC, BIKE_CSV, BIKE_SPEC

from kernel.spec import PipelineSpec, load_spec
from ml import ingest
from ml.expectations import expectation_verdicts

# From the file: 2010-01-01 has no PM2.5 at all, 2010-01-23 lacks 7 hours, 2010-01-26 lacks 12, 2010-02-14 lacks 1.
DAYS = [date(2010, 1, 1), date(2010, 1, 23), date(2010, 1, 26), date(2010, 2, 14), date(2010, 2, 15)]


@pytest.fixture(scope="module")
def air() -> tuple[PipelineSpec, dict[str, pd.DataFrame]]:
    spec = load_spec(AIR_SPEC)
    frame = ingest.normalise(pd.read_csv(AIR_CSV, nrows=24 * 50), spec).frame
    return spec, ingest.split_days(frame, DAYS, spec)


def with_mostly(spec: PipelineSpec, mostly: float) -> PipelineSpec:
    rules = dict(spec.expectations.columns)
    rules[spec.target] = rules[spec.target].model_copy(update={"mostly": mostly})
    return spec.model_copy(update={"expectations": spec.expectations.model_copy(update={"columns": rules})})


def test_empty_target_hours_per_day_are_the_files(air: tuple[PipelineSpec, dict[str, pd.DataFrame]]) -> None:
    spec, raw = air
    assert {day: int(frame[spec.target].isna().sum()) for day, frame in raw.items()} == {
        "2010-01-01": 24,
        "2010-01-23": 7,
        "2010-01-26": 12,
        "2010-02-14": 1,
        "2010-02-15": 0,
    }


@pytest.mark.parametrize(
    ("mostly", "failing"),
    [
        (1.0, {"2010-01-01", "2010-01-23", "2010-01-26", "2010-02-14"}),
        (0.75, {"2010-01-01", "2010-01-23", "2010-01-26"}),  # 17 of 24 hours (71%) is too few
        (0.5, {"2010-01-01"}),  # 12 of 24 is exactly half: enough
        (0.01, {"2010-01-01"}),  # a day with no value at all never passes
    ],
)
def test_a_day_fails_only_when_its_own_share_of_known_hours_is_below_mostly(
    air: tuple[PipelineSpec, dict[str, pd.DataFrame]], mostly: float, failing: set[str]
) -> None:
    spec, raw = air
    verdicts = expectation_verdicts(raw, with_mostly(spec, mostly))
    assert {day for day, v in verdicts.items() if not v.passed} == failing
    for day in failing:
        missing = int(raw[day][spec.target].isna().sum())
        reason = verdicts[day].reason
        assert f"expect_column_values_to_not_be_null {spec.target}: {missing} row(s)" in reason
        share = f"({1 - missing / 24:.0%} pass, mostly={mostly})"
        assert (share in reason) is (mostly < 1), "the default (all rows) reads as before"


def test_mostly_also_bounds_a_range_rule_per_day(air: tuple[PipelineSpec, dict[str, pd.DataFrame]]) -> None:
    spec, raw = air
    spiky = {day: frame.copy() for day, frame in raw.items()}
    spiky["2010-02-15"].loc[0:5, spec.target] = 5000.0  # 6 of 24 hours over the max
    spiky["2010-02-14"].loc[0:1, spec.target] = 5000.0  # 2 of its 23 known hours
    verdicts = expectation_verdicts(spiky, with_mostly(spec, 0.8))
    assert not verdicts["2010-02-15"].passed
    assert "expect_column_values_to_be_between pm2.5: 6 row(s) (75% pass, mostly=0.8)" in verdicts["2010-02-15"].reason
    assert verdicts["2010-02-14"].passed, "2 of 23 known values out of range is 91% passing"


def test_duplicate_hours_under_the_error_policy_fail_their_day_only() -> None:
    spec = load_spec(BIKE_SPEC)
    assert spec.source.duplicates == "error"
    frame = ingest.normalise(pd.read_csv(BIKE_CSV, nrows=24 * 6), spec).frame
    days = ingest.days_in(frame)
    again = frame[frame["timestamp"].dt.date == days[2]].head(2)
    frame = ingest.collapse_duplicates(pd.concat([frame, again], ignore_index=True), spec).frame
    raw = ingest.split_days(frame, days, spec)
    verdicts = expectation_verdicts(raw, spec)
    assert {day for day, v in verdicts.items() if not v.passed} == {str(days[2])}
    assert "expect_column_values_to_be_unique timestamp: 4 row(s)" in verdicts[str(days[2])].reason
    assert np.isfinite(raw[str(days[2])]["cnt"]).all()
