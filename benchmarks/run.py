"""Platform benchmarks: backfill vs a plain script (a), code-location load (b), 1 vs 2 Ray worker nodes (c), a new file
to fresh predictions with `make dev`'s daemon (d), what fingerprints cost (e), a model backfill vs its training (f),
the first landing of five years (h), landing the N-th daily file (i), landing N files at once (j); the instance at
scale (g, alone: benchmarks/simulation.py).

    .venv/bin/python benchmarks/run.py                 # a, b, c, d, e, f, h, i and j, 350-day backfill
    .venv/bin/python benchmarks/run.py --only b        # one section
    .venv/bin/python benchmarks/run.py --days 30 --only a,d

Every measurement runs in a fresh subprocess of this file (``--worker``), so peak RSS
(``ru_maxrss``) belongs to that measurement alone and import costs are explicit. The script
starts its own Ray head on free loopback ports and keeps all state (platform home, Dagster
home, spec copy) in a temporary directory; both are removed in ``finally``.

Results go to ``benchmarks/results/latest.json``; a failed run leaves ``latest.json`` alone,
writes what it measured to ``benchmarks/results/partial.tmp`` and exits non-zero.

This is the entry point only: sections.py (a, b, e), fresh_day.py (d), worker.py and script.py (what runs in the
``--worker`` subprocesses), harness.py (Ray head, measured subprocesses, sampling), eventlog.py
(run breakdowns) and report.py (table and JSON). Its top level imports only the standard library: a process
started with ``spawn`` (Ray's workers, a multiprocess executor's steps) re-imports ``__main__`` (this file).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

# Bootstrap only: put the project root on sys.path so `benchmarks` and the platform import when this
# file runs as a script (the project root itself is defined once, in kernel.paths.PROJECT_ROOT). It takes
# the place of the script's own folder, whose modules (report, script, ...) would otherwise shadow
# top-level modules of the same name in every process this one starts.
_PROJECT_DIR = str(Path(__file__).resolve().parents[1])
if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = _PROJECT_DIR
elif _PROJECT_DIR not in sys.path:
    sys.path.insert(0, _PROJECT_DIR)

SECTIONS = ("a", "a_postgres", "b", "c", "d", "e", "f", "g", "h", "h_postgres", "i", "j", "oos")
# oos trains a model per day for a year: hours on 2 cores, so only when asked; f is its model backfill against the
# `ml` functions alone over 48 air-quality partitions (about 3 minutes here). c runs at 200 stations (3.4M rows, about
# 8 minutes here); make bench-scale runs the 400 (7M rows, tens of minutes).
DEFAULT_SECTIONS = "a,b,c,d,e,f,h,i,j"


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    from benchmarks.common import DEFAULT_CYCLE_DAY, DEFAULT_DAYS, RESULTS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only",
        default=DEFAULT_SECTIONS,
        help="comma-separated sections: a (backfill), b (load), c (scale: N stations on 1 and 2 Ray worker nodes; "
        "make bench-scale: 400), d (new file to fresh predictions), e (fingerprints), f (a model backfill vs the ml "
        "functions alone, --f-days partitions of --f-pipeline), "
        "h (first landing of five years), i (ingest of the N-th file), j (N files landed at once), a_postgres and "
        "h_postgres (a and h on PostgreSQL, also added by --postgres), oos (out-of-sample backtest; not default), g "
        "(the instance at scale on PostgreSQL; alone, not default: benchmarks/simulation.py)",
    )
    parser.add_argument("--c-stations", type=int, default=200, help="(c) generated stations (default 200)")
    parser.add_argument("--c-days", type=int, default=60, help="(c) days of the stage runs (default 60)")
    parser.add_argument("--c-model-days", type=int, default=4, help="(c) days of the model run (default 4)")
    parser.add_argument(
        "--c-rss-days", default="30,60,120", help="(c) features ranges whose driver RSS is compared (first vs last)"
    )
    parser.add_argument("--h-days", type=int, default=1826, help="(h) days of the first landing (default 1826)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="(a, h) also on production's instance on the machine's PostgreSQL (sections a_postgres, h_postgres)",
    )
    parser.add_argument("--f-days", type=int, default=48, help="(f) model partitions (default 48)")
    parser.add_argument("--f-pipeline", default="air_quality", help="(f) the shipped spec (default air_quality)")
    parser.add_argument("--oos-days", type=int, default=365, help="(oos) backtest days per pipeline (default 365)")
    parser.add_argument("--oos-pipelines", default="", help="(oos) comma-separated spec names (default: every one)")
    parser.add_argument(
        "--days", type=int, default=DEFAULT_DAYS, help=f"partitions in (a) and (e) (default {DEFAULT_DAYS})"
    )
    parser.add_argument("--repeats", type=int, default=5, help="(b) subprocess runs per command (median)")
    parser.add_argument("--a-repeats", type=int, default=3, help="(a) runs of the four headline measures (median)")
    parser.add_argument("--cycle-day", type=date.fromisoformat, default=DEFAULT_CYCLE_DAY, help="(d) the new day")
    parser.add_argument(
        "--a-lean", action="store_true", help="(a) only the headline pair and its other-event-log twin (no real CLI)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp dir (state and logs) for debugging")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    return parser, parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser, args = parse_args(argv)
    if args.worker:
        from benchmarks.worker import WORKERS, worker_main

        if args.worker not in WORKERS or args.worker_out is None:
            parser.error(f"unknown worker {args.worker!r}")
        return worker_main(args.worker, args.worker_args, args.worker_out)

    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.postgres:
        sections += [f"{s}_postgres" for s in ("a", "h") if s in sections and f"{s}_postgres" not in sections]
    if unknown := sorted(set(sections) - set(SECTIONS)):
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if "g" in sections:
        if sections != ["g"]:
            parser.error("section g runs alone (its own PostgreSQL instance, no Ray): --only g")
        from benchmarks.simulation import main as simulation_main

        return simulation_main(["--output", str(args.output)])
    if args.days < 1 or args.repeats < 1 or args.a_repeats < 1:
        parser.error("--days, --repeats and --a-repeats must be positive")

    from benchmarks.common import RESULTS, StageFailed, backfill_range
    from benchmarks.fresh_day import section_d
    from benchmarks.harness import Bench, ray_head
    from benchmarks.ingest import section_i
    from benchmarks.landing_first import section_h
    from benchmarks.many_files import section_j
    from benchmarks.oos import section_oos
    from benchmarks.report import carry_over, new_report, print_report, write_report
    from benchmarks.scale import Size, section_c
    from benchmarks.sections import section_a, section_b, section_e
    from devtools.stack import RAY_LOOPBACK_ENV

    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.update(RAY_LOOPBACK_ENV)
    tmp = Path(tempfile.mkdtemp(prefix="platform-bench-"))
    report: dict[str, Any] = new_report(sections, args.days)
    started = time.perf_counter()
    code = 0
    try:
        bench = Bench.create(tmp)
        if {"a", "a_postgres"} & set(sections):
            backfill_range(bench.pipeline, args.days)  # a range that cannot fit fails now, not after other sections
        print(f"benchmarks: sections {','.join(sections)}; temp dir {tmp}")
        shared_head = ray_head(bench) if set(sections) - {"c"} else contextlib.nullcontext()
        with shared_head:
            if "a" in sections:
                report["figures"]["a"] = section_a(bench, args.days, repeats=args.a_repeats, lean=args.a_lean)
            if "a_postgres" in sections:
                report["figures"]["a_postgres"] = section_a(
                    bench, args.days, repeats=1, instance="postgres", label="a_postgres"
                )
            if "b" in sections:
                report["figures"]["b"] = section_b(bench, args.repeats)
            if "d" in sections:
                report["figures"]["d"] = section_d(bench, args.cycle_day)
            if "e" in sections:
                report["figures"]["e"] = section_e(bench, args.days)
            if "h" in sections:
                report["figures"]["h"] = section_h(bench, days=args.h_days)
            if "h_postgres" in sections:
                report["figures"]["h_postgres"] = section_h(
                    bench, instance="postgres", label="h_postgres", days=args.h_days
                )
            if "i" in sections:
                report["figures"]["i"] = section_i(bench)
            if "j" in sections:
                report["figures"]["j"] = section_j(bench)
            if "f" in sections:
                report["figures"]["f"] = section_oos(bench, args.f_days, [args.f_pipeline])
            if "oos" in sections:
                names = [n.strip() for n in args.oos_pipelines.split(",") if n.strip()]
                report["figures"]["oos"] = section_oos(bench, args.oos_days, names)
        if "c" in sections:  # its own Ray cluster: a driver-only head and worker nodes
            rss_days = tuple(int(x) for x in args.c_rss_days.split(","))
            size = Size(args.c_stations, args.c_days, args.c_model_days, rss_days=rss_days)
            report["figures"]["c"] = section_c(bench, size)
    except StageFailed as exc:
        report["failures"] = [str(exc)]
        code = 1
    except KeyboardInterrupt:
        report["failures"] = ["interrupted"]
        code = 130
    finally:
        report["duration_s"] = round(time.perf_counter() - started, 1)
        report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        if args.keep_temp:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if code == 0:
        print_report(report)
        write_report(carry_over(report, args.output), args.output)
        print(f"\nwrote {args.output} ({report['duration_s']}s)")
    else:
        with contextlib.suppress(Exception):
            print_report(report)
        partial = RESULTS / "partial.tmp"
        write_report(report, partial)
        print(f"\nbenchmark failed; latest.json left as it was, partial results in {partial}", file=sys.stderr)
        for failure in report.get("failures", []):
            print(f"ERROR: {failure}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
