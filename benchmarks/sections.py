"""The sections: (a) backfill vs a plain script, (b) code-location load, (e) fingerprints."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import (
    BACKFILL_STAGES,
    HEAVY_MODULES,
    LAST_DAY,
    TARGETS,
    backfill_range,
)
from benchmarks.harness import Bench, tail
from kernel.paths import PROJECT_ROOT, StatePaths

if TYPE_CHECKING:
    from kernel.pipeline import Pipeline


def summarise(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of repeated runs of one measure; the run closest to the median is kept in full.

    `cold`: the whole fresh process, timed from outside (what a user waits for).
    `warm`: the worker's timed section after imports (in-process figures).
    """
    walls = [float(e["process_wall_s"] if kind == "cold" else e["wall_s"]) for e in entries]
    cpus = [float(e["cpu_incl_ray_workers_s"]) for e in entries]
    median = statistics.median(walls)
    closest = min(range(len(entries)), key=lambda i: abs(walls[i] - median))
    return {
        "kind": kind,
        "wall_s": round(median, 2),
        "wall_samples_s": walls,
        "cpu_s": round(statistics.median(cpus), 2),
        "cpu_samples_s": cpus,
        "peak_rss_mb": max(max(e["self_maxrss_mb"], e["children_maxrss_mb"]) for e in entries),
        "peak_ray_workers_rss_mb": max(float(e["sampled_rss"]["ray_workers_sum_mb"]) for e in entries),
        "median_run": entries[closest],
    }


def serving_champion(pipeline: Pipeline, state: StatePaths) -> dict[str, Any]:
    """The champion record the setup left in the platform's asset store, validated and as JSON."""
    from kernel.records import ChampionRecord
    from resources.storage import PartitionedParquetIOManager

    store = PartitionedParquetIOManager(base_uri=str(state.assets))
    stored = store.read(pipeline.key("champion"), None)
    return ChampionRecord.model_validate(stored).model_dump(mode="json")


