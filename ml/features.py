"""Feature engineering for hourly series: calendar parts, target lags and rolling stats.

Lags are computed on a complete hourly grid per entity, so gaps in the source give missing
lags (never a value from the wrong hour). Rows without their full history are dropped and
counted: a model never trains or predicts on a half-built row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from kernel.schema import TIMESTAMP, timestamp_dtype
from kernel.spec import PipelineSpec

CALENDAR_PARTS = {
    "hour": lambda ts: ts.dt.hour,
    "day_of_week": lambda ts: ts.dt.day_of_week,
    "month": lambda ts: ts.dt.month,
    "day_of_year": lambda ts: ts.dt.day_of_year,
}


@dataclass
class FeatureResult:
    """Feature rows of one day, how many rows lacked the history to be built (or repeated an hour already
    built), and which process built them."""

    frame: pd.DataFrame
    dropped_rows: int
    duplicate_rows: int = 0
    worker_pid: int = field(default_factory=os.getpid)


def lag_column(hours: int) -> str:
    return f"lag_{hours}h"


def rolling_column(window_hours: int, stat: str) -> str:
    return f"rolling_{stat}_{window_hours}h"


def event_lag_column(column: str, hours: int) -> str:
    return f"{column}_lag_{hours}h"


def event_columns(spec: PipelineSpec) -> list[str]:
    """Event features: each event column spread over its day, then its lagged copies (when asked for)."""
    f = spec.features
    lagged = [event_lag_column(e.column, h) for e in f.events if e.lagged for h in f.target_lags_hours]
    return [*(e.column for e in f.events), *lagged]


def numeric_feature_columns(spec: PipelineSpec) -> list[str]:
    """Model inputs that are numbers, in a stable order."""
    f = spec.features
    return [
        *f.numeric,
        *f.calendar,
        *(lag_column(h) for h in f.target_lags_hours),
        *(rolling_column(r.window_hours, r.stat) for r in f.rolling),
        *event_columns(spec),
    ]


def feature_columns(spec: PipelineSpec) -> list[str]:
    """All model inputs: numeric first, then categorical."""
    return [*numeric_feature_columns(spec), *spec.features.categorical]


def feature_schema(spec: PipelineSpec) -> dict[str, str]:
    """Column name -> dtype of a features partition; the contract the schema check enforces."""
    schema = {TIMESTAMP: timestamp_dtype(spec)}
    schema |= {column: "str" for column in spec.source.entity_columns}
    schema[spec.target] = "float64"
    schema |= {column: "float64" for column in numeric_feature_columns(spec)}
    schema |= {column: "str" for column in spec.features.categorical}
    return schema


def _history_for_entity(group: pd.DataFrame, spec: PipelineSpec) -> pd.DataFrame:
    target = group.set_index(TIMESTAMP)[spec.target]
    grid = target.asfreq("h")
    history = pd.DataFrame(index=grid.index)
    for hours in spec.features.target_lags_hours:
        history[lag_column(hours)] = grid.shift(hours)
    lagged = grid.shift(spec.features.min_lag_hours)
    for rolling in spec.features.rolling:
        window = lagged.rolling(rolling.window_hours, min_periods=max(1, rolling.window_hours // 2))
        history[rolling_column(rolling.window_hours, rolling.stat)] = getattr(window, rolling.stat)()
    for event in spec.features.events:
        # A marker on any hour of a day holds for the whole day; a day without a marker (or without rows) is 0.
        marks = group[event.column].fillna(0).ne(0).to_numpy(dtype="float64")
        # Keyed by calendar date in the partitions' zone (flooring a tz-aware time to midnight fails where a DST
        # change skips midnight).
        by_day = pd.Series(marks, index=group[TIMESTAMP].dt.date.to_numpy()).groupby(level=0).max()
        grid_days = pd.DatetimeIndex(grid.index).date
        spread = pd.Series(by_day.reindex(grid_days).fillna(0).to_numpy(dtype="float64"), index=grid.index)
        history[event.column] = spread
        for hours in spec.features.target_lags_hours if event.lagged else []:
            history[event_lag_column(event.column, hours)] = spread.shift(hours).fillna(0)
    return history


def build_features(window: pd.DataFrame, day: date, spec: PipelineSpec) -> FeatureResult:
    """Features for the rows of `day`, using `window` (raw rows of that day and its look-back)."""
    entities = spec.source.entity_columns
    schema = feature_schema(spec)
    day_mask = window[TIMESTAMP].dt.date == day
    if not day_mask.any():
        return FeatureResult(_empty(schema), 0)

    parts, duplicates = [], 0
    groups = window.groupby(entities, sort=False) if entities else [((), window)]
    for _, group in groups:
        # One row per hour (the spec's duplicates policy has already merged them unless it is 'error' with the
        # uniqueness expectation off): an hour counted twice would weigh twice in training and metrics.
        unique = group.drop_duplicates(TIMESTAMP, keep="last")
        history = _history_for_entity(unique, spec)
        rows = unique[unique[TIMESTAMP].dt.date == day].drop(columns=[e.column for e in spec.features.events])
        duplicates += int((group[TIMESTAMP].dt.date == day).sum()) - len(rows)
        parts.append(rows.join(history, on=TIMESTAMP))
    frame = pd.concat(parts, ignore_index=True)
    for name in spec.features.calendar:
        frame[name] = CALENDAR_PARTS[name](frame[TIMESTAMP])

    frame = frame[list(schema)].astype(schema)
    required = [c for c in numeric_feature_columns(spec) if c not in spec.features.numeric]
    complete = frame[required].notna().all(axis=1) if required else pd.Series(True, index=frame.index)
    kept = frame[complete].sort_values([*entities, TIMESTAMP]).reset_index(drop=True)
    return FeatureResult(kept, int((~complete).sum()), duplicates)


def _empty(schema: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series([], dtype=dtype) for column, dtype in schema.items()})


def non_finite_counts(frame: pd.DataFrame, spec: PipelineSpec) -> dict[str, int]:
    """Per numeric feature column, how many values are NaN or infinite."""
    counts = {}
    for column in numeric_feature_columns(spec):
        values = frame[column].to_numpy(dtype="float64", na_value=np.nan)
        counts[column] = int((~np.isfinite(values)).sum())
    return counts


@dataclass(frozen=True)
class ReferenceBins:
    """A reference distribution binned once for `population_stability`, however many days are compared with it: its
    bin edges and each bin's share; `constant` is its one value when it has no spread, `empty` when it has no values."""

    edges: np.ndarray
    shares: np.ndarray
    constant: float | None = None
    empty: bool = False


