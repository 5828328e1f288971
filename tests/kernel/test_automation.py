"""Automation conditions on the real graph, driven by `evaluate_automation_conditions`.

Freshness states are injected the way the freshness daemon writes them (a runless
`FreshnessStateChange`), so every evaluation is deterministic.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
from conftest import BIKE_CSV, PipelineFactory, bike_spec_document
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange
from support import check_results, corrupt_day, landed, run_range

NAME = "bike_auto"
FIRST, LATEST = "2012-04-20", "2012-06-20"


def spec(source: Path) -> dict[str, object]:
    return bike_spec_document(
        name=NAME,
        source={"uri": str(source)},
        partitioning={"start_date": FIRST, "end_date": "2012-06-21", "rebase_to_yesterday": False},
        training={"window_days": 56, "candidates": [{"family": "hist_gradient_boosting", "params": {"max_iter": 100}}]},
        promotion={"min_improvement_over_baseline": 0.0},
    )


def key(stage: str) -> dg.AssetKey:
    return dg.AssetKey([NAME, stage])


def set_freshness(instance: dg.DagsterInstance, stage: str, new: FreshnessState, previous: FreshnessState) -> None:
    """Record a freshness state change exactly as the FreshnessDaemon does."""
    change = FreshnessStateChange(
        key=key(stage), new_state=new, previous_state=previous, state_change_timestamp=time.time()
    )
    instance._report_runless_asset_event(asset_event=change)


class Evaluator:
    """Successive automation ticks that carry the cursor, like the automation sensor."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.defs, self.instance = defs, instance
        self.cursor: dg.AutomationConditionCursor | None = None  # type: ignore[name-defined]

    def tick(self) -> dict[str, set[str]]:
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        requested = {}
        for stage in ("raw", "features", "model", "champion", "predictions", "backtest", "backtest_report"):
            if result.get_num_requested(key(stage)):
                partitions = result.get_requested_partitions(key(stage))
                requested[stage] = {str(p) for p in partitions if p is not None} or {"(unpartitioned)"}
        return requested


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    source = tmp_path / "landing" / "hour.csv"
    source.parent.mkdir()
    shutil.copy(BIKE_CSV, source)
    return source


def test_a_fresh_start_builds_the_latest_day_through_the_graph(
    make_defs: PipelineFactory, landing: Path, ray_address: str
) -> None:
    defs = make_defs(spec(landing), home=landing.parent.parent / "home")
    instance = dg.DagsterInstance.ephemeral()
    ticks = Evaluator(defs, instance)

    # The first tick sets the baseline; the landing sensor, not automation, brings the first raw data.
    assert ticks.tick() == {}

    assert run_range(defs, ["raw", "features"], NAME, (FIRST, LATEST), instance).success
    assert ticks.tick() == {"model": {LATEST}}

    model_run = run_range(defs, ["model"], NAME, (LATEST, LATEST), instance)
    assert check_results(model_run)["beats_seasonal_naive"].passed
    assert ticks.tick() == {"champion": {"(unpartitioned)"}, "backtest_report": {"(unpartitioned)"}}


@pytest.fixture
def fresh_features(make_defs: PipelineFactory, landing: Path, ray_address: str) -> tuple[dg.DagsterInstance, Evaluator]:
    """Raw and features built for the last ten days, and a first automation tick taken."""
    defs = make_defs(spec(landing), home=landing.parent.parent / "home")
    instance = dg.DagsterInstance.ephemeral()
    assert run_range(defs, ["raw", "features"], NAME, ("2012-06-10", LATEST), instance).success
    ticks = Evaluator(defs, instance)
    ticks.tick()
    return instance, ticks


def test_freshness_warn_then_fail_each_request_the_latest_partition_once(
    fresh_features: tuple[dg.DagsterInstance, Evaluator],
) -> None:
    instance, ticks = fresh_features

    set_freshness(instance, "features", FreshnessState.WARN, FreshnessState.PASS)
    assert ticks.tick().get("features") == {LATEST}
    assert "features" not in ticks.tick(), "WARN that stays WARN is handled once"

    set_freshness(instance, "features", FreshnessState.FAIL, FreshnessState.WARN)
    assert ticks.tick().get("features") == {LATEST}, "FAIL after WARN acts as a retry"

    set_freshness(instance, "features", FreshnessState.PASS, FreshnessState.FAIL)
    assert "features" not in ticks.tick()


def test_a_failed_blocking_check_upstream_stops_freshness_runs(
    fresh_features: tuple[dg.DagsterInstance, Evaluator], landing: Path
) -> None:
    instance, ticks = fresh_features

    corrupt_day(BIKE_CSV, landing, LATEST)
    corrupted = run_range(ticks.defs, ["raw"], NAME, (LATEST, LATEST), instance, tags=landed(landing))
    assert not check_results(corrupted)["passes_expectations"].passed

    set_freshness(instance, "features", FreshnessState.WARN, FreshnessState.PASS)
    assert "features" not in ticks.tick(), "features must not be rebuilt on top of data that failed its checks"


def test_a_rejected_day_inside_the_look_back_stops_freshness_runs_of_the_days_that_need_it(
    fresh_features: tuple[dg.DagsterInstance, Evaluator], landing: Path
) -> None:
    instance, ticks = fresh_features
    inside = "2012-06-16"  # in the latest day's 8-day look-back, not the latest day itself

    corrupt_day(BIKE_CSV, landing, inside)
    corrupted = run_range(ticks.defs, ["raw"], NAME, (inside, inside), instance, tags=landed(landing))
    assert corrupted.success and not check_results(corrupted)["passes_expectations"].passed

    set_freshness(instance, "features", FreshnessState.WARN, FreshnessState.PASS)
    assert "features" not in ticks.tick(), "the latest day's features need every day of their look-back to pass"


def test_a_backtest_day_is_requested_once_a_model_trained_before_it_exists(
    fresh_features: tuple[dg.DagsterInstance, Evaluator],
) -> None:
    instance, ticks = fresh_features
    assert "backtest" not in ticks.tick(), "no model partition yet: nothing to score, and nothing is trained for it"

    yesterday = "2012-06-19"
    assert run_range(ticks.defs, ["model"], NAME, (yesterday, yesterday), instance).success
    requested = ticks.tick()
    assert requested.get("backtest") == {LATEST}, "only the day after the model's window, not the days it trained on"
    assert "model" not in requested
    assert "backtest" not in ticks.tick(), "requested once"
