"""Section oos: the out-of-sample improvement of each shipped pipeline over its baseline, and its model backfill's time.

For each spec in pipelines/: a copy named `<name>_oos` (rebasing off, its own state folder), raw+features over the
history the range needs (untimed), one run of `model` over the partitions whose forecasts reach the range (timed:
the walk-forward backfill), the champion, then one run of `backtest` over the range and the report. The figures
are the platform's own: the backtest's and the report's materialisation metadata and stored table.
"""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import TARGETS, StageFailed, bench_pipeline
from benchmarks.harness import Bench
from kernel.paths import PROJECT_ROOT

MODEL_BACKFILL_TIMEOUT_S = 6 * 3600  # a year of daily models on 2 cores takes hours, not the usual 30 minutes


def shipped_specs() -> list[Path]:
    return sorted((PROJECT_ROOT / "pipelines").glob("*.yaml"))


def write_oos_spec(source: Path, specs_dir: Path) -> str:
    """A shipped spec renamed `<name>_oos` with its own dates (no rebasing); returns the copy's pipeline name."""
    import yaml

    document = yaml.safe_load(source.read_text())
    original = document["name"]
    document["name"] = f"{original}_oos"
    document["partitioning"]["rebase_to_yesterday"] = False
    specs_dir.mkdir(parents=True, exist_ok=True)
    (specs_dir / f"{document['name']}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return document["name"]


def section_oos(bench: Bench, days: int, names: list[str]) -> dict[str, Any]:
    """The out-of-sample figures of the shipped pipelines named (all when none is) over their last `days` days."""
    specs = [path for path in shipped_specs() if not names or path.stem in names]
    if unknown := sorted(set(names) - {path.stem for path in specs}):
        raise StageFailed(f"--oos-pipelines names no shipped spec: {unknown}")
    return {path.stem: pipeline_oos(bench, path, days) for path in specs}


def pipeline_oos(bench: Bench, source: Path, days: int) -> dict[str, Any]:
    specs_dir = bench.tmp / f"specs_oos_{source.stem}"
    name = write_oos_spec(source, specs_dir)
    pipeline = bench_pipeline(specs_dir, PROJECT_ROOT, name)
    spec = pipeline.spec
    if spec.partitioning.end_date is None:
        raise StageFailed(f"{source.name}: the oos section needs partitioning.end_date to find the data's last day")
    last = spec.partitioning.end_date - timedelta(days=1)
    first = max(last - timedelta(days=days - 1), spec.partitioning.start_date + timedelta(days=1))
    horizon = spec.evaluation.horizon_days
    models_first, models_last = first - timedelta(days=horizon), last - timedelta(days=1)
    history = spec.training.window_days + pipeline.lookback_days
    features_first = max(spec.partitioning.start_date, models_first - timedelta(days=history))
    sub = dataclasses.replace(bench, specs_dir=specs_dir, pipeline=pipeline)
    state = sub.home(f"oos_{source.stem}")
    print(f"(oos) {source.name}: backtest {first}..{last}, models {models_first}..{models_last}")
    models = sub.worker(
        f"oos_{source.stem}_models",
        "model_backfill",
        {
            "pipeline": name,
            "features_first": str(features_first),
            "features_last": str(last),
            "models_first": str(models_first),
            "models_last": str(models_last),
        },
        state,
        timeout=MODEL_BACKFILL_TIMEOUT_S,
    )
    compute = sub.worker(
        f"oos_{source.stem}_compute",
        "model_compute",
        {"pipeline": name, "models_first": str(models_first), "models_last": str(models_last)},
        state,
        timeout=MODEL_BACKFILL_TIMEOUT_S,
    )
    scored = sub.worker(
        f"oos_{source.stem}_backtest", "backtest", {"pipeline": name, "first": str(first), "last": str(last)}, state
    )
    target = TARGETS["oos_improvement_min"].get(source.stem, spec.promotion.min_improvement_over_baseline)
    observed = scored["out_of_sample_improvement"]
    per_partition = models["model_backfill_s"] / models["partitions"]
    # (f): the model run (timed inside its process, imports paid before) against the same partitions' `ml` compute
    # (timed inside the script's process from the features read to the last refit).
    pure = compute["read_features_s"] + compute["compute_s"]
    ratio = round(models["model_backfill_s"] / pure, 2)
    return {
        "spec": str(source.relative_to(PROJECT_ROOT)),
        "backtest_days": f"{first}..{last}",
        "days": (last - first).days + 1,
        "horizon_days": horizon,
        "window_days": spec.training.window_days,
        "out_of_sample_improvement": observed,
        "target_min": target,
        "result": "PASS" if observed is not None and observed >= target else "MISS",
        "model_backfill": models,
        "model_backfill_s_per_partition": round(per_partition, 2),
        "model_backfill_one_year_s": round(365 * per_partition, 1) if models["partitions"] < 365 else None,
        "model_compute": compute,
        "model_backfill_vs_compute": {
            "figure": f"model backfill / the ml functions alone, same {models['partitions']} partitions",
            "value": ratio,
            "target": TARGETS["f_model_backfill_ratio_max"],
            "meets_target": ratio <= TARGETS["f_model_backfill_ratio_max"],
        },
        "backtest": scored,
        "model_load_s_per_model": round(scored["model_load_s"] / scored["models_loaded"], 3)
        if scored.get("models_loaded")
        else None,
        "as_of": date.today().isoformat(),
    }
