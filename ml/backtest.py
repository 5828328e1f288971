"""Walk-forward backtest: model partitions scored on days after their own window (out of sample), the track record.

Model partition d is trained on the window ending d. It forecasts day e (a day-ahead forecast from e's features)
for d in [e - horizon, e - 1], never d >= e: a day inside a model's own window is never scored for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from kernel import series
from kernel.spec import PipelineSpec, PromotionSpec
from ml import training

SCORE_COLUMNS = [
    "day",
    "partition",
    "version",
    "horizon_days",
    "champion",
    "passed_gates",
    "rows",
    "excluded_rows",
    "mae",
    "baseline_mae",
    "series",
]
# The `series` of a row scored over every series of the day (the only rows of a single-series pipeline).
POOLED = ""
ROLLING_DAYS = 28


class LookAheadError(ValueError):
    """A model asked to score a day inside (or before the end of) its own training window."""


class NothingToScore(ValueError):
    """A day with no hour that has both an actual and a baseline."""


@dataclass(frozen=True)
class Forecaster:
    """A model partition scored on a later day: the last day of its window, its version, its fitted model."""

    partition: date
    version: str
    model: Any
    champion: bool = False
    passed_gates: bool = True


def covering_partitions(day: date, horizon_days: int) -> list[date]:
    """The model partitions whose horizon reaches `day`: the `horizon_days` days before it, newest first."""
    return [day - timedelta(days=k) for k in range(1, horizon_days + 1)]


def score_day(day: date, features: pd.DataFrame, forecasters: Sequence[Forecaster], spec: PipelineSpec) -> pd.DataFrame:
    """One row per forecaster: its MAE on `day`'s hours and the seasonal-naive baseline's on the same hours (`series`
    `POOLED`); with entity columns, then one row per forecaster and series on that series' hours.

    Hours without an actual (or a baseline) are left out of every row and counted in `excluded_rows`. Raises
    `LookAheadError` for a forecaster whose window reaches `day` and `NothingToScore` when no hour is usable.
    """
    if inside := [f for f in forecasters if f.partition >= day]:
        raise LookAheadError(
            f"{day}: model partition(s) {[str(f.partition) for f in inside]} trained on windows that reach this day"
        )
    actual = features[spec.target].to_numpy(dtype="float64", na_value=np.nan)
    baseline = training.seasonal_naive(features, spec.evaluation.baseline_season_hours)
    usable = np.isfinite(actual) & np.isfinite(baseline)
    if not usable.any():
        raise NothingToScore(f"{day}: none of {len(features)} hours has an actual and a baseline")
    kept = features[usable]
    labels = series.labels(features, spec.source.entity_columns).to_numpy()
    named = sorted(set(labels)) if spec.source.entity_columns else []
    rows = []
    for forecaster in forecasters:
        predicted = training.predict(forecaster.model, kept, spec)
        common = {
            "day": str(day),
            "partition": str(forecaster.partition),
            "version": forecaster.version,
            "horizon_days": (day - forecaster.partition).days,
            "champion": forecaster.champion,
            "passed_gates": forecaster.passed_gates,
        }
        groups = [(POOLED, np.ones(len(features), dtype=bool))] + [(label, labels == label) for label in named]
        for label, members in groups:
            used = members[usable]  # this series' scored hours among the kept ones
            if not used.any():
                continue
            rows.append(
                common
                | {
                    "rows": int(used.sum()),
                    "excluded_rows": int((members & ~usable).sum()),
                    "mae": float(np.mean(np.abs(predicted[used] - actual[usable][used]))),
                    "baseline_mae": float(np.mean(np.abs(baseline[usable][used] - actual[usable][used]))),
                    "series": label,
                }
            )
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def pooled(scores: pd.DataFrame) -> pd.DataFrame:
    """The rows scored over every series of their day (scores stored before per-series rows are all pooled)."""
    return scores[scores["series"].fillna(POOLED) == POOLED] if "series" in scores else scores


def daily_models(scores: pd.DataFrame) -> pd.DataFrame:
    """Per day, the freshest model partition scored on it (the one daily retraining would serve), over all series."""
    ranked = pooled(scores).sort_values(["day", "horizon_days"])
    return ranked.drop_duplicates("day", keep="first").set_index("day")


def _weighted(frame: pd.DataFrame, column: str) -> float:
    return float((frame[column] * frame["rows"]).sum() / frame["rows"].sum())


def improvement(frame: pd.DataFrame) -> float:
    """1 - model MAE / baseline MAE over every hour of the frame's rows (days weighted by their hours)."""
    return 1 - _weighted(frame, "mae") / _weighted(frame, "baseline_mae")


