"""Walk-forward training: metrics by hand, window splits with missing days, candidates vs seasonal naive."""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import AIR_SPEC

from kernel.paths import PROJECT_ROOT
from kernel.spec import CandidateSpec, PipelineSpec, load_spec, load_specs
from ml import features as F
from ml import training as T

END = date(2024, 1, 21)
LINEAGE = {"model_name": "synthetic", "model_version": "7", "mlflow_run_id": "abc123"}


def synthetic_spec(window_days: int, holdout_days: int, min_rows: int = 48) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "name": "synthetic",
            "description": "hourly test series with a daily pattern",
            "source": {"uri": "unused/*.csv", "timestamp": {"column": "ts", "format": "%Y-%m-%d %H:%M"}},
            "target": "y",
            "features": {
                "numeric": ["x"],
                "categorical": ["c"],
                "calendar": ["hour", "day_of_week"],
                "target_lags_hours": [24, 48],
                "rolling": [{"window_hours": 24, "stat": "mean"}],
            },
            "partitioning": {"start_date": "2024-01-01"},
            "training": {
                "window_days": window_days,
                "min_rows": min_rows,
                "candidates": [
                    {"family": "hist_gradient_boosting", "params": {"max_iter": 60}},
                    {"family": "ridge", "params": {"alpha": 1.0}},
                ],
            },
            "evaluation": {"holdout_days": holdout_days, "baseline_season_hours": 24},
            "promotion": {"min_improvement_over_baseline": 0.05, "max_regression_vs_champion": 0.1},
            "freshness": {stage: {"warn": "26h", "fail": "50h"} for stage in ("features", "model", "predictions")},
        }
    )


def daily_pattern(days: int, seed: int = 0) -> pd.DataFrame:
    """Raw rows: a strong daily shape (low at night, peak in the afternoon), quieter weekends, some noise.

    Seasonal naive (same hour yesterday) misses every Saturday and Monday; calendar features do not.
    """
    rng = np.random.default_rng(seed)
    timestamps = pd.date_range(END - timedelta(days=days - 1), periods=24 * days, freq="h").astype("datetime64[ns]")
    frame = pd.DataFrame({"timestamp": timestamps})
    hour = frame["timestamp"].dt.hour.to_numpy()
    weekend = frame["timestamp"].dt.day_of_week.to_numpy() >= 5
    frame["y"] = 150 + 100 * np.sin(2 * np.pi * (hour - 9) / 24) - 60 * weekend + rng.normal(0, 8, len(frame))
    frame["x"] = rng.normal(0, 1, len(frame))
    frame["c"] = pd.Series(np.where(hour < 12, "am", "pm"), dtype="str")
    return frame


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    """Training on three weeks, the last one held out."""
    return synthetic_spec(window_days=21, holdout_days=7)


@pytest.fixture(scope="module")
def window_spec() -> PipelineSpec:
    """Two-week windows with a three-day hold-out, for the split tests."""
    return synthetic_spec(window_days=14, holdout_days=3)


@pytest.fixture(scope="module")
def feature_days(spec: PipelineSpec) -> dict[str, pd.DataFrame]:
    raw = daily_pattern(24)
    days = [END - timedelta(days=k) for k in range(20, -1, -1)]
    return {str(day): F.build_features(raw, day, spec).frame for day in days}


@pytest.fixture(scope="module")
def split(feature_days: dict[str, pd.DataFrame], spec: PipelineSpec) -> T.WindowSplit:
    return T.split_window(feature_days, END, spec)


@pytest.fixture(scope="module")
def ridge(split: T.WindowSplit, spec: PipelineSpec) -> T.CandidateResult:
    return T.train_candidate(spec.training.candidates[1], split.train, split.holdout, spec)


