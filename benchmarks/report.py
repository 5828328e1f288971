"""The report: what the run was (machine, versions, commit, config), the printed table and the JSON file."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import PARTITION_END, PARTITION_START, PIPELINE, SOURCE_SPEC, TARGETS
from kernel.paths import PROJECT_ROOT


def new_report(sections: Sequence[str], days: int) -> dict[str, Any]:
    """The report's header; sections add their figures under `figures`."""
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": machine_info(),
        "versions": versions(),
        "config": {
            "sections": list(sections),
            "days": days,
            "pipeline": PIPELINE,
            "spec": f"{SOURCE_SPEC.relative_to(PROJECT_ROOT)} renamed {PIPELINE}, partitions "
            f"{PARTITION_START}..{PARTITION_END} (end exclusive), rebase_to_yesterday false",
            "dagster_yaml": "telemetry disabled only (default run launcher, sqlite storage)",
            "ray_head_cpus": os.cpu_count(),
        },
        "targets": TARGETS,
        "figures": {},
    }


def machine_info() -> dict[str, Any]:
    import psutil

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["dagster", "dagster-ray", "ray", "pandas", "pyarrow", "scikit-learn", "mlflow", "great-expectations"]
    found = {}
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    return None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


STEP_PHASES = (
    "wall_s",
    "spawn_import_s",
    "resource_init_s",
    "load_inputs_s",
    "compute_s",
    "write_outputs_s",
    "materialization_events_s",
)


def step_table(breakdown: Mapping[str, Any]) -> list[list[str]]:
    steps = sorted(breakdown["steps"].items(), key=lambda kv: kv[1].get("offset_s", 0.0))
    return [[step, *(_fmt(phases.get(k)) for k in STEP_PHASES)] for step, phases in steps]


