"""The automation-condition sensor, RUNNING by default so `dagster dev` keeps assets fresh out of the box."""

from __future__ import annotations

import dagster as dg

automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates every asset's automation condition (freshness, missing latest partition).",
)