def test_forecast_metrics_by_hand() -> None:
    metrics = T.forecast_metrics(np.array([10.0, 0.0, 4.0]), np.array([12.0, 0.0, 1.0]))
    assert metrics.mae == pytest.approx(5 / 3)
    assert metrics.rmse == pytest.approx(math.sqrt(13 / 3))
    # sMAPE terms: 2*2/(10+12), 0/0 -> 0, 2*3/(4+1)
    assert metrics.smape == pytest.approx(100 * (4 / 22 + 0 + 6 / 5) / 3)
    assert metrics.as_dict("val_") == {"val_mae": metrics.mae, "val_rmse": metrics.rmse, "val_smape": metrics.smape}


def test_forecast_metrics_perfect_and_all_zero() -> None:
    perfect = T.forecast_metrics(np.array([3.0, 5.0]), np.array([3.0, 5.0]))
    assert (perfect.mae, perfect.rmse, perfect.smape) == (0.0, 0.0, 0.0)
    zeros = T.forecast_metrics(np.zeros(4), np.zeros(4))
    assert (zeros.mae, zeros.rmse, zeros.smape) == (0.0, 0.0, 0.0)
    opposite = T.forecast_metrics(np.array([0.0]), np.array([7.0]))
    assert opposite.smape == pytest.approx(200.0)


def test_forecast_metrics_on_empty_input() -> None:
    with pytest.raises(T.TrainingDataError, match="empty"):
        T.forecast_metrics(np.array([]), np.array([]))


def rows(day: str, count: int = 24) -> pd.DataFrame:
    return pd.DataFrame(
        {"timestamp": pd.date_range(day, periods=count, freq="h").astype("datetime64[ns]"), "y": 1.0 * count}
    )


def window_frames(skip: Collection[int] = (), empty: Collection[int] = ()) -> dict[str, pd.DataFrame]:
    """Days 0..13 of the window ending END (0 = first), plus a day before the window."""
    frames = {str(END - timedelta(days=14)): rows(str(END - timedelta(days=14)))}
    for index in range(14):
        day = str(END - timedelta(days=13 - index))
        if index in skip:
            continue
        frames[day] = rows(day, 0) if index in empty else rows(day)
    return frames


def test_split_window_full(window_spec: PipelineSpec) -> None:
    result = T.split_window(window_frames(), END, window_spec)
    assert result.window.train_days == [str(END - timedelta(days=k)) for k in range(13, 2, -1)]
    assert result.window.holdout_days == ["2024-01-19", "2024-01-20", "2024-01-21"]
    assert result.window.missing_days == []
    assert len(result.train) == 11 * 24
    assert len(result.holdout) == 3 * 24
    assert result.train["timestamp"].tolist()[0] == pd.Timestamp("2024-01-08")  # the day before the window is ignored
    assert result.holdout["timestamp"].tolist()[0] == pd.Timestamp("2024-01-19")


def test_split_window_tolerates_and_records_missing_days(window_spec: PipelineSpec) -> None:
    result = T.split_window(window_frames(skip={0, 4}, empty={6, 12}), END, window_spec)
    assert result.window.missing_days == ["2024-01-08", "2024-01-12", "2024-01-14", "2024-01-20"]
    assert len(result.window.train_days) == 8
    assert result.window.holdout_days == ["2024-01-19", "2024-01-21"]
    assert len(result.train) == 8 * 24
    assert len(result.holdout) == 2 * 24
    assert not set(result.window.missing_days) & set(result.window.train_days + result.window.holdout_days)


def test_split_window_too_few_training_rows(window_spec: PipelineSpec) -> None:
    frames = window_frames(skip=set(range(1, 11)))
    frames[str(END - timedelta(days=13))] = rows(str(END - timedelta(days=13)), 20)
    with pytest.raises(T.TrainingDataError) as caught:
        T.split_window(frames, END, window_spec)
    message = str(caught.value)
    assert f"window ending {END}" in message
    assert "20 training rows < training.min_rows=48" in message
    assert "10 of 14 days missing" in message


