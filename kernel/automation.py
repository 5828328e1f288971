"""Automation conditions: freshness-driven refreshes, first builds, never past failed blocking checks."""

from typing import Any, cast

import dagster as dg

AC = dg.AutomationCondition
# Dagster's condition generics cannot express mixing asset-scoped and asset-or-check-scoped
# conditions in one expression (fine at runtime); one alias keeps the checker quiet about it.
Condition = dg.AutomationCondition[Any]


def every_dep_day_passed() -> Condition:
    """Every upstream day this partition reads passed its blocking checks (a missing verdict is not a pass).

    Dagster's `all_deps_blocking_checks_passed()` maps a windowed dependency's passing days back downstream,
    so one passing day in a look-back window is enough for it; features need their whole look-back.
    """
    return ~AC.any_deps_match(AC.any_checks_match(~AC.check_passed(), blocking_only=True))


def _guarded(trigger: Condition, label: str, checks: Condition | None = None) -> Condition:
    guard: Condition = ~AC.in_progress() & ~AC.any_deps_in_progress()
    return (trigger & guard & checks if checks is not None else trigger & guard).with_label(label)


def freshness_trigger() -> Condition:
    """Edge-triggered: fires when the freshness daemon moves the asset to WARN, and again to FAIL."""
    changed = cast(Condition, AC.freshness_warned().newly_true() | AC.freshness_failed().newly_true())
    return changed.since_last_handled()


def buildable_missing() -> Condition:
    """Missing with every dependency present, on the edge: once, not on every tick until it succeeds.

    The first evaluation only sets a baseline; after that a partition counts when it appears or
    when its dependencies arrive (the landing sensor brings the first raw data).
    """
    buildable = cast(Condition, AC.missing() & ~AC.any_deps_missing())
    return buildable.newly_true().since_last_handled()


def upstream_changed(ignore: dg.AssetKey | None = None) -> Condition:
    """Built before a day it reads was materialised again (what Dagster's UI shows as stale, "upstream changed"):
    once, on the edge, after the input is stored (Dagster's `any_deps_updated` also fires when an input is about to be
    requested, which starts this run beside the input's, reading the old bytes). An input materialised by a run that
    built this partition after it does not count (the update resets it), nor does `ignore` (predictions do not
    re-predict every past day when the champion changes). Dagster's `executed_with_root_target` is not used: it
    ignores the input for every partition of an asset that run touched, so the days after a re-landed day (in the
    input's window, not in the run) would never be rebuilt."""
    updated = AC.any_deps_match(AC.newly_updated())
    if ignore is not None:
        updated = updated.ignore(dg.AssetSelection.assets(ignore))
    return cast(Condition, updated & ~AC.missing()).since_last_handled()


def fresh_latest_partition(*, whole_window: bool = True, ignore: dg.AssetKey | None = None) -> Condition:
    """For daily assets: build the latest partition once it can be built, and again when it goes stale by the clock;
    rebuild any partition built before an upstream day it reads changed; never past a rejected upstream day.
    With `whole_window=False` (a model, which tolerates some rejected days of its window and checks that tolerance
    itself) one passing upstream day is enough to try, and only the latest partition is rebuilt when upstream
    changes: retraining older model partitions is a backfill, the user's choice (the UI shows them stale)."""
    stale: Condition = freshness_trigger() & ~AC.any_deps_missing()
    latest: Condition = AC.in_latest_time_window() & (buildable_missing() | stale)
    if whole_window:
        return _guarded(latest | upstream_changed(ignore), "freshness_driven", every_dep_day_passed())
    latest = AC.in_latest_time_window() & (buildable_missing() | stale | upstream_changed(ignore))
    return _guarded(latest, "freshness_driven", AC.all_deps_blocking_checks_passed())


def missing_latest_partition() -> Condition:
    """For raw data: build the latest partition once when it appears."""
    return _guarded(AC.in_latest_time_window() & buildable_missing(), "missing_latest", every_dep_day_passed())


def after_upstream_update() -> Condition:
    """For unpartitioned assets over all model partitions (champion, report): follow new upstream
    materialisations; they judge each partition's gates themselves, so one failed day never stops them."""
    updated = cast(Condition, AC.any_deps_updated())
    return _guarded(updated.since_last_handled(), "after_upstream_update")


def scorable_missing(forecasters: dg.AssetKey) -> Condition:
    """For the backtest: a day not yet scored once its features day and every model partition that forecasts it
    exist and at least one does, on the edge; any day, not only the latest, so a backfill of model partitions is
    followed by their backtest days (and nothing is trained for it); and a scored day again once its features day or
    a model partition that forecasts it is materialised again."""
    some_model = AC.any_deps_match(~AC.missing()).allow(dg.AssetSelection.assets(forecasters))
    scorable = cast(Condition, AC.missing() & ~AC.any_deps_missing() & some_model)
    return _guarded(scorable.newly_true().since_last_handled() | upstream_changed(), "scorable_missing")
