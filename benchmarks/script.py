"""The plain-script side of (a): the platform's pure functions (`ml.*`) called in order, without Dagster.

It must not import Dagster (nor `kernel.pipeline` or `resources.storage`, which do): a "cold" script is
timed as a whole process. So the main process hands it what the platform derives with Dagster loaded:
the features' look-back in days (`Pipeline.lookback_days`) and the champion record read from the store.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import PIPELINE, preimport_heavy, rusage_mb
from kernel.days import day_range, window_ending

if TYPE_CHECKING:
    import pandas as pd

# Model days trained, evaluated and refitted together, as the model asset does (its `DAYS_PER_ROUND`).
MODEL_DAYS_PER_ROUND = 16


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), str(path))


def worker_script(args: Mapping[str, Any]) -> dict[str, Any]:
    """The same compute as a plain script: read+normalise+split, features per day, predict per day, write parquet.

    `warm`: heavy imports happen before the clock (compare with `execute_in_process`); otherwise the
    main process times the whole subprocess (compare with the CLI-equivalent run).
    """
    clock_start = time.perf_counter()
    imports = preimport_heavy() if args["warm"] else {}
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        phases[name] = round(phases.get(name, 0.0) + now - since, 3)
        return now

    import pandas as pd

    from kernel.records import ChampionRecord
    from kernel.settings import Settings
    from kernel.spec import load_spec
    from ml import features as feature_fns
    from ml import ingest, training

    settings = Settings.from_environment()
    specs_dir = Path(args["specs_dir"]) if args.get("specs_dir") else settings.specs_dir
    spec = load_spec(specs_dir / f"{args.get('pipeline', PIPELINE)}.yaml")
    predict = bool(args.get("predict", True))  # (h) stops at features
    first, last = date.fromisoformat(args["first"]), date.fromisoformat(args["last"])
    days = day_range(first, last)
    lookback = int(args["lookback_days"])
    out = Path(args["out_dir"])
    use_ray = args["mode"] == "ray"
    t = lap("imports", started)

    files = ingest.list_source_files(spec.source.uri, settings.root)
    frame = pd.concat(
        [ingest.normalise(ingest.read_source_file(f.path, spec, settings.root), spec, f.path).frame for f in files],
        ignore_index=True,
    )
    raw = ingest.split_days(frame, day_range(first - timedelta(days=lookback), last), spec)
    t = lap("read_normalise_split", t)
    for day in days:
        _write_parquet(raw[str(day)], out / "raw" / f"{day}.parquet")
    t = lap("write", t)

    def window(day: date) -> pd.DataFrame:
        keys = [str(d) for d in window_ending(day, lookback + 1)]
        return pd.concat([raw[k] for k in keys if k in raw], ignore_index=True)

    if use_ray:
        import ray

        from resources.compute import ray_map

        ray.init(address=os.environ["RAY_ADDRESS"], logging_level=logging.WARNING)
        t = lap("ray_connect", t)
        feature_results = ray_map(
            feature_fns.build_features,
            [(window(d), d, spec) for d in days],
            num_cpus=spec.compute.ray_cpus_per_task,
            timeout=spec.compute.ray_task_timeout_seconds,
        )
    else:
        feature_results = [feature_fns.build_features(window(d), d, spec) for d in days]
    features = {str(d): r.frame for d, r in zip(days, feature_results, strict=True)}
    t = lap("features", t)
    for day in days:
        _write_parquet(features[str(day)], out / "features" / f"{day}.parquet")
    t = lap("write", t)
    if not predict:
        return _finished(started, clock_start, imports, phases, {"features": sum(len(f) for f in features.values())})

    import mlflow.sklearn

    t = lap("import_mlflow", t)
    champion = ChampionRecord.model_validate(args["champion"])
    mlflow.set_tracking_uri(settings.state.tracking_uri)
    mlflow.set_registry_uri(settings.state.tracking_uri)
    model = mlflow.sklearn.load_model(champion.model_uri)
    lineage = champion.lineage
    t = lap("load_model", t)
    if use_ray:
        from resources.compute import ray_map

        predictions = ray_map(
            training.predict_day,
            [(model, features[str(d)], spec, lineage) for d in days],
            num_cpus=spec.compute.ray_cpus_per_task,
            timeout=spec.compute.ray_task_timeout_seconds,
        )
    else:
        predictions = [training.predict_day(model, features[str(d)], spec, lineage) for d in days]
    t = lap("predict", t)
    for day, frame_ in zip(days, predictions, strict=True):
        _write_parquet(frame_, out / "predictions" / f"{day}.parquet")
    t = lap("write", t)
    if use_ray:
        import ray

        ray.shutdown()
        lap("ray_shutdown", t)
    rows = {"features": sum(len(f) for f in features.values()), "predictions": sum(len(p) for p in predictions)}
    return _finished(started, clock_start, imports, phases, rows)


def _finished(
    started: float,
    clock_start: float,
    imports: Mapping[str, float],
    phases: Mapping[str, float],
    rows: Mapping[str, int],
) -> dict[str, Any]:
    finished = time.perf_counter()
    return {
        "wall_s": round(finished - started, 2),
        "in_process_total_s": round(finished - clock_start, 2),
        "compute_only_s": round(finished - started - phases.get("write", 0.0), 2),
        "preimport_s": imports,
        "phases": phases,
        "rows": rows,
        **rusage_mb(),
    }


def worker_model_compute(args: Mapping[str, Any]) -> dict[str, Any]:
    """(oos) The model backfill's compute alone: the model asset's own Ray task (`day_tasks.train_model_days`: each
    batch of consecutive days reads its feature windows from the store, splits each window, trains every candidate,
    evaluates and refits the best) through the platform's `ray_map`, in rounds and batches as the model asset makes
    them. No MLflow, no Dagster, no day gate (each stored day is passed with the fingerprint its file carries); the
    whole process is timed by the main process."""
    import ray

    from kernel.paths import StatePaths
    from kernel.records import Rejected
    from kernel.spec import load_spec
    from resources import day_tasks
    from resources.compute import day_batches, ray_map
    from resources.store import AssetStore, StoredDay

    clock = time.perf_counter()
    spec = load_spec(Path(os.environ["PLATFORM_SPECS_DIR"]) / f"{args['pipeline']}.yaml")
    store, key = AssetStore(str(StatePaths(Path(os.environ["PLATFORM_HOME"])).assets)), (spec.name, "features")
    first, last = date.fromisoformat(args["models_first"]), date.fromisoformat(args["models_last"])
    window = [str(d) for d in window_ending(last, spec.training.window_days + (last - first).days)]
    features = {day: StoredDay(key, day, store.fingerprint(key, day)) for day in window if store.exists(key, day)}
    read_s = time.perf_counter() - clock
    ray.init(address=os.environ["RAY_ADDRESS"], logging_level=logging.WARNING)
    compute = spec.compute
    days, trained, rejected = [str(d) for d in day_range(first, last)], 0, 0
    for start in range(0, len(days), MODEL_DAYS_PER_ROUND):
        calls = []
        for batch in day_batches(days[start : start + MODEL_DAYS_PER_ROUND], compute.ray_days_per_task):
            since = str(date.fromisoformat(batch[0]) - timedelta(days=spec.training.window_days - 1))
            needed: dict[str, StoredDay | Rejected] = {d: r for d, r in features.items() if since <= d <= batch[-1]}
            calls.append((day_tasks.DayBatch(store, (spec.name, "model"), batch, needed), spec, None))
        done = ray_map(
            day_tasks.train_model_days,
            calls,
            num_cpus=compute.ray_cpus_per_task,
            resources=compute.ray_resources,
            spread=True,
            timeout=compute.ray_task_timeout_seconds,
        )
        results = [result for batch in done for result in batch.days]
        rejected += sum(isinstance(result.value, Rejected) for result in results)
        trained += sum(not isinstance(result.value, Rejected) for result in results)
    ray.shutdown()
    return {
        "partitions": len(days),
        "trained": trained,
        "rejected": rejected,
        "read_features_s": round(read_s, 2),
        "compute_s": round(time.perf_counter() - clock - read_s, 2),
        **rusage_mb(),
    }