def test_split_window_without_holdout_rows(window_spec: PipelineSpec) -> None:
    with pytest.raises(T.TrainingDataError) as caught:
        T.split_window(window_frames(skip={11, 12}, empty={13}), END, window_spec)
    assert str(caught.value) == f"window ending {END}: no hold-out rows in the last 3 days"


def test_split_window_nothing_at_all(window_spec: PipelineSpec) -> None:
    with pytest.raises(T.TrainingDataError, match="0 training rows"):
        T.split_window({}, END, window_spec)


def test_synthetic_features_are_complete(feature_days: dict[str, pd.DataFrame], split: T.WindowSplit) -> None:
    assert len(feature_days) == 21
    assert all(len(frame) == 24 for frame in feature_days.values())
    assert split.window.missing_days == []
    assert len(split.train) == 14 * 24
    assert len(split.holdout) == 7 * 24


@pytest.mark.parametrize("index", [0, 1], ids=["hist_gradient_boosting", "ridge"])
def test_candidate_beats_seasonal_naive(split: T.WindowSplit, spec: PipelineSpec, index: int) -> None:
    candidate = spec.training.candidates[index]
    result = T.train_candidate(candidate, split.train, split.holdout, spec)
    actual = split.holdout["y"].to_numpy(dtype="float64")
    baseline = T.forecast_metrics(actual, T.seasonal_naive(split.holdout, 24))
    assert result.candidate == candidate
    assert result.worker_pid == os.getpid()
    assert result.metrics.mae <= (1 - spec.promotion.min_improvement_over_baseline) * baseline.mae
    assert result.metrics.rmse < baseline.rmse
    # The metrics are the ones of the returned model on the hold-out.
    again = T.forecast_metrics(actual, T.predict(result.model, split.holdout, spec))
    assert again.mae == pytest.approx(result.metrics.mae)


def test_best_candidate_picks_lowest_mae_first_on_ties() -> None:
    candidates = [CandidateSpec(family="ridge", params={"alpha": float(alpha)}) for alpha in range(4)]
    maes = [5.0, 3.0, 3.0, 4.0]
    results = [
        T.CandidateResult(candidate, None, T.Metrics(mae=mae, rmse=1.0, smape=1.0), 0)
        for candidate, mae in zip(candidates, maes, strict=True)
    ]
    assert T.best_candidate(results) is results[1]
    assert T.best_candidate(results[::-1]) is results[2]
    assert T.best_candidate([results[3], results[0]]) is results[3]


def test_predict_never_returns_negatives(ridge: T.CandidateResult, split: T.WindowSplit, spec: PipelineSpec) -> None:
    frame = split.holdout.copy()
    frame[["lag_24h", "lag_48h", "rolling_mean_24h"]] = -500.0
    raw = ridge.model.predict(frame[F.feature_columns(spec)])
    assert (raw < 0).any()  # the unclipped model does go negative here
    predicted = T.predict(ridge.model, frame, spec)
    assert predicted.dtype == np.float64
    assert (predicted >= 0).all()
    assert np.array_equal(predicted[raw > 0], raw[raw > 0])
    assert (predicted[raw <= 0] == 0).all()


def test_predict_day_carries_lineage_on_every_row(
    ridge: T.CandidateResult, feature_days: dict[str, pd.DataFrame], spec: PipelineSpec
) -> None:
    features = feature_days[str(END)]
    out = T.predict_day(ridge.model, features, spec, LINEAGE)
    assert len(out) == 24
    assert list(out.columns) == ["timestamp", "prediction", "actual", *LINEAGE, "worker_pid"]
    for key, value in LINEAGE.items():
        assert out[key].tolist() == [value] * 24
        assert out[key].dtype == "str"
    assert out["worker_pid"].tolist() == [os.getpid()] * 24
    assert out["timestamp"].tolist() == features["timestamp"].tolist()
    assert np.array_equal(out["actual"].to_numpy(), features["y"].to_numpy())
    assert np.array_equal(out["prediction"].to_numpy(), T.predict(ridge.model, features, spec))