def section_a(
    bench: Bench,
    days: int,
    repeats: int,
    *,
    instance: str = "local",
    label: str = "a",
    lean: bool = False,
) -> dict[str, Any]:
    """(a) on the Dagster instance `instance` (benchmarks/instances.py); the headline run is repeated once more on
    the same home with the other event log (`OTHER_EVENT_LOG`), so what batching buys is measured in the same run.
    `lean` (the PostgreSQL run `a_postgres`, or `--a-lean`) measures the headline pair and the twin only."""
    from benchmarks.instances import OTHER_EVENT_LOG, switched

    setup_first, first = backfill_range(bench.pipeline, days)
    last = LAST_DAY
    state = bench.home(label, instance)
    lean = lean or label != "a"
    span = {"first": str(first), "last": str(last)}
    print(
        f"({label}) backfill of {days} partitions {first}..{last}, history {setup_first}..{first - timedelta(days=1)}"
        f", instance {instance}"
    )
    result: dict[str, Any] = {"range": {**span, "partitions": days}, "repeats": repeats, "instance": instance}
    result["setup"] = bench.worker(
        "a_setup", "setup", {"first": str(setup_first), "last": str(first - timedelta(days=1))}, state
    )
    # What the plain script would otherwise derive through Dagster-importing platform code (see script.py).
    plain = {**span, "lookback_days": bench.pipeline.lookback_days, "champion": serving_champion(bench.pipeline, state)}

    select = ",".join(bench.pipeline.key(stage).to_user_string() for stage in BACKFILL_STAGES)
    cli = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "platform_assets.definitions"]
    cli += ["--select", select, "--partition-range", f"{first}...{last}"]
    if not lean:  # the real CLI once, for its exit code and breakdown
        print(f"  · {label}_cli_real (dagster asset materialize --partition-range) ...", end="", flush=True)
        measured = bench.run(f"{label}_cli_real", cli, bench.env(state), check=False)
        cli_guard = r"Partition ranges with the CLI require.*?single_run\(\) policy\."
        guard = re.search(cli_guard, measured.log.read_text(errors="replace"))
        real: dict[str, Any] = {
            "command": " ".join(cli[1:]),
            "exit_code": measured.code,
            "wall_s": round(measured.wall_s, 2),
        }
        if measured.code == 0:
            real["sampled_rss"] = measured.sampled
            real |= bench.worker(f"{label}_cli_real_breakdown", "latest_run", {}, state)
        else:
            real["error"] = guard.group(0) if guard else tail(measured.log, 5)
        print(f" exit {measured.code} in {measured.wall_s:.1f}s")
        result["cli_real"] = real

    cli_args = {**span, "select": select, "checks": True}
    # (name, group, worker, args, kind, repeated?)
    measures: list[tuple[str, str, str, dict[str, Any], str, bool]] = [
        ("cli_checks", "dagster", "dagster_cli", cli_args, "cold", True),
        ("script_cold_sequential", "script", "script", {**plain, "mode": "sequential", "warm": False}, "cold", True),
        ("inprocess_checks", "dagster", "dagster_inprocess", {**span, "checks": True}, "warm", True),
        ("script_warm_sequential", "script", "script", {**plain, "mode": "sequential", "warm": True}, "warm", True),
        ("cli_no_checks", "dagster", "dagster_cli", {**cli_args, "checks": False}, "cold", False),
        ("script_cold_ray", "script", "script", {**plain, "mode": "ray", "warm": False}, "cold", False),
        ("inprocess_no_checks", "dagster", "dagster_inprocess", {**span, "checks": False}, "warm", False),
        ("script_warm_ray", "script", "script", {**plain, "mode": "ray", "warm": True}, "warm", False),
    ]
    other = OTHER_EVENT_LOG[instance]
    measures.append((f"cli_checks_{other}", "dagster", "dagster_cli", cli_args, "cold", False))
    if lean:
        measures = [m for m in measures if m[0] in ("cli_checks", "script_cold_sequential", f"cli_checks_{other}")]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in measures}
    rounds = [[m for m in measures if m[5]] for _ in range(repeats)]  # interleaved against load drift
    rounds[0] += [m for m in measures if not m[5]]
    for index, measures_of_round in enumerate(rounds):
        for name, _, worker, args, _, _ in measures_of_round:
            out_dir = bench.tmp / f"script_out_{name}"
            worker_args = {**args, "out_dir": str(out_dir)} if worker == "script" else args
            with switched(state.dagster_home, other if name == f"cli_checks_{other}" else instance):
                runs[name].append(bench.worker(f"{label}_{name}_{index}", worker, worker_args, state))
            shutil.rmtree(out_dir, ignore_errors=True)
    result["dagster"] = {n: summarise(k, runs[n]) for n, g, _, _, k, _ in measures if g == "dagster"}
    result["script"] = {n: summarise(k, runs[n]) for n, g, _, _, k, _ in measures if g == "script"}
    if not lean:
        result["ray_connect"] = {
            mode: bench.worker(f"a_ray_connect_{mode}", "ray_connect", {"mode": mode}, state)
            for mode in ("plain", "platform_resource")
        }
    dagster, script = result["dagster"], result["script"]

    def ratio(a: str, b: str, metric: str = "wall_s") -> float:
        return round(float(dagster[a][metric]) / float(script[b][metric]), 2)

    pairs = {
        "cli_checks_vs_script_cold_sequential": ("cli_checks", "script_cold_sequential"),
        "cli_checks_vs_script_cold_ray": ("cli_checks", "script_cold_ray"),
        "cli_no_checks_vs_script_cold_sequential": ("cli_no_checks", "script_cold_sequential"),
        "inprocess_checks_vs_script_warm_sequential": ("inprocess_checks", "script_warm_sequential"),
        "inprocess_no_checks_vs_script_warm_sequential": ("inprocess_no_checks", "script_warm_sequential"),
        "inprocess_checks_vs_script_warm_ray": ("inprocess_checks", "script_warm_ray"),
        f"cli_checks_{other}_vs_script_cold_sequential": (f"cli_checks_{other}", "script_cold_sequential"),
    }
    ratios = {name: ratio(a, b) for name, (a, b) in pairs.items() if a in dagster and b in script}
    ratios["cpu_cli_checks_vs_script_cold_sequential"] = ratio("cli_checks", "script_cold_sequential", "cpu_s")
    result["ratios"] = ratios
    headline = ratios["cli_checks_vs_script_cold_sequential"]
    result["headline"] = {
        "measure": "CLI-equivalent run (fresh process, the local in-process executor, checks included) / plain "
        "script (fresh process, sequential pandas, same outputs written), medians of wall time",
        "ratio": headline,
        "target": TARGETS["a_ratio_max"],
        "meets_target": headline <= TARGETS["a_ratio_max"],
    }
    return result


LOAD_SNIPPET = """
import json, sys
from kernel.settings import Settings
from platform_assets.definitions import build_definitions
defs = build_definitions(Settings.from_environment())
graph = defs.resolve_asset_graph()
defs.resolve_implicit_global_asset_job_def()
defs.get_repository_def()
heavy = sorted(m for m in HEAVY if m in sys.modules)
print("BENCH " + json.dumps({"assets": len(graph.get_all_asset_keys()), "checks": len(graph.asset_check_keys),
                             "heavy_imported": heavy, "modules": len(sys.modules)}))
"""


IMPORTTIME_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


