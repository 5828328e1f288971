"""The spec study: variants are applied without touching the shipped spec, and its walk-forward never looks ahead."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import BIKE_CSV, BIKE_SPEC

from benchmarks import spec_study
from kernel.spec import load_spec
from ml import training


def test_a_variant_sets_nested_fields_on_a_copy() -> None:
    document = yaml.safe_load(BIKE_SPEC.read_text())
    varied = spec_study.apply(document, "training.window_days=180; evaluation.horizon_days=2; features.x.y=[1, 2]")
    assert varied["training"]["window_days"] == 180
    assert varied["evaluation"]["horizon_days"] == 2
    assert varied["features"]["x"] == {"y": [1, 2]}
    assert document == yaml.safe_load(BIKE_SPEC.read_text())


def test_the_walk_forward_scores_each_day_with_a_model_whose_window_ended_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = pd.read_csv(BIKE_CSV)
    source = tmp_path / "hour.csv"
    rows[pd.to_datetime(rows["dteday"], format="%m/%d/%y").between("2012-05-01", "2012-06-30")].to_csv(source)
    small = "training.window_days=21; evaluation.holdout_days=3; training.candidates=[{family: ridge}]"
    document = spec_study.apply(yaml.safe_load(BIKE_SPEC.read_text()), f"{small}; source.uri={source}")
    (tmp_path / "bike.yaml").write_text(yaml.safe_dump(document))
    spec = load_spec(tmp_path / "bike.yaml")
    days = spec_study.feature_days(spec)
    windows: list[date] = []
    split_window = training.split_window

    def recorded(frames: dict[str, pd.DataFrame], end_day: date, spec: object) -> training.WindowSplit:
        windows.append(end_day)
        return split_window(frames, end_day, spec)  # type: ignore[arg-type]

    monkeypatch.setattr(training, "split_window", recorded)
    first, last = date(2012, 6, 10), date(2012, 6, 30)
    improvement = spec_study.walk_forward(spec, days, first, last, every=7)
    assert windows == [first - timedelta(days=1) + timedelta(days=7 * k) for k in range(3)]
    assert -1 < improvement < 1
