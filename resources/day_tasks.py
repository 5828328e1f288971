"""Ray tasks of a range run that move the data themselves: each reads its batch of days from the asset store, builds
them with the `ml` functions and writes the results back, returning only what the run's metadata needs (the model's
task writes nothing: it returns each day's evaluation and refitted model, which the step logs to MLflow).

The step that submits them holds references (`StoredDay`: the key, the judged fingerprint, the rejected series) and
these small results, never a day's rows: its memory does not grow with the range, and a second Ray node brings its
own reads and writes. A task reads a day only if its bytes are still those the day gate judged (`read_judged`).

A task that writes features or predictions also judges each day it writes, with the checks' own `ml.quality`
functions on the frame it holds, and returns the verdicts with what it wrote (`Written.verdicts`): the run's check
step records them without reading the day back, and the judging runs on every node, beside the work.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from kernel import series
from kernel.days import window_ending
from kernel.frames import FrameShape
from kernel.names import FINGERPRINT
from kernel.records import Rejected
from kernel.spec import PipelineSpec
from resources.store import AssetStore, StoredDay, Written

if TYPE_CHECKING:
    import pandas as pd

    from ml.evaluation import TrainedWindow
    from ml.features import ReferenceBins
    from ml.training import TrainingWindow


@dataclass(frozen=True)
class DayBuilt:
    """One day a task built (written by the task) or could not build (the reason; the step stores it)."""

    day: str
    value: Written | Rejected
    shape: FrameShape | None = None
    dropped_rows: int = 0
    duplicate_rows: int = 0
    missing_target_rows: int = 0
    left_out: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchDone:
    """A task's days, and where it ran (the process and the Ray node)."""

    days: list[DayBuilt]
    worker_pid: int
    node_id: str


def window_for(
    raw: Mapping[str, pd.DataFrame | Rejected], day: date, lookback_days: int, entities: Sequence[str]
) -> pd.DataFrame | Rejected:
    """Raw rows of `day` and the days before it that were loaded, or why the day cannot be built: a day of
    its look-back was rejected. A series rejected on a day of the look-back is left out of the whole window (its
    features would be built on a hole), named with the reason in the window's `attrs`."""
    import pandas as pd

    days = [str(d) for d in window_ending(day, lookback_days + 1)]
    loaded = [raw[d] for d in days if d in raw]
    if rejected := [value.reason for value in loaded if isinstance(value, Rejected)]:
        return Rejected(day=str(day), reason=f"look-back day(s) rejected upstream: {'; '.join(rejected)}")
    frames = [value for value in loaded if isinstance(value, pd.DataFrame)]
    left_out = {label: why for frame in frames for label, why in series.left_out(frame).items()}
    window = pd.concat(frames, ignore_index=True)
    window.attrs = {}
    return series.without(window, entities, left_out)


@dataclass(frozen=True)
class DayBatch:
    """One task's share of a range run: the days it builds into `output` (the asset's key), and its inputs by
    reference (every stored upstream day their windows hold; a day the gate rejected as `Rejected`)."""

    store: AssetStore
    output: tuple[str, ...]
    days: list[str]
    inputs: Mapping[str, StoredDay | Rejected]


def drift_reference(
    store: AssetStore, key: Sequence[str], first_day: date, spec: PipelineSpec
) -> dict[str, ReferenceBins] | None:
    """The drift check's reference for a run whose first day is `first_day`: each numeric feature of the training
    window of stored features before it, binned (None: no stored day in that window)."""
    from ml.features import numeric_feature_columns
    from ml.quality import reference_window

    window = [str(d) for d in window_ending(first_day - timedelta(days=1), spec.training.window_days)]
    return reference_window(store.read_columns(key, window, numeric_feature_columns(spec)), spec)


