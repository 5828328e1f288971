"""Helpers the tests share: running pipeline stages in-process and reading what a run did."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from kernel.names import RANGE_END, RANGE_START


def run_range(
    defs: dg.Definitions, stages: list[str], pipeline: str, days: tuple[str, str], instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    """Materialise `stages` of a pipeline for the days first..last in one run, as a backfill would."""
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey([pipeline, stage]) for stage in stages],
        tags={RANGE_START: days[0], RANGE_END: days[1]},
        raise_on_error=False,
    )


def run_unpartitioned(
    defs: dg.Definitions, stages: list[str], pipeline: str, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey([pipeline, stage]) for stage in stages], raise_on_error=False
    )


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """Check name -> evaluation, for every check the run executed."""
    evaluations = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            assert isinstance(data, dg.AssetCheckEvaluation)
            evaluations[data.check_name] = data
    return evaluations


def materialized_keys(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        event.asset_key.to_user_string()
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None
    }


def corrupt_day(source: Path, target: Path, day: str) -> None:
    """Copy the bike CSV, breaking one day: a negative count and a temperature that is not a number."""
    frame = pd.read_csv(source)
    month, dom, year = (int(p) for p in pd.Timestamp(day).strftime("%m %d %y").split())
    rows = frame["dteday"] == f"{month}/{dom}/{year}"
    assert rows.any()
    frame["temp"] = frame["temp"].astype("object")
    frame.loc[rows, "cnt"] = -50
    frame.loc[rows.idxmax(), "temp"] = "oops"
    frame.to_csv(target, index=False)
