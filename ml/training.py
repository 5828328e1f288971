"""Walk-forward training: candidates, the seasonal-naive baseline and forecast metrics."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from kernel import series
from kernel.days import window_ending
from kernel.records import Metrics, Rejected
from kernel.schema import TIMESTAMP
from kernel.spec import CandidateSpec, PipelineSpec
from ml.features import feature_columns, lag_column, numeric_feature_columns


class TrainingDataError(ValueError):
    """A training window without enough usable rows."""


class CandidateParamsError(ValueError):
    """A candidate's params that its scikit-learn estimator does not accept."""


@dataclass
class CandidateResult:
    """A fitted candidate, its validation metrics and where it was trained."""

    candidate: CandidateSpec
    model: Any
    metrics: Metrics
    worker_pid: int


@dataclass(frozen=True)
class TrainingWindow:
    """Days a model partition trains on and validates on, and which of them had data."""

    train_days: list[str]
    holdout_days: list[str]
    missing_days: list[str]
    rejected_days: list[str] = field(default_factory=list)
    missing_target_rows: int = 0
    series_left_out: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowSplit:
    """The rows of one training window, split into training and hold-out."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    window: TrainingWindow

    def summary(self) -> SplitSummary:
        """What is kept of the split once its model is trained (the rows stay in the Ray task)."""
        return SplitSummary(self.window, len(self.train), len(self.holdout), self.holdout.head(3).copy())


@dataclass(frozen=True)
class SplitSummary:
    """What a trained model partition records of its window split: the days, the row counts, and a few hold-out
    rows (the logged model's signature), without the window's rows."""

    window: TrainingWindow
    train_rows: int
    holdout_rows: int
    sample: pd.DataFrame


def forecast_metrics(actual: np.ndarray, predicted: np.ndarray) -> Metrics:
    """MAE, RMSE and symmetric MAPE (in %, 0 where both values are 0)."""
    actual = np.asarray(actual, dtype="float64")
    predicted = np.asarray(predicted, dtype="float64")
    if len(actual) == 0:
        raise TrainingDataError("cannot score an empty set of rows")
    error = predicted - actual
    denominator = np.abs(actual) + np.abs(predicted)
    ratio = np.divide(2 * np.abs(error), denominator, out=np.zeros_like(error), where=denominator > 0)
    return Metrics(
        mae=float(np.mean(np.abs(error))),
        rmse=float(np.sqrt(np.mean(error**2))),
        smape=float(100 * np.mean(ratio)),
    )


def seasonal_naive(frame: pd.DataFrame, season_hours: int) -> np.ndarray:
    """The baseline forecast: the value one season earlier."""
    return frame[lag_column(season_hours)].to_numpy(dtype="float64")


def split_window(frames: Mapping[str, pd.DataFrame | Rejected], end_day: date, spec: PipelineSpec) -> WindowSplit:
    """Split the feature partitions of a window into train and hold-out rows.

    Days absent from `frames` (never materialised) are tolerated and recorded; rejected days are left out
    and recorded, and more of them than `training.max_rejected_fraction` of the window, or too few rows on
    either side, is a `TrainingDataError` naming the days. The series a day was built without (its frame's
    `attrs`, set by the day gate) are recorded per day with their reasons.
    """
    window_days = window_ending(end_day, spec.training.window_days)
    holdout_start = end_day - timedelta(days=spec.evaluation.holdout_days - 1)
    rejected = [str(d) for d in window_days if isinstance(frames.get(str(d)), Rejected)]
    tolerance = spec.training.max_rejected_fraction
    if len(rejected) > tolerance * len(window_days):
        raise TrainingDataError(
            f"window ending {end_day}: {len(rejected)} of {len(window_days)} days rejected upstream, more than "
            f"training.max_rejected_fraction={tolerance}: {rejected}"
        )
    present: dict[date, pd.DataFrame] = {}
    for day in window_days:
        frame = frames.get(str(day))
        if isinstance(frame, pd.DataFrame) and len(frame):
            present[day] = frame
    window = TrainingWindow(
        train_days=[str(d) for d in window_days if d < holdout_start and d in present],
        holdout_days=[str(d) for d in window_days if d >= holdout_start and d in present],
        missing_days=[str(d) for d in window_days if d not in present and str(d) not in rejected],
        rejected_days=rejected,
        series_left_out={str(day): left for day, frame in present.items() if (left := series.left_out(frame))},
    )
    train, train_unknown = _with_target(_concat([present[date.fromisoformat(d)] for d in window.train_days]), spec)
    holdout, holdout_unknown = _with_target(
        _concat([present[date.fromisoformat(d)] for d in window.holdout_days]), spec
    )
    window = replace(window, missing_target_rows=train_unknown + holdout_unknown)
    if len(train) < spec.training.min_rows:
        raise TrainingDataError(
            f"window ending {end_day}: {len(train)} training rows < training.min_rows={spec.training.min_rows} "
            f"({len(window.missing_days)} of {spec.training.window_days} days missing)"
        )
    if holdout.empty:
        raise TrainingDataError(
            f"window ending {end_day}: no hold-out rows in the last {spec.evaluation.holdout_days} days"
        )
    return WindowSplit(train, holdout, window)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _with_target(frame: pd.DataFrame, spec: PipelineSpec) -> tuple[pd.DataFrame, int]:
    """Rows whose target is known (an hour the source left empty can be neither learnt nor scored), and how many
    were left out."""
    if frame.empty:
        return frame, 0
    known = frame[spec.target].notna()
    return frame[known].reset_index(drop=True), int((~known).sum())


def make_estimator(candidate: CandidateSpec, spec: PipelineSpec, seed: int = 0) -> Any:
    """A scikit-learn pipeline: impute + one-hot encode, then the candidate's regressor."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = numeric_feature_columns(spec)
    categorical = spec.features.categorical
    transformers: list[tuple[str, Any, list[str]]] = [
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric)
    ]
    if categorical:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        transformers.append(("categorical", encoder, categorical))
    return Pipeline([("prepare", ColumnTransformer(transformers)), ("regressor", _regressor(candidate, seed))])