def test_predict_day_on_a_day_without_features(ridge: T.CandidateResult, spec: PipelineSpec) -> None:
    empty = F.build_features(daily_pattern(3), END + timedelta(days=5), spec).frame
    out = T.predict_day(ridge.model, empty, spec, LINEAGE)
    assert out.empty
    assert {"prediction", "actual", *LINEAGE} <= set(out.columns)


def test_predict_day_lineage_with_a_non_default_index(
    ridge: T.CandidateResult, split: T.WindowSplit, spec: PipelineSpec
) -> None:
    last_day = split.holdout.iloc[-24:]  # index 144..167
    assert last_day["timestamp"].dt.date.tolist() == [END] * 24
    out = T.predict_day(ridge.model, last_day, spec, LINEAGE)
    assert out["model_version"].tolist() == ["7"] * 24


def test_holdout_frame(ridge: T.CandidateResult, split: T.WindowSplit, spec: PipelineSpec) -> None:
    predicted = T.predict(ridge.model, split.holdout, spec)
    out = T.holdout_frame(split.holdout, predicted, spec)
    assert list(out.columns) == ["timestamp", "actual", "forecast", "baseline"]
    assert np.array_equal(out["baseline"].to_numpy(), split.holdout["lag_24h"].to_numpy())
    assert np.array_equal(out["forecast"].to_numpy(), predicted)


def test_feature_importance_covers_every_feature(
    ridge: T.CandidateResult, split: T.WindowSplit, spec: PipelineSpec
) -> None:
    importance = T.feature_importance(ridge.model, split.holdout, spec)
    assert list(importance) == F.feature_columns(spec)
    # The daily shape is carried by the lags: shuffling them must hurt more than shuffling noise.
    assert importance["lag_24h"] + importance["lag_48h"] > importance["x"]


# Hours without a target, and candidate params checked against the estimator.


def test_split_window_leaves_out_and_counts_hours_without_a_target(window_spec: PipelineSpec) -> None:
    frames = window_frames()
    train_day, holdout_day = str(END - timedelta(days=10)), str(END - timedelta(days=1))
    for day, hours in [(train_day, [2, 3, 4]), (holdout_day, [23])]:
        frame = frames[day].copy()
        frame.loc[hours, "y"] = np.nan
        frames[day] = frame
    result = T.split_window(frames, END, window_spec)
    assert result.window.missing_target_rows == 4
    assert len(result.train) == 11 * 24 - 3
    assert len(result.holdout) == 3 * 24 - 1
    assert result.train["y"].notna().all() and result.holdout["y"].notna().all()
    assert result.window.train_days[3] == train_day, "a day with some empty hours is still a training day"


def test_a_holdout_without_any_known_target_is_refused(window_spec: PipelineSpec) -> None:
    frames = window_frames()
    for index in (11, 12, 13):
        day = str(END - timedelta(days=13 - index))
        frames[day] = frames[day].assign(y=np.nan)
    with pytest.raises(T.TrainingDataError, match="no hold-out rows"):
        T.split_window(frames, END, window_spec)


def test_metrics_of_a_candidate_count_only_hours_with_a_target(spec: PipelineSpec) -> None:
    raw = daily_pattern(24)
    raw.loc[raw.index[-30:-20], "y"] = np.nan  # ten hours of the last day not measured
    days = [END - timedelta(days=k) for k in range(20, -1, -1)]
    frames = {str(day): F.build_features(raw, day, spec).frame for day in days}
    split = T.split_window(frames, END, spec)
    assert split.window.missing_target_rows > 0
    result = T.train_candidate(spec.training.candidates[1], split.train, split.holdout, spec)
    assert np.isfinite(result.metrics.mae)
    predicted = T.predict(result.model, split.holdout, spec)
    assert result.metrics.mae == pytest.approx(float(np.mean(np.abs(predicted - split.holdout["y"].to_numpy()))))