def summary(scores: pd.DataFrame, rolling_days: int = ROLLING_DAYS) -> pd.DataFrame:
    """Per scored day: the daily model's and the baseline's MAE, its improvement, the improvement over the last
    `rolling_days` days (hour-weighted), the champion's MAE when it was scored, and how many models were scored."""
    scores = pooled(scores)
    daily = daily_models(scores)
    out = pd.DataFrame(index=pd.to_datetime(daily.index))
    out["model_mae"] = daily["mae"].to_numpy()
    out["baseline_mae"] = daily["baseline_mae"].to_numpy()
    out["rows"] = daily["rows"].to_numpy()
    out["excluded_rows"] = daily["excluded_rows"].to_numpy()
    out["improvement"] = 1 - out["model_mae"] / out["baseline_mae"]
    window = f"{rolling_days}D"
    error = (out["model_mae"] * out["rows"]).rolling(window).sum()
    base = (out["baseline_mae"] * out["rows"]).rolling(window).sum()
    out[f"improvement_{rolling_days}d"] = 1 - error / base
    champion = scores[scores["champion"]].drop_duplicates("day").set_index("day")["mae"]
    out["champion_mae"] = champion.reindex(daily.index).to_numpy()
    out["models_scored"] = scores.groupby("day").size().reindex(daily.index).to_numpy()
    out.index.name = "day"
    return out


def per_series(scores: pd.DataFrame) -> pd.DataFrame:
    """Per series, and pooled: the daily models' out-of-sample MAE and the baseline's over every scored hour of that
    series (days weighted by their hours), and the improvement; empty for a single-series pipeline."""
    if "series" not in scores or not (scores["series"].fillna(POOLED) != POOLED).any():
        return pd.DataFrame(columns=["series", "rows", "model_mae", "baseline_mae", "improvement"])
    ranked = scores.assign(series=scores["series"].fillna(POOLED)).sort_values(["day", "series", "horizon_days"])
    daily = ranked.drop_duplicates(["day", "series"], keep="first")
    out = []
    for label, group in daily.groupby("series", sort=True):
        model, base = _weighted(group, "mae"), _weighted(group, "baseline_mae")
        name = "pooled" if label == POOLED else str(label)
        out.append({"series": name, "rows": int(group["rows"].sum()), "model_mae": model, "baseline_mae": base})
    table = pd.DataFrame(out)
    table["improvement"] = 1 - table["model_mae"] / table["baseline_mae"]
    return pd.concat([table[table["series"] != "pooled"], table[table["series"] == "pooled"]], ignore_index=True)


@dataclass(frozen=True)
class TrackRecord:
    """The daily models' out-of-sample record over the last scored days, against the baseline and the champion."""

    days: list[str]
    model_mae: float
    baseline_mae: float
    champion_mae: float | None
    model_mae_on_champion_days: float | None

    @property
    def improvement(self) -> float:
        return 1 - self.model_mae / self.baseline_mae


def track_record(scores: pd.DataFrame, days: int) -> TrackRecord | None:
    """The record over the last `days` scored days of `scores` (None when nothing was scored)."""
    scores = pooled(scores)
    if scores.empty:
        return None
    last = sorted(scores["day"].unique())[-days:]
    recent = scores[scores["day"].isin(last)]
    daily = daily_models(recent)
    champion = recent[recent["champion"]].drop_duplicates("day")
    on_champion_days = daily.loc[champion["day"]] if len(champion) else None
    return TrackRecord(
        days=[str(day) for day in last],
        model_mae=_weighted(daily, "mae"),
        baseline_mae=_weighted(daily, "baseline_mae"),
        champion_mae=_weighted(champion, "mae") if len(champion) else None,
        model_mae_on_champion_days=_weighted(on_champion_days, "mae") if on_champion_days is not None else None,
    )


def judge_track_record(record: TrackRecord | None, days: int, promotion: PromotionSpec) -> tuple[bool, str]:
    """Whether the track record allows a promotion, and why not: too few scored days, not enough better than the
    baseline, or worse than the champion beyond the allowed regression on the days the champion was scored."""
    scored = 0 if record is None else len(record.days)
    if record is None or scored < days:
        return False, f"track record too short: {scored} of promotion.track_record_days={days} days scored"
    needed = promotion.min_improvement_over_baseline
    if record.improvement < needed:
        return False, (
            f"out-of-sample MAE {record.model_mae:.3f} over {scored} days is {record.improvement:.1%} below the "
            f"baseline's {record.baseline_mae:.3f}, not the {needed:.0%} promotion.min_improvement_over_baseline"
        )
    allowed = promotion.max_regression_vs_champion
    champion, own = record.champion_mae, record.model_mae_on_champion_days
    if champion is not None and own is not None and own > (1 + allowed) * champion:
        return False, (
            f"out-of-sample MAE {own:.3f} is more than {allowed:.0%} above the champion's {champion:.3f} on the "
            "days it was scored"
        )
    return True, ""
