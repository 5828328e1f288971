"""`<p>/features`: model inputs per day, built from the raw look-back window as Ray tasks."""

from datetime import date
from typing import TYPE_CHECKING

import dagster as dg
from dagster_ray import RayResource

from kernel import automation, series
from kernel.days import window_ending
from kernel.frames import Frame
from kernel.metadata import frame_metadata
from kernel.pipeline import Pipeline, run_days
from kernel.records import Rejected
from resources.compute import ray_map

if TYPE_CHECKING:
    import pandas as pd


def window_for(
    raw: "dict[str, pd.DataFrame | Rejected]", day: date, lookback_days: int, entities: list[str]
) -> "pd.DataFrame | Rejected":
    """Raw rows of `day` and the days before it that were loaded, or why the day cannot be built: a day of
    its look-back was rejected. A series rejected on a day of the look-back is left out of the whole window (its
    features would be built on a hole), named with the reason in the window's `attrs`."""
    import pandas as pd

    days = [str(d) for d in window_ending(day, lookback_days + 1)]
    loaded = [raw[d] for d in days if d in raw]
    if rejected := [value.reason for value in loaded if isinstance(value, Rejected)]:
        return Rejected(day=str(day), reason=f"look-back day(s) rejected upstream: {'; '.join(rejected)}")
    frames = [value for value in loaded if isinstance(value, pd.DataFrame)]
    left_out = {label: why for frame in frames for label, why in series.left_out(frame).items()}
    window = pd.concat(frames, ignore_index=True)
    window.attrs = {}
    return series.without(window, entities, left_out)


def build(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @pipeline.asset(
        "features",
        description=f"Hourly {spec.name} model inputs: calendar parts, target lags and rolling stats.",
        kinds={"ray", "pandas", "parquet"},
        compute=spec.compute.default,
        ins={"raw": pipeline.window_input("raw", pipeline.lookback_days + 1)},
        automation_condition=automation.fresh_latest_partition(),
    )
    def features(
        context: dg.AssetExecutionContext, ray_cluster: RayResource, raw: dict[str, Frame | Rejected]
    ) -> dg.Output[dict[str, Frame | Rejected]]:
        """Hourly model inputs: calendar parts, target lags and rolling stats."""
        import pandas as pd

        from ml import features as feature_fns

        days = run_days(context)
        if missing := [str(day) for day in days if str(day) not in raw]:
            raise dg.Failure(f"{pipeline.key('raw').to_user_string()} is not materialised for {missing}")
        entities = spec.source.entity_columns
        windows = {day: window_for(raw, day, pipeline.lookback_days, entities) for day in days}
        rejected = {str(day): w for day, w in windows.items() if isinstance(w, Rejected)}
        calls = [(w, day, spec) for day, w in windows.items() if not isinstance(w, Rejected)]
        results = ray_map(
            feature_fns.build_features,
            calls,
            num_cpus=spec.compute.ray_cpus_per_task,
            timeout=spec.compute.ray_task_timeout_seconds,
            progress=context.log.info,
        )
        built = {str(day): result.frame for (_, day, _), result in zip(calls, results, strict=True)}
        left_out = {str(day): series.left_out(w) for day, w in windows.items() if isinstance(w, pd.DataFrame)}
        for day, dropped in left_out.items():
            built[day].attrs[series.SERIES_LEFT_OUT] = dropped  # stored with the day's bytes: training names them
        metadata = frame_metadata(pd.concat(built.values(), ignore_index=True)) if built else {}
        metadata |= {
            "days_built": len(built),
            "days_rejected": len(rejected),
            "rejected_days": dg.MetadataValue.json({d: r.reason for d, r in rejected.items()}),
            "series_days_left_out": sum(len(dropped) for dropped in left_out.values()),
            "series_left_out": dg.MetadataValue.json({d: dropped for d, dropped in left_out.items() if dropped}),
            "rows_without_history": sum(r.dropped_rows for r in results),
            "duplicate_hours_dropped": sum(r.duplicate_rows for r in results),
            "rows_missing_target": sum(int(r.frame[spec.target].isna().sum()) for r in results),
            "ray_tasks": len(results),
            "ray_worker_pids": dg.MetadataValue.json(sorted({r.worker_pid for r in results})),
            "ray_cluster": ray_cluster.name,
        }
        values = {str(day): built[str(day)] if str(day) in built else rejected[str(day)] for day in days}
        return dg.Output(values, metadata=metadata)

    return features