def test_every_shipped_spec_has_candidates_its_estimators_accept() -> None:
    specs = load_specs(PROJECT_ROOT / "pipelines")
    assert {"bike_demand", "air_quality"} <= {spec.name for spec in specs}
    for spec in specs:
        T.check_candidates(spec)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"losss": "absolute_error"}, "hist_gradient_boosting has no parameter(s) ['losss']; it has ["),
        ({"loss": "huber"}, "The 'loss' parameter of HistGradientBoostingRegressor must be a str among"),
        ({"max_iter": 0}, "The 'max_iter' parameter of HistGradientBoostingRegressor must be an int in the range"),
        ({"learning_rate": "fast"}, "The 'learning_rate' parameter"),
    ],
)
def test_candidate_params_the_estimator_refuses_name_file_and_field(
    tmp_path: Path, params: dict[str, object], reason: str
) -> None:
    document = yaml.safe_load(AIR_SPEC.read_text())
    document["training"]["candidates"].append({"family": "hist_gradient_boosting", "params": params})
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(document))
    spec = load_spec(path)  # the kernel does not import scikit-learn: the spec itself loads
    index = len(document["training"]["candidates"]) - 1
    with pytest.raises(T.CandidateParamsError) as caught:
        T.check_candidates(spec)
    message = str(caught.value)
    assert f"invalid pipeline spec {path}: training.candidates.{index}.params: " in message
    assert reason in message


# The served model: refitted on the whole window; the champion compared on hours after its own window only.


def test_refit_learns_the_holdout_too(split: T.WindowSplit, spec: PipelineSpec, ridge: T.CandidateResult) -> None:
    candidate = spec.training.candidates[1]
    refitted = T.refit(candidate, split, spec)
    whole = pd.concat([split.train, split.holdout], ignore_index=True)
    by_hand = T.make_estimator(candidate, spec).fit(whole[F.feature_columns(spec)], whole[spec.target])
    assert np.allclose(T.predict(refitted, split.holdout, spec), T.predict(by_hand, split.holdout, spec))
    # Seen on the hold-out, the refitted model fits it closer than the one chosen on it.
    actual = split.holdout[spec.target].to_numpy(dtype="float64")
    assert T.forecast_metrics(actual, T.predict(refitted, split.holdout, spec)).mae < ridge.metrics.mae


def test_the_champion_is_scored_only_on_holdout_hours_after_its_own_window(
    split: T.WindowSplit, spec: PipelineSpec, ridge: T.CandidateResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml.evaluation import score_champion

    partition = END - timedelta(days=3)  # its window covers 4 of the 7 hold-out days
    holdout = split.holdout
    seen = holdout["timestamp"].dt.date <= partition
    scored: list[pd.DataFrame] = []

    def memorised(model: object, frame: pd.DataFrame, spec: PipelineSpec) -> np.ndarray:
        scored.append(frame)
        return np.where(frame["timestamp"].dt.date <= partition, frame[spec.target], 0.0)

    candidate = T.predict(ridge.model, holdout, spec)
    monkeypatch.setattr(T, "predict", memorised)
    score = score_champion(object(), "3", partition, holdout, predicted=candidate, spec=spec)
    assert score.comparable and score.hours == int((~seen).sum()) == 3 * 24
    assert bool((scored[0]["timestamp"].dt.date > partition).all())
    after = holdout[~seen][spec.target].to_numpy(dtype="float64")
    assert score.mae == pytest.approx(float(np.mean(np.abs(after))))  # the memorised days would have scored 0
    assert score.candidate_mae == pytest.approx(float(np.mean(np.abs(candidate[~seen.to_numpy()] - after))))

    covering = score_champion(object(), "3", END, holdout, predicted=candidate, spec=spec)
    assert not covering.comparable and covering.mae is None
    assert covering.reason is not None and f"ending {END}" in covering.reason
