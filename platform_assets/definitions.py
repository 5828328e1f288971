"""The code location: loads every pipeline spec and wires assets, checks, sensors, resources and policy."""

from __future__ import annotations

from datetime import date

import dagster as dg

from kernel.pipeline import Pipeline, pinned_shift_days
from kernel.settings import Settings
from kernel.spec import PipelineSpec, load_specs
from platform_assets.factory import build_pipeline
from platform_assets.wiring import build_wiring
from sensors import unfinished_writes
from sensors.alerts import run_failure_alert
from sensors.automation import automation_sensor
from sensors.mlflow_runs import mlflow_runs_of_failed_runs


def _pipeline(spec: PipelineSpec, settings: Settings, today: date) -> Pipeline:
    # Rebasing is a local convenience for the sample data: its pin is a file in the local state
    # folder, which production pods do not share, so production keeps the data's own dates.
    partitioning = spec.partitioning
    shift = 0
    if settings.env == "local" and partitioning.rebase_to_yesterday and partitioning.end_date is not None:
        last_day = date.fromordinal(partitioning.end_date.toordinal() - 1)
        shift = pinned_shift_days(spec.name, last_day, settings.state.rebase, today)
    return Pipeline(spec=spec, root=settings.root, shift_days=shift)


def build_definitions(settings: Settings, today: date | None = None) -> dg.Definitions:
    """All pipelines of `settings.specs_dir` plus the platform-wide sensors and resources."""
    today = today or date.today()
    specs = load_specs(settings.specs_dir)
    wiring = build_wiring(settings, specs)
    assets, checks, jobs, sensors = (
        [],
        [],
        [],
        [
            automation_sensor,
            run_failure_alert,
            mlflow_runs_of_failed_runs,
            unfinished_writes.build(wiring.store),
            *wiring.sensors,
        ],
    )
    for spec in specs:
        built = build_pipeline(_pipeline(spec, settings, today), wiring.store, settings.quarantine_uri)
        assets += built.assets
        checks += built.checks
        sensors += built.sensors
        jobs += built.jobs
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        sensors=sensors,
        resources=wiring.resources,
        executor=wiring.executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Dagster's entry point: settings are read when the location loads, not at import."""
    return build_definitions(Settings.from_environment())
