"""Typed records that several layers read: a trained model partition and the promoted champion.

They are stored as JSON by the asset store and validated back on read, so a reader never guesses keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def many(cls, stored: Mapping[str, Any]) -> dict[str, Self]:
        """Stored values keyed by partition, validated into records."""
        return {key: cls.model_validate(value) for key, value in stored.items()}


class Metrics(_Record):
    """Forecast errors on one set of rows."""

    mae: float
    rmse: float
    smape: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}mae": self.mae, f"{prefix}rmse": self.rmse, f"{prefix}smape": self.smape}


class CandidateScore(_Record):
    """One candidate of the spec's grid and its hold-out MAE."""

    family: str
    mae: float


class ChampionScore(_Record):
    """The serving champion and the candidate scored on the same hold-out hours (those after the champion's own
    window), when there are such hours and the champion's features allow it."""

    version: str
    comparable: bool
    mae: float | None = None
    candidate_mae: float | None = None
    hours: int | None = None
    reason: str | None = None


class SeriesScore(_Record):
    """One series of a multi-series hold-out: its rows, the model's errors and the baseline's on them."""

    rows: int
    metrics: Metrics
    baseline: Metrics


class ModelRecord(_Record):
    """One model partition: the registered version, its metrics and baseline, and its full lineage."""

    pipeline: str
    partition: str
    model_name: str
    version: str
    mlflow_run_id: str
    experiment_id: str
    model_uri: str
    family: str
    params: dict[str, float | int | str | None]
    metrics: Metrics
    baseline: Metrics
    candidates: list[CandidateScore]
    non_finite_predictions: int
    train_days: list[str]
    holdout_days: list[str]
    missing_days: list[str]
    rejected_days: list[str] = []
    missing_target_rows: int = 0
    train_rows: int
    holdout_rows: int
    dagster_run_id: str
    # sha256 of the registered model file: what `MlflowTracking.load_verified` checks before loading it.
    artifact_sha256: str | None = None
    ray_worker_pids: list[int]
    champion: ChampionScore | None = None
    # The fingerprint of each feature day it trained and was evaluated on, as read: a day whose stored bytes carry
    # another fingerprint now makes the model stale (empty: trained before these were recorded).
    features_fingerprints: dict[str, str | None] = {}
    # Multi-series: the hold-out scored per series (pooled: `metrics`, `baseline`), and the series-days of the window
    # left out because their day's verdict rejected them (day -> series label -> reason).
    metrics_per_series: dict[str, SeriesScore] = {}
    series_left_out: dict[str, dict[str, str]] = {}

    @property
    def training_window(self) -> str:
        return f"{self.train_days[0]}..{self.holdout_days[-1]}"

    @property
    def improvement_over_baseline(self) -> float:
        return 1 - self.metrics.mae / self.baseline.mae


class ChampionRecord(_Record):
    """The model version that serves predictions, and the one it replaced (for rollback)."""

    model_name: str
    version: str
    mlflow_run_id: str
    model_uri: str
    partition: str
    previous_champion: str | None

    @property
    def lineage(self) -> dict[str, str]:
        """What every prediction row carries about the model that made it."""
        return {"model_name": self.model_name, "model_version": self.version, "mlflow_run_id": self.mlflow_run_id}


class Rejected(_Record):
    """A day that is not built, or not usable, because its data or the data it needs was rejected; says why."""

    rejected: Literal[True] = True
    day: str
    reason: str
