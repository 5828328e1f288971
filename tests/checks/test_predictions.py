"""Prediction checks on hours whose actual the source left empty: they say nothing about the plausible range."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.quality import PLAUSIBLE_FACTOR, plausible_range


def predictions(forecast: list[float], actual: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"prediction": forecast, "actual": actual})


def test_the_range_comes_from_the_known_actuals_only() -> None:
    frame = predictions([10.0, 20.0, 31.0], [10.0, np.nan, 10.0])
    verdict = plausible_range(frame, ceiling=None)
    assert not verdict.passed
    assert verdict.metadata["limit"] == PLAUSIBLE_FACTOR * 10.0
    assert verdict.reason == f"largest prediction 31.0 > {PLAUSIBLE_FACTOR * 10.0:.1f}"


def test_a_day_without_any_known_actual_is_judged_by_the_spec_max_or_not_at_all() -> None:
    frame = predictions([10.0, 900.0], [np.nan, np.nan])
    assert plausible_range(frame, ceiling=None).passed
    assert plausible_range(frame, ceiling=None).metadata == {"note": "no known actuals and no spec max to compare with"}
    capped = plausible_range(frame, ceiling=500.0)
    assert not capped.passed
    assert capped.metadata["max_prediction"] == 900.0
