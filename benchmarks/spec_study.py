"""Compare spec variants out of sample in minutes: the platform's `ml` functions without Dagster, Ray or MLflow.

    .venv/bin/python benchmarks/spec_study.py pipelines/bike_demand.yaml --every 7 \\
        --variant 'training.window_days=90' --variant 'training.window_days=180'

Each variant (dotted spec fields set to YAML values, `;`-separated; the first variant is the spec as it is) is
walked forward over the data's last `--days` days: a model is trained (best candidate on the hold-out, refitted on
the whole window, as `<p>/model` does) on the window ending day d every `--every` days and forecasts each next
day until the following one; the improvement is 1 - MAE / seasonal naive's MAE over every scored hour. With
`--every 1` it is what `make bench-oos` measures through Dagster; larger steps trade a little fidelity (models a
few days stale) for time. Nothing is written: it prints a table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernel.paths import PROJECT_ROOT
from kernel.schema import TIMESTAMP
from kernel.spec import PipelineSpec, load_spec
from ml import features, ingest, training


def apply(document: dict[str, Any], assignments: str) -> dict[str, Any]:
    """`a.b=1; c=[2, 3]` set on a copy of the spec document (values parsed as YAML)."""
    out = yaml.safe_load(yaml.safe_dump(document))
    for assignment in filter(None, (a.strip() for a in assignments.split(";"))):
        path, _, value = assignment.partition("=")
        *parents, leaf = path.strip().split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = yaml.safe_load(value)
    return out


def feature_days(spec: PipelineSpec) -> dict[str, pd.DataFrame]:
    """Every day's feature rows, built from the spec's source files as `<p>/raw` and `<p>/features` would."""
    frames = [
        ingest.normalise(ingest.read_source_file(f.path, spec, PROJECT_ROOT), spec, f.path).frame
        for f in ingest.list_source_files(spec.source.uri, PROJECT_ROOT)
    ]
    raw = ingest.collapse_duplicates(pd.concat(frames, ignore_index=True), spec).frame
    lookback = timedelta(days=-(-spec.features.lookback_hours // 24))
    day_of = raw[TIMESTAMP].dt.date
    return {
        str(day): features.build_features(raw[(day_of >= day - lookback) & (day_of <= day)], day, spec).frame
        for day in ingest.days_in(raw)
    }


def walk_forward(spec: PipelineSpec, days: dict[str, pd.DataFrame], first: date, last: date, every: int) -> float:
    """Out-of-sample improvement over seasonal naive on first..last, retraining every `every` days."""
    model_errors, baseline_errors = 0.0, 0.0
    model: Any = None
    for index, day in enumerate(pd.date_range(first, last).date):
        if index % every == 0:
            split = training.split_window(days, day - timedelta(days=1), spec)
            results = [training.train_candidate(c, split.train, split.holdout, spec) for c in spec.training.candidates]
            model = training.refit(training.best_candidate(results).candidate, split, spec)
        frame = days.get(str(day))
        if frame is None or frame.empty:
            continue
        actual = frame[spec.target].to_numpy(dtype="float64", na_value=np.nan)
        baseline = training.seasonal_naive(frame, spec.evaluation.baseline_season_hours)
        usable = np.isfinite(actual) & np.isfinite(baseline)
        predicted = training.predict(model, frame[usable], spec)
        model_errors += float(np.abs(predicted - actual[usable]).sum())
        baseline_errors += float(np.abs(baseline[usable] - actual[usable]).sum())
    return 1 - model_errors / baseline_errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=Path)
    parser.add_argument("--variant", action="append", default=[], help="`field.path=value; ...` (repeatable)")
    parser.add_argument("--days", type=int, default=365, help="forecast days scored, ending on the data's last day")
    parser.add_argument("--every", type=int, default=7, help="retrain every N days (1 = daily, as the platform)")
    args = parser.parse_args()
    document = yaml.safe_load(args.spec.read_text())
    print(f"{'variant':60s} {'improvement':>11s} {'seconds':>8s}")
    for assignments in ["", *args.variant]:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / args.spec.name
            path.write_text(yaml.safe_dump(apply(document, assignments)))
            spec = load_spec(path)
        days = feature_days(spec)
        last = max(date.fromisoformat(day) for day in days)
        improvement = walk_forward(spec, days, last - timedelta(days=args.days - 1), last, args.every)
        label = assignments or "(as shipped)"
        print(f"{label:60.60s} {improvement:11.1%} {time.perf_counter() - started:8.0f}", flush=True)


if __name__ == "__main__":
    main()