def _importtime_rows(stderr: str) -> list[tuple[str, int, float, float]]:
    """`python -X importtime` lines as (module, nesting depth, self seconds, cumulative seconds)."""
    rows = []
    for line in stderr.splitlines():
        match = IMPORTTIME_LINE.match(line)
        if match:
            own, cumulative, indent, module = match.groups()
            rows.append((module, len(indent), int(own) / 1e6, int(cumulative) / 1e6))
    return rows


def _import_offenders(stderr: str, top: int = 10) -> list[dict[str, Any]]:
    """Import time by top-level package (sum of `self` times), from `python -X importtime`."""
    totals: dict[str, float] = {}
    for module, _, own, _ in _importtime_rows(stderr):
        package = module.split(".")[0]
        totals[package] = totals.get(package, 0.0) + own
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [{"package": name, "self_s": round(seconds, 3)} for name, seconds in ranked]


def _import_chains(stderr: str, top: int = 8) -> list[dict[str, Any]]:
    """What the load imports beyond `import dagster`, by third-party package: the cumulative time of each package's
    first import, as `python -X importtime` nests it (a package imported first by another counts in both)."""
    with (PROJECT_ROOT / "pyproject.toml").open("rb") as pyproject:
        first_party = {"dagster", *tomllib.load(pyproject)["tool"]["importlinter"]["root_packages"]}
    rows = [row for row in _importtime_rows(stderr) if "." not in row[0] and row[0] not in first_party]
    ranked = sorted(rows, key=lambda row: -row[3])[:top]
    return [{"package": name, "cumulative_s": round(seconds, 3), "depth": depth} for name, depth, _, seconds in ranked]


def section_b(bench: Bench, repeats: int) -> dict[str, Any]:
    env = bench.env(bench.home("b"))
    snippet = f"HEAVY = {list(HEAVY_MODULES)!r}\n{LOAD_SNIPPET}"
    commands = {"import_dagster": [sys.executable, "-c", "import dagster"], "load_code_location": []}
    commands["load_code_location"] = [sys.executable, "-c", snippet]
    print(f"(b) code-location load vs bare `import dagster`, median of {repeats} (after one warm-up each)")
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for name, command in commands.items():
        bench.run(f"b_{name}_warmup", command, env)
    for index in range(repeats):  # interleaved, so drift in machine load hits both alike
        for name, command in commands.items():
            samples[name].append(round(bench.run(f"b_{name}_{index}", command, env).wall_s, 3))
    log = (bench.logs / f"b_load_code_location_{repeats - 1}.log").read_text()
    loaded = json.loads(next(line for line in log.splitlines() if line.startswith("BENCH "))[6:])
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", snippet],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = medians["load_code_location"] / medians["import_dagster"]
    heavy = loaded["heavy_imported"]
    result = {
        "repeats": repeats,
        "samples_s": samples,
        "median_s": {k: round(v, 3) for k, v in medians.items()},
        "ratio": round(ratio, 2),
        "target": TARGETS["b_ratio_max"],
        "meets_target": ratio <= TARGETS["b_ratio_max"],
        "loaded": loaded,
        "heavy_modules_checked": list(HEAVY_MODULES),
        "heavy_modules_absent": not heavy,
        "import_offenders": _import_offenders(traced.stderr),
        "import_chains": _import_chains(traced.stderr.split("| dagster\n", 1)[-1]),
        "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
    }
    print(f"  · medians {result['median_s']} ratio {ratio:.2f}; heavy imported: {heavy or 'none'}")
    return result


def section_e(bench: Bench, days: int) -> dict[str, Any]:
    """What verdicts bound to bytes cost over `days` days of features: the gate on a load, footers, hashing."""
    first = LAST_DAY - timedelta(days=days - 1)
    print(f"(e) fingerprints over {days} days of features {first}..{LAST_DAY}")
    result = bench.worker(
        "e_fingerprints", "fingerprints", {"first": str(first), "last": str(LAST_DAY)}, bench.home("e")
    )
    shares = result["shares"]
    result["figures"] = [
        {
            "figure": "day gate's verdict query / load of the same days (fingerprints come with the read)",
            "value": shares["gate_of_load"],
            "target": TARGETS["e_gate_share_of_load_max"],
            "meets_target": shares["gate_of_load"] <= TARGETS["e_gate_share_of_load_max"],
        },
        {
            "figure": "footer-only fingerprint read / load of the same days",
            "value": shares["footers_of_load"],
            "target": TARGETS["e_footers_share_of_load_max"],
            "meets_target": shares["footers_of_load"] <= TARGETS["e_footers_share_of_load_max"],
        },
        {
            "figure": "fingerprint hashing (of the table the write builds anyway) / write of the same days",
            "value": shares["hash_of_write"],
            "target": TARGETS["e_hash_share_of_write_max"],
            "meets_target": shares["hash_of_write"] <= TARGETS["e_hash_share_of_write_max"],
        },
    ]
    print(f"  · seconds {result['seconds']}")
    return result