def _regressor(candidate: CandidateSpec, seed: int = 0) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import Ridge

    regressors = {
        "hist_gradient_boosting": lambda: HistGradientBoostingRegressor(random_state=seed),
        "random_forest": lambda: RandomForestRegressor(random_state=seed, n_jobs=1),
        "ridge": Ridge,
    }
    return regressors[candidate.family]().set_params(**candidate.params)


def check_candidates(spec: PipelineSpec) -> None:
    """Refuse a candidate whose params its estimator does not have or does not accept, naming the spec's file and
    field: checked before anything trains (scikit-learn only checks values once `fit` runs, inside a Ray task)."""
    for index, candidate in enumerate(spec.training.candidates):
        where = f"invalid pipeline spec {spec.file}: training.candidates.{index}.params"
        known = _regressor(CandidateSpec(family=candidate.family)).get_params()
        if unknown := sorted(set(candidate.params) - set(known)):
            raise CandidateParamsError(
                f"{where}: {candidate.family} has no parameter(s) {unknown}; it has {sorted(known)}"
            )
        try:
            # What `fit` runs first; public since scikit-learn 1.2 in all but name.
            _regressor(candidate)._validate_params()
        except ValueError as exc:
            raise CandidateParamsError(f"{where}: {exc}") from exc


def train_candidate(
    candidate: CandidateSpec, train: pd.DataFrame, holdout: pd.DataFrame, spec: PipelineSpec
) -> CandidateResult:
    """Fit one candidate on the training rows and score it on the hold-out (a Ray task)."""
    columns = feature_columns(spec)
    model = make_estimator(candidate, spec)
    model.fit(train[columns], train[spec.target].to_numpy(dtype="float64"))
    predicted = predict(model, holdout, spec)
    metrics = forecast_metrics(holdout[spec.target].to_numpy(dtype="float64"), predicted)
    return CandidateResult(candidate, model, metrics, os.getpid())


def refit(candidate: CandidateSpec, split: WindowSplit, spec: PipelineSpec) -> Any:
    """The chosen candidate fitted again on the whole window, hold-out included (a Ray task): the model registered
    and served has seen every day up to its partition; the hold-out scores that chose it were taken before."""
    rows = _concat([split.train, split.holdout])
    model = make_estimator(candidate, spec)
    model.fit(rows[feature_columns(spec)], rows[spec.target].to_numpy(dtype="float64"))
    return model


def predict(model: Any, frame: pd.DataFrame, spec: PipelineSpec) -> np.ndarray:
    """Predictions clipped at 0: demand is never negative."""
    return np.clip(np.asarray(model.predict(frame[feature_columns(spec)]), dtype="float64"), 0, None)


def best_candidate(results: list[CandidateResult]) -> CandidateResult:
    """Lowest hold-out MAE wins; ties go to the earlier candidate in the spec."""
    return min(results, key=lambda r: r.metrics.mae)


def feature_importance(model: Any, holdout: pd.DataFrame, spec: PipelineSpec, seed: int = 0) -> dict[str, float]:
    """Permutation importance on the hold-out: the same measure for every model family."""
    from sklearn.inspection import permutation_importance

    columns = feature_columns(spec)
    result = permutation_importance(
        model,
        holdout[columns],
        holdout[spec.target].to_numpy(dtype="float64"),
        scoring="neg_mean_absolute_error",
        n_repeats=3,
        random_state=seed,
    )
    means = result["importances_mean"]
    return {column: float(value) for column, value in zip(columns, means, strict=True)}


def holdout_frame(holdout: pd.DataFrame, predicted: np.ndarray, spec: PipelineSpec) -> pd.DataFrame:
    """Timestamp, entity, actual, forecast and baseline of the hold-out rows (for plots and reports)."""
    columns = [TIMESTAMP, *spec.source.entity_columns]
    out = holdout[columns].copy()
    out["actual"] = holdout[spec.target].to_numpy(dtype="float64")
    out["forecast"] = predicted
    out["baseline"] = seasonal_naive(holdout, spec.evaluation.baseline_season_hours)
    return out


def predict_day(model: Any, features: pd.DataFrame, spec: PipelineSpec, lineage: dict[str, str]) -> pd.DataFrame:
    """Forecasts for one day of feature rows, each row carrying the model's lineage (a Ray task)."""
    out = features[[TIMESTAMP, *spec.source.entity_columns]].copy()
    out["prediction"] = predict(model, features, spec) if len(features) else np.array([], dtype="float64")
    out["actual"] = features[spec.target].to_numpy(dtype="float64")
    for key, value in lineage.items():
        out[key] = pd.Series([value] * len(out), index=out.index, dtype="str")
    out["worker_pid"] = os.getpid()
    return out