def print_report(report: Mapping[str, Any]) -> None:
    from tabulate import tabulate

    from benchmarks.landing_first import print_sections

    figures = report["figures"]
    if "a" in figures:
        a = figures["a"]
        rows = []
        for group in ("dagster", "script"):
            for name, entry in a.get(group, {}).items():
                rows.append(
                    [
                        f"{group}: {name}",
                        entry["kind"],
                        _fmt(entry["wall_s"]),
                        " ".join(f"{w:.1f}" for w in entry["wall_samples_s"]),
                        _fmt(entry["cpu_s"]),
                        _fmt(entry["peak_rss_mb"]),
                        _fmt(entry["peak_ray_workers_rss_mb"]),
                    ]
                )
        print(f"\n(a) backfill {a['range']['first']}..{a['range']['last']} ({a['range']['partitions']} partitions)")
        headers = ["measure", "kind", "wall s (median)", "samples", "CPU s", "peak RSS MB", "Ray workers MB"]
        print(tabulate(rows, headers=headers))
        print(
            "  cold = the whole fresh process timed from outside; warm = the timed section after imports.\n"
            "  CPU = the process tree plus Ray workers; peak RSS = ru_maxrss of the process or its largest child."
        )
        print(tabulate([[k, v] for k, v in a["ratios"].items()], headers=["ratio", "x"]))
        head = a["headline"]
        verdict = "PASS" if head["meets_target"] else "MISS"
        print(f"  headline ratio {head['ratio']} (target <= {head['target']}): {verdict}")
        if "cli_real" in a:
            print(f"  real CLI: exit {a['cli_real']['exit_code']}: {a['cli_real'].get('error', 'ran')}")
        step_headers = ["step", "wall", "spawn+import", "resources", "inputs", "compute", "write", "mat. events"]
        for name in ("cli_checks", "cli_checks_local_stock", "inprocess_checks"):
            if name not in a["dagster"]:
                continue
            breakdown = a["dagster"][name]["median_run"]["breakdown"]
            print(f"\n  where the time goes: {name} (Dagster event log of the median run)")
            print(tabulate(step_table(breakdown), headers=step_headers))
            print(
                f"  run created -> started {breakdown['create_to_start_s']}s (of which "
                f"{breakdown['create_to_last_planned_event_s']}s until the last of {breakdown['planned_events']} "
                f"planned events); started -> finished "
                f"{breakdown['start_to_end_s']}s; steps summed {breakdown['sum_of_step_walls_s']}s; "
                f"{breakdown['events']} events"
            )
        for mode, probe in a.get("ray_connect", {}).items():
            print(f"  Ray connect from a fresh process ({mode}): {probe['seconds']}")
        for name in ("script_cold_sequential", "script_warm_ray"):
            if name in a["script"]:
                print(f"  plain script phases ({name}):", a["script"][name]["median_run"]["phases"])
    print_sections(figures)  # h, h_postgres, a_postgres
    if "b" in figures:
        b = figures["b"]
        print("\n(b) code-location load")
        rows = [[k, v, b["samples_s"][k]] for k, v in b["median_s"].items()]
        print(tabulate(rows, headers=["process", "median s", "samples s"]))
        print(f"  ratio {b['ratio']} (target <= {b['target']}): {'PASS' if b['meets_target'] else 'MISS'}")
        print(f"  heavy modules imported by the load: {b['loaded']['heavy_imported'] or 'none'}")
        print("  top imports:", ", ".join(f"{o['package']} {o['self_s']}s" for o in b["import_offenders"][:6]))
        chains = b.get("import_chains") or []
        print("  beyond `import dagster`:", ", ".join(f"{c['package']} {c['cumulative_s']}s" for c in chains[:6]))
    if "c" in figures:
        c = figures["c"]
        print(
            f"\n(c) {c['stations']} stations, {c['rows']} rows; stages over {c['days']} days on 1 and 2 Ray worker "
            f"nodes; load {c['loadavg_at_start']} -> {c['loadavg_at_end']}"
        )
        rows = [
            [
                x["figure"],
                _fmt(x["value"]),
                (">= " if "stage" in x else "<= ") + str(x["target"]) if "target" in x else "",
                ("PASS" if x["meets_target"] else "MISS") if "target" in x else "",
            ]
            for x in c["figures"]
        ]
        print(tabulate(rows, headers=["figure", "value", "target", "result"]))
        stages = [x for x in c["figures"] if "stage" in x]
        print(
            "  stage s, 1 node / 2 nodes:",
            ", ".join(
                f"{x['stage']} {x['one_node_s']} / {x['two_nodes_s']} (step alone {x.get('step_speedup')}x)"
                for x in stages
            ),
        )
        print(f"  features step peak RSS MB by days: {c['features_step_peak_rss_mb']}")
        print(f"  Ray workers peak RSS MB by days: {c['ray_workers_peak_rss_mb']}")
        print(f"  note: {c['note']}")
    for section, name, oos in [(s, n, o) for s in ("f", "oos") for n, o in figures.get(s, {}).items()]:
        backtest, models = oos["backtest"], oos["model_backfill"]
        print(f"\n({section}) {name}: out-of-sample backtest {oos['backtest_days']} ({oos['days']} days)")
        improvement = oos["out_of_sample_improvement"]
        rows = [
            [
                "out-of-sample improvement over the baseline",
                _fmt(improvement),
                f">= {oos['target_min']}",
                oos["result"],
            ],
            ["in-window hold-out improvement (mean)", _fmt(backtest["in_window_improvement_mean"]), "", ""],
            ["days scored / not scored", f"{backtest['days_scored']} / {backtest['days_not_scored']}", "", ""],
            ["model backfill", f"{models['partitions']} partitions in {models['model_backfill_s']}s", "", ""],
            ["model load per model (s)", _fmt(oos["model_load_s_per_model"]), "", ""],
        ]
        if f := oos.get("model_backfill_vs_compute"):
            rows.append(
                [f"(f) {f['figure']}", f["value"], f"<= {f['target']}", "PASS" if f["meets_target"] else "MISS"]
            )
        print(tabulate(rows, headers=["figure", "value", "target", "result"]))
    if "e" in figures:
        f = figures["e"]
        print(f"\n(e) fingerprints over {f['days']} days of features ({f['days_rejected']} rejected by the gate)")
        rows = [
            [x["figure"], _fmt(x["value"]), f"<= {x['target']}", "PASS" if x["meets_target"] else "MISS"]
            for x in f["figures"]
        ]
        print(tabulate(rows, headers=["figure", "value", "target", "result"]))
        print("  seconds:", ", ".join(f"{k} {v}" for k, v in f["seconds"].items()))
    if "d" in figures:
        d = figures["d"]
        print(f"\n(d) a new file for {d['day']} lands into a running daemon (make dev's sensors and automation)")
        rows = [
            [x["figure"], x["value"], f"<= {x['target']}", "PASS" if x["meets_target"] else "MISS"]
            for x in d["figures"]
        ]
        print(tabulate(rows, headers=["figure", "value", "target", "result"]))
        print("  materialised after the file (s):", ", ".join(f"{k} {v}" for k, v in d["stage_materialised_s"].items()))
        for run in d["runs"]:
            print(
                f"  run {'+'.join(run['assets'])} {run['partitions']} ({run['requested_by']}, {run['status']}): "
                f"created {run['created_s']}s, started {run['started_s']}s, ended {run['ended_s']}s"
            )


def carry_over(report: dict[str, Any], path: Path) -> dict[str, Any]:
    """Keep the figures of sections this run did not measure from the file it replaces (a long section run alone
    must not erase the others), each with the timestamp and commit it was measured at."""
    if not path.exists():
        return report
    previous = json.loads(path.read_text())
    carried = dict(previous.get("carried_over", {}))
    for section, figures in previous.get("figures", {}).items():
        if section == "oos" and section in report["figures"]:  # one entry per pipeline: keep those not re-run
            report["figures"][section] = {**figures, **report["figures"][section]}
            continue
        if section in report["figures"]:
            carried.pop(section, None)
            continue
        report["figures"][section] = figures
        carried.setdefault(section, {"timestamp": previous.get("timestamp"), "git_commit": previous.get("git_commit")})
    if carried:
        report["carried_over"] = carried
    return report


def write_report(report: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(report, indent=1, sort_keys=False, default=str) + "\n")
    temporary.replace(path)
