"""The walk-forward backtest's scoring: out of sample only, missing targets left out and counted, the track record."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from kernel.spec import PipelineSpec, PromotionSpec
from ml import backtest as B
from ml.features import feature_columns

DAY = date(2024, 3, 10)


def spec(horizon_days: int = 1) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "name": "synthetic",
            "description": "hourly test series",
            "source": {"uri": "unused/*.csv", "timestamp": {"column": "ts", "format": "%Y-%m-%d %H:%M"}},
            "target": "y",
            "features": {"calendar": ["hour", "day_of_year"], "target_lags_hours": [24]},
            "partitioning": {"start_date": "2024-01-01"},
            "training": {"window_days": 14, "candidates": [{"family": "ridge"}]},
            "evaluation": {"holdout_days": 2, "baseline_season_hours": 24, "horizon_days": horizon_days},
            "promotion": {"min_improvement_over_baseline": 0.1, "max_regression_vs_champion": 0.1},
            "freshness": {stage: {"warn": "26h", "fail": "50h"} for stage in ("features", "model", "predictions")},
        }
    )


def day_frame(day: date) -> pd.DataFrame:
    """A day of feature rows: y = 100 + 10 * hour + the day of the year, its baseline (yesterday) 30 lower."""
    timestamps = pd.date_range(pd.Timestamp(day), periods=24, freq="h")
    frame = pd.DataFrame({"timestamp": timestamps, "hour": timestamps.hour.astype("float64")})
    frame["day_of_year"] = timestamps.day_of_year.astype("float64")
    frame["y"] = 100 + 10 * frame["hour"] + frame["day_of_year"]
    frame["lag_24h"] = frame["y"] - 30
    return frame


class Memoriser:
    """Predicts exactly the actuals of the days it was fitted on and 0 elsewhere: perfect in its own window, so
    scoring it on a day of that window would show a MAE of 0."""

    def __init__(self, window: list[pd.DataFrame]) -> None:
        rows = pd.concat(window)
        self.seen = {(d, h): y for d, h, y in zip(rows["day_of_year"], rows["hour"], rows["y"], strict=True)}

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        keys = zip(features["day_of_year"], features["hour"], strict=True)
        return np.array([self.seen.get(key, 0.0) for key in keys])


class Constant:
    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return np.full(len(features), self.value)


def window_model(end: date, days: int = 14) -> Memoriser:
    return Memoriser([day_frame(end - timedelta(days=k)) for k in range(days)])


def test_a_model_is_scored_only_on_days_after_its_window() -> None:
    assert B.covering_partitions(DAY, 1) == [DAY - timedelta(days=1)]
    assert B.covering_partitions(DAY, 3) == [DAY - timedelta(days=k) for k in (1, 2, 3)]
    frame = day_frame(DAY)
    # The model of the day before has never seen DAY: it is scored on it, and its memory does not help.
    yesterday = B.Forecaster(DAY - timedelta(days=1), "1", window_model(DAY - timedelta(days=1)))
    scores = B.score_day(DAY, frame, [yesterday], spec())
    assert scores["mae"].iloc[0] == pytest.approx(frame["y"].mean())
    assert scores["horizon_days"].iloc[0] == 1
    # A model whose window holds DAY would score a perfect 0: the backtest refuses to score it at all.
    for inside in (DAY, DAY + timedelta(days=1)):
        cheat = B.Forecaster(inside, "2", window_model(inside))
        assert np.allclose(cheat.model.predict(frame), frame["y"]), "scored, it would look perfect"
        with pytest.raises(B.LookAheadError, match=str(inside)):
            B.score_day(DAY, frame, [yesterday, cheat], spec())


def test_the_baseline_and_every_forecaster_are_scored_on_the_same_hours() -> None:
    frame = day_frame(DAY)
    champion = B.Forecaster(DAY - timedelta(days=5), "3", Constant(0.0), champion=True)
    challengers = [
        B.Forecaster(DAY - timedelta(days=1), "5", Constant(float(frame["y"].mean()))),
        B.Forecaster(DAY - timedelta(days=2), "4", Constant(0.0), passed_gates=False),
    ]
    scores = B.score_day(DAY, frame, [*challengers, champion], spec(horizon_days=2))
    assert list(scores.columns) == B.SCORE_COLUMNS
    assert scores["baseline_mae"].tolist() == pytest.approx([30.0] * 3)
    assert scores["champion"].tolist() == [False, False, True]
    assert scores["passed_gates"].tolist() == [True, False, True]
    assert scores["horizon_days"].tolist() == [1, 2, 5]
    assert scores["mae"].iloc[2] == pytest.approx(frame["y"].mean())
    assert (scores["rows"] == 24).all() and (scores["excluded_rows"] == 0).all()


def test_hours_without_a_target_are_left_out_and_counted() -> None:
    frame = day_frame(DAY)
    frame.loc[[3, 17], "y"] = np.nan
    scores = B.score_day(DAY, frame, [B.Forecaster(DAY - timedelta(days=1), "1", Constant(0.0))], spec())
    kept = frame["y"].dropna()
    assert scores["rows"].iloc[0] == 22
    assert scores["excluded_rows"].iloc[0] == 2
    assert scores["mae"].iloc[0] == pytest.approx(kept.mean())
    assert scores["baseline_mae"].iloc[0] == pytest.approx(30.0)
    frame["y"] = np.nan
    with pytest.raises(B.NothingToScore, match="none of 24 hours"):
        B.score_day(DAY, frame, [B.Forecaster(DAY - timedelta(days=1), "1", Constant(0.0))], spec())


def scores_over(days: int, model_error: float, champion_error: float | None = None) -> pd.DataFrame:
    """Scores of `days` days: the daily model with `model_error`, an older challenger, maybe the champion."""
    rows = []
    for offset in range(days):
        day = str(DAY + timedelta(days=offset))
        common = {"day": day, "passed_gates": True, "rows": 24, "excluded_rows": 0, "baseline_mae": 10.0}
        rows.append({**common, "partition": "d-1", "version": "new", "horizon_days": 1, "champion": False})
        rows[-1]["mae"] = model_error
        rows.append({**common, "partition": "d-2", "version": "old", "horizon_days": 2, "champion": False})
        rows[-1]["mae"] = 50.0
        if champion_error is not None:
            rows.append({**common, "partition": "c", "version": "c", "horizon_days": 9, "champion": True})
            rows[-1]["mae"] = champion_error
    return pd.DataFrame(rows, columns=B.SCORE_COLUMNS)


PROMOTION = PromotionSpec(min_improvement_over_baseline=0.1, max_regression_vs_champion=0.1, track_record_days=5)


def test_the_track_record_uses_the_freshest_model_of_each_day_and_judges_it() -> None:
    record = B.track_record(scores_over(8, model_error=6.0), days=5)
    assert record is not None
    assert len(record.days) == 5 and record.days[-1] == str(DAY + timedelta(days=7))
    assert record.model_mae == pytest.approx(6.0), "the daily model, not the older challenger"
    assert record.improvement == pytest.approx(0.4)
    assert B.judge_track_record(record, 5, PROMOTION) == (True, "")


def test_the_track_record_refuses_short_weak_or_worse_than_champion_records() -> None:
    short = B.track_record(scores_over(3, model_error=6.0), days=5)
    passed, reason = B.judge_track_record(short, 5, PROMOTION)
    assert not passed and "3 of promotion.track_record_days=5" in reason
    assert B.judge_track_record(None, 5, PROMOTION)[0] is False
    weak = B.track_record(scores_over(5, model_error=9.5), days=5)
    passed, reason = B.judge_track_record(weak, 5, PROMOTION)
    assert not passed and "baseline" in reason
    beaten = B.track_record(scores_over(5, model_error=6.0, champion_error=5.0), days=5)
    assert beaten is not None and beaten.champion_mae == pytest.approx(5.0)
    passed, reason = B.judge_track_record(beaten, 5, PROMOTION)
    assert not passed and "champion" in reason
    close = B.track_record(scores_over(5, model_error=6.0, champion_error=5.5), days=5)
    assert B.judge_track_record(close, 5, PROMOTION) == (True, "")


def test_the_summary_rolls_the_improvement_and_keeps_the_champion_apart() -> None:
    scores = scores_over(30, model_error=5.0, champion_error=8.0)
    table = B.summary(scores, rolling_days=28)
    assert len(table) == 30
    assert table["improvement"].tolist() == pytest.approx([0.5] * 30)
    assert table["improvement_28d"].iloc[-1] == pytest.approx(0.5)
    assert table["champion_mae"].tolist() == pytest.approx([8.0] * 30)
    assert (table["models_scored"] == 3).all()
    assert B.improvement(B.daily_models(scores)) == pytest.approx(0.5)


def test_the_spec_scores_one_day_ahead_by_default_and_the_gate_is_off() -> None:
    assert spec().evaluation.horizon_days == 1
    assert spec().promotion.track_record_days == 0
    assert "day_of_year" in feature_columns(spec())
