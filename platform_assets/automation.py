"""Automation conditions: freshness-driven refreshes, first builds, never past failed blocking checks."""

import dagster as dg

AC = dg.AutomationCondition


def _guarded(trigger: dg.AutomationCondition) -> dg.AutomationCondition:
    return trigger & ~AC.in_progress() & ~AC.any_deps_in_progress() & AC.all_deps_blocking_checks_passed()


def freshness_trigger() -> dg.AutomationCondition:
    """Edge-triggered: fires when the freshness daemon moves the asset to WARN, and again to FAIL."""
    return (AC.freshness_warned().newly_true() | AC.freshness_failed().newly_true()).since_last_handled()


def buildable_missing() -> dg.AutomationCondition:
    """Missing with every dependency present, on the edge: once, not on every tick until it succeeds.

    Unlike `AC.on_missing()`, a partition that was already missing when the condition was first
    evaluated still counts once its dependencies arrive, so a fresh start builds the newest day.
    """
    return (AC.missing() & ~AC.any_deps_missing()).newly_true().since_last_handled()


def fresh_latest_partition() -> dg.AutomationCondition:
    """For daily assets: build the latest partition once it can be built, and again when it goes stale."""
    trigger = AC.in_latest_time_window() & (buildable_missing() | (freshness_trigger() & ~AC.any_deps_missing()))
    return _guarded(trigger).with_label("freshness_driven")


def missing_latest_partition() -> dg.AutomationCondition:
    """For raw data: build the latest partition once when it appears."""
    return _guarded(AC.in_latest_time_window() & buildable_missing()).with_label("missing_latest")


def after_upstream_update() -> dg.AutomationCondition:
    """For unpartitioned assets (champion, report): follow new upstream materialisations once checks pass."""
    return _guarded(AC.any_deps_updated().since_last_handled()).with_label("after_upstream_update")
