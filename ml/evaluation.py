"""Evaluation of a model partition's best candidate: forecasts, baseline, metrics, importances and plots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from kernel import series
from kernel.records import ChampionScore, Metrics, Rejected, SeriesScore
from kernel.schema import TIMESTAMP
from kernel.spec import PipelineSpec
from ml import plots, training


@dataclass(frozen=True)
class Evaluation:
    """The winning candidate of one window, scored on its hold-out, with the pictures that explain it."""

    best: training.CandidateResult
    baseline: Metrics
    importances: dict[str, float]
    non_finite_predictions: int
    images: dict[str, bytes]
    champion: ChampionScore | None
    per_series: dict[str, SeriesScore] = field(default_factory=dict)


def evaluate(
    results: list[training.CandidateResult],
    split: training.WindowSplit,
    spec: PipelineSpec,
    champion: tuple[Any, str, date] | None = None,
) -> Evaluation:
    """Pick the best candidate; score it, the seasonal-naive baseline and the serving champion (model, version,
    partition), when there is one, on the window's hold-out."""
    best = training.best_candidate(results)
    holdout = split.holdout
    predicted = training.predict(best.model, holdout, spec)
    actual = holdout[spec.target].to_numpy(dtype="float64")
    baseline = training.forecast_metrics(
        actual, training.seasonal_naive(holdout, spec.evaluation.baseline_season_hours)
    )
    frame = training.holdout_frame(holdout, predicted, spec)
    importances = training.feature_importance(best.model, holdout, spec)
    images = {
        "forecast_vs_actual.png": plots.forecast_vs_actual(frame),
        "residuals.png": plots.residuals(frame),
        "feature_importance.png": plots.importance(importances),
    }
    return Evaluation(
        best=best,
        baseline=baseline,
        importances=importances,
        non_finite_predictions=int((~np.isfinite(predicted)).sum()),
        images=images,
        champion=None if champion is None else score_champion(*champion, holdout, predicted=predicted, spec=spec),
        per_series=per_series(holdout, predicted, spec),
    )


def per_series(holdout: pd.DataFrame, predicted: np.ndarray, spec: PipelineSpec) -> dict[str, SeriesScore]:
    """The model's and the seasonal-naive baseline's errors on each series' hold-out rows (none for a single series:
    the pooled figures are its own)."""
    if not spec.source.entity_columns:
        return {}
    actual = holdout[spec.target].to_numpy(dtype="float64")
    baseline = training.seasonal_naive(holdout, spec.evaluation.baseline_season_hours)
    labels = series.labels(holdout, spec.source.entity_columns).to_numpy()
    scores = {}
    for label in sorted(set(labels)):
        rows = labels == label
        scores[str(label)] = SeriesScore(
            rows=int(rows.sum()),
            metrics=training.forecast_metrics(actual[rows], predicted[rows]),
            baseline=training.forecast_metrics(actual[rows], baseline[rows]),
        )
    return scores


def evaluate_and_refit(
    results: list[training.CandidateResult],
    split: training.WindowSplit,
    spec: PipelineSpec,
    champion: tuple[Any, str, date] | None = None,
) -> tuple[Evaluation, Any]:
    """`evaluate`, then the best candidate refitted on the whole window (a Ray task: permutation importance and the
    refit are most of a model partition's work after training)."""
    evaluation = evaluate(results, split, spec, champion)
    return evaluation, training.refit(evaluation.best.candidate, split, spec)


@dataclass(frozen=True)
class TrainedWindow:
    """A model partition trained, evaluated and refitted, as it is logged: the split's summary, every candidate's
    scores and the evaluation (their fitted models dropped: only the refitted `model` is logged and served)."""

    split: training.SplitSummary
    results: list[training.CandidateResult]
    evaluation: Evaluation
    model: Any


def train_window(
    frames: Mapping[str, pd.DataFrame | Rejected],
    end_day: date,
    spec: PipelineSpec,
    champion: tuple[Any, str, date] | None = None,
) -> TrainedWindow:
    """The window ending `end_day` split (`training.split_window`: a `TrainingDataError` for a bad window), every
    candidate trained on it in turn, then the best evaluated and refitted (`evaluate_and_refit`)."""
    split = training.split_window(frames, end_day, spec)
    results = [training.train_candidate(c, split.train, split.holdout, spec) for c in spec.training.candidates]
    evaluation, model = evaluate_and_refit(results, split, spec, champion)
    best = replace(evaluation.best, model=None)
    return TrainedWindow(
        split.summary(), [replace(r, model=None) for r in results], replace(evaluation, best=best), model
    )


def score_champion(
    champion: Any, version: str, partition: date, holdout: pd.DataFrame, *, predicted: np.ndarray, spec: PipelineSpec
) -> ChampionScore:
    """The serving champion's MAE and the candidate's (`predicted`) on the hold-out hours after the champion's own
    window (hours it was trained on would flatter it), or why they cannot be compared."""
    after_window = (holdout[TIMESTAMP].dt.date > partition).to_numpy()
    after = holdout[after_window]
    if after.empty:
        return ChampionScore(
            version=version,
            comparable=False,
            reason=f"champion's window (ending {partition}) covers this whole hold-out: no day to score it out of "
            "sample",
        )
    try:
        served = training.predict(champion, after, spec)
    except (KeyError, ValueError) as exc:
        return ChampionScore(
            version=version, comparable=False, reason=f"champion cannot score this window's features: {exc}"
        )
    actual = after[spec.target].to_numpy(dtype="float64")
    return ChampionScore(
        version=version,
        comparable=True,
        mae=training.forecast_metrics(actual, served).mae,
        candidate_mae=training.forecast_metrics(actual, predicted[after_window]).mae,
        hours=len(after),
    )