def build_feature_days(
    batch: DayBatch, lookback_days: int, spec: PipelineSpec, reference: Mapping[str, ReferenceBins] | None
) -> BatchDone:
    """Features of the batch's days from their raw look-back windows, each written to the store and judged by the
    features checks (`reference`: the drift check's); a day whose window holds a rejected day, or a day replaced
    since it was judged, is returned rejected with the reason instead."""
    import ray

    from ml.features import build_features
    from ml.quality import judge_features

    entities = spec.source.entity_columns
    store = batch.store
    loaded = {
        day: ref if isinstance(ref, Rejected) else store.read_judged(ref, entities) for day, ref in batch.inputs.items()
    }
    built: list[DayBuilt] = []
    for day in batch.days:
        window = window_for(loaded, date.fromisoformat(day), lookback_days, entities)
        if isinstance(window, Rejected):
            built.append(DayBuilt(day, Rejected(day=day, reason=window.reason)))
            continue
        result = build_features(window, date.fromisoformat(day), spec)
        left_out = series.left_out(window)
        result.frame.attrs[series.SERIES_LEFT_OUT] = left_out  # stored with the day's bytes: training names them
        built.append(
            DayBuilt(
                day,
                replace(
                    store.write(batch.output, day, result.frame), verdicts=judge_features(result.frame, spec, reference)
                ),
                FrameShape.of(result.frame),
                dropped_rows=result.dropped_rows,
                duplicate_rows=result.duplicate_rows,
                missing_target_rows=int(result.frame[spec.target].isna().sum()),
                left_out=left_out,
            )
        )
    return BatchDone(built, os.getpid(), ray.get_runtime_context().get_node_id())


def predict_days(batch: DayBatch, model: Any, spec: PipelineSpec, lineage: Mapping[str, str]) -> BatchDone:
    """Forecasts of the batch's days from their features (read by reference), each written to the store with the
    model's lineage on every row and judged by the predictions checks; a day whose features were rejected, or
    replaced since judged, is returned rejected."""
    import ray

    from ml.quality import judge_predictions
    from ml.training import predict_day

    built: list[DayBuilt] = []
    for day in batch.days:
        ref = batch.inputs[day]
        features = ref if isinstance(ref, Rejected) else batch.store.read_judged(ref, spec.source.entity_columns)
        if isinstance(features, Rejected):
            reason = f"not predicted: features rejected ({features.reason})"
            built.append(DayBuilt(day, Rejected(day=day, reason=reason)))
            continue
        frame = predict_day(model, features, spec, dict(lineage))
        written = replace(
            batch.store.write(batch.output, day, frame), verdicts=judge_predictions(frame, len(features), spec)
        )
        built.append(DayBuilt(day, written, FrameShape.of(frame)))
    return BatchDone(built, os.getpid(), ray.get_runtime_context().get_node_id())


@dataclass(frozen=True)
class DayTrained:
    """One model day a task trained (its window trained, evaluated and refitted, and the fingerprint of each feature
    day it trained and was evaluated on, as read) or could not train (the reason; the step stores it)."""

    day: str
    value: TrainedWindow | Rejected
    features_fingerprints: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchTrained:
    """A model task's days, and where it ran (the process and the Ray node)."""

    days: list[DayTrained]
    worker_pid: int
    node_id: str


def train_model_days(batch: DayBatch, spec: PipelineSpec, champion: tuple[Any, str, date] | None) -> BatchTrained:
    """The batch's model days, each from the feature days of its window (read by reference once for the whole batch):
    the window split, every candidate trained, the best evaluated against the baseline and `champion` and refitted. A
    bad window (too many rejected days, a feature day replaced since it was judged counting as one; too few rows)
    rejects its own day, named like the model asset."""
    import ray

    from ml.evaluation import train_window
    from ml.training import TrainingDataError

    entities = spec.source.entity_columns
    loaded = {
        day: ref if isinstance(ref, Rejected) else batch.store.read_judged(ref, entities)
        for day, ref in batch.inputs.items()
    }
    trained: list[DayTrained] = []
    for day in batch.days:
        try:
            window = train_window(loaded, date.fromisoformat(day), spec, champion)
        except TrainingDataError as exc:
            trained.append(DayTrained(day, Rejected(day=day, reason=f"{'/'.join(batch.output)}: {exc}")))
            continue
        trained.append(DayTrained(day, window, read_from(loaded, window.split.window)))
    return BatchTrained(trained, os.getpid(), ray.get_runtime_context().get_node_id())


def read_from(loaded: Mapping[str, pd.DataFrame | Rejected], window: TrainingWindow) -> dict[str, str | None]:
    """The fingerprint of each feature day a model trained and was evaluated on: that of the bytes `read_judged` read
    (and found to be the judged ones)."""
    import pandas as pd

    return {
        day: frame.attrs.get(FINGERPRINT) if isinstance(frame := loaded[day], pd.DataFrame) else None
        for day in (*window.train_days, *window.holdout_days)
    }