def reference_bins(reference: pd.Series, bins: int = 10) -> ReferenceBins:
    """`reference` cut at its quantiles into (at most) `bins` bins, the outer ones open-ended."""
    ref = reference.dropna().to_numpy(dtype="float64")
    if len(ref) == 0:
        return ReferenceBins(np.empty(0), np.empty(0), empty=True)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return ReferenceBins(edges, np.empty(0), constant=float(ref[0]))
    edges[0], edges[-1] = -np.inf, np.inf
    shares = np.clip(np.histogram(ref, edges)[0] / len(ref), 1e-4, None)
    return ReferenceBins(edges, shares)


def population_stability(reference: pd.Series | ReferenceBins, current: pd.Series, bins: int = 10) -> float:
    """Population stability index of `current` against `reference` (0 = same distribution); a reference compared
    with many days is binned once (`reference_bins`)."""
    binned = reference if isinstance(reference, ReferenceBins) else reference_bins(reference, bins)
    cur = current.dropna().to_numpy(dtype="float64")
    if binned.empty or len(cur) == 0:
        return float("nan")
    if binned.constant is not None:
        return 0.0 if np.allclose(cur, binned.constant) else float("inf")
    # `np.histogram`'s bins (closed on the left, the last on both sides) without its set-up, paid per column and day.
    bins_of = np.minimum(np.searchsorted(binned.edges, cur, side="right") - 1, len(binned.shares) - 1)
    cur_share = np.clip(np.bincount(bins_of, minlength=len(binned.shares)) / len(cur), 1e-4, None)
    return float(np.sum((cur_share - binned.shares) * np.log(cur_share / binned.shares)))
