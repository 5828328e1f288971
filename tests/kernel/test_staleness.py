"""A corrected upstream day: Dagster shows every downstream day whose window holds it stale, and automation
rebuilds exactly those days, once, never the days outside the window."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from conftest import BIKE_CSV, PipelineFactory
from support import correct_day, landed, run_range, stale_causes
from test_automation import NAME, Evaluator, key, spec

FIRST, LAST = "2012-06-01", "2012-06-20"
CORRECTED = "2012-06-10"


def holding(defs: dg.Definitions) -> set[str]:
    """The feature days whose raw window holds the corrected day, from the graph's own partition mapping."""
    graph = defs.resolve_asset_graph()
    mapping = graph.get_partition_mapping(key("features"), key("raw"))
    assert isinstance(mapping, dg.TimeWindowPartitionMapping)
    days = pd.date_range(CORRECTED, periods=1 - mapping.start_offset).strftime("%Y-%m-%d")
    assert len(days) > 2 and days[-1] < LAST, "the window must end inside the built days for the test to mean much"
    return set(days)


def stale_days(defs: dg.Definitions, instance: dg.DagsterInstance, stage: str) -> dict[str, str]:
    """Day -> the first stale cause Dagster's UI shows for it, for the stale days among FIRST..LAST."""
    return stale_causes(defs, instance, key(stage), list(pd.date_range(FIRST, LAST).strftime("%Y-%m-%d")))


@pytest.fixture
def built(make_defs: PipelineFactory, tmp_path: Path, ray_address: str) -> tuple[dg.Definitions, Path, Evaluator]:
    source = tmp_path / "landing" / "hour.csv"
    source.parent.mkdir()
    shutil.copy(BIKE_CSV, source)
    defs = make_defs(spec(source), home=tmp_path / "home")
    ticks = Evaluator(defs, dg.DagsterInstance.ephemeral())
    assert run_range(defs, ["raw", "features"], NAME, (FIRST, LAST), ticks.instance).success
    assert ticks.tick() == {}
    return defs, source, ticks


def test_a_corrected_raw_day_makes_the_feature_days_holding_it_stale_and_automation_rebuilds_them_once(
    built: tuple[dg.Definitions, Path, Evaluator],
) -> None:
    defs, source, ticks = built
    assert stale_days(defs, ticks.instance, "features") == {}
    expected = holding(defs)

    correct_day(BIKE_CSV, source, CORRECTED)
    assert run_range(defs, ["raw"], NAME, (CORRECTED, CORRECTED), ticks.instance, tags=landed(source)).success

    stale = stale_days(defs, ticks.instance, "features")
    assert set(stale) == expected, "exactly the days whose look-back holds the corrected day"
    assert all(cause.endswith(CORRECTED) for cause in stale.values()), stale

    requested = ticks.tick()
    assert requested == {"features": expected}, "rebuild the stale days, nothing else (the raw day is not redone)"
    assert ticks.tick() == {}, "requested once, not on every tick until it runs"

    days = sorted(expected)
    assert run_range(defs, ["features"], NAME, (days[0], days[-1]), ticks.instance).success
    assert stale_days(defs, ticks.instance, "features") == {}
    assert ticks.tick() == {}, "a rebuild that changed nothing upstream of it requests nothing more"


def test_a_raw_day_rebuilt_with_its_features_in_one_run_leaves_nothing_stale_inside_the_run(
    built: tuple[dg.Definitions, Path, Evaluator],
) -> None:
    defs, source, ticks = built
    correct_day(BIKE_CSV, source, CORRECTED)
    landing_run = run_range(
        defs, ["raw", "features"], NAME, (CORRECTED, CORRECTED), ticks.instance, tags=landed(source)
    )
    assert landing_run.success

    followers = holding(defs) - {CORRECTED}
    stale = stale_days(defs, ticks.instance, "features")
    assert set(stale) == followers, "the day rebuilt with its raw day is current; its followers are not"
    assert ticks.tick() == {"features": followers}
