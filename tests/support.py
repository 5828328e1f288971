"""Helpers the tests share: running pipeline stages in-process, reading what a run did, listening sockets."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import dagster as dg
import pandas as pd
import psutil
import pytest

from kernel.names import RANGE_END, RANGE_START, SOURCE_FILES_TAG


def run_range(
    defs: dg.Definitions,
    stages: list[str],
    pipeline: str,
    days: tuple[str, str],
    instance: dg.DagsterInstance,
    *,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialise `stages` of a pipeline for the days first..last in one run, as a backfill would."""
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey([pipeline, stage]) for stage in stages],
        tags={RANGE_START: days[0], RANGE_END: days[1], **(tags or {})},
        raise_on_error=False,
    )


def run_checks_alone(
    defs: dg.Definitions, checks: list[dg.AssetCheckKey], days: tuple[str, str], instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    """Run `checks` alone for the days first..last, as the UI's "Execute" of a check does: they judge what is stored."""
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection=set(checks)
    )
    return job.execute_in_process(instance=instance, tags={RANGE_START: days[0], RANGE_END: days[1]})


def landed(*paths: Path) -> dict[str, str]:
    """The tag of a landing run naming `paths` as they are now (what the landing sensor requests once they are
    stable): such a run lands them in the ingest log before building its days."""
    return {SOURCE_FILES_TAG: json.dumps({str(p): f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths})}


def run_unpartitioned(
    defs: dg.Definitions, stages: list[str], pipeline: str, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey([pipeline, stage]) for stage in stages], raise_on_error=False
    )


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """Check name -> evaluation, for every check the run executed (the last day's, when it judged several)."""
    evaluations = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            assert isinstance(data, dg.AssetCheckEvaluation)
            evaluations[data.check_name] = data
    return evaluations


def check_days(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, dg.AssetCheckEvaluation]]:
    """Check name -> day -> evaluation, for the per-day verdicts the run recorded."""
    verdicts: dict[str, dict[str, dg.AssetCheckEvaluation]] = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            assert isinstance(data, dg.AssetCheckEvaluation)
            assert data.partition is not None, f"{data.check_name} judged no particular day"
            verdicts.setdefault(data.check_name, {})[data.partition] = data
    return verdicts


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


LOOPBACK = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}


def process_tree(root: psutil.Process) -> list[psutil.Process]:
    """`root`, its descendants, and every process of a session one of them leads.

    The dev command starts each service in a session of its own; a process there that outlived its
    parent (re-parented to init) is still part of what the command started.
    """
    tree = {root.pid: root}
    with contextlib.suppress(psutil.NoSuchProcess):
        tree.update((child.pid, child) for child in root.children(recursive=True))
    sessions = set()
    for pid in tree:
        with contextlib.suppress(OSError):
            if os.getsid(pid) == pid:
                sessions.add(pid)
    for process in psutil.process_iter():
        with contextlib.suppress(OSError):
            if process.pid not in tree and os.getsid(process.pid) in sessions:
                tree[process.pid] = process
    return list(tree.values())


@dataclass(frozen=True)
class Listener:
    pid: int
    name: str
    ip: str
    port: int

    @property
    def on_loopback(self) -> bool:
        address = ipaddress.ip_address(self.ip)
        # gRPC listens on an IPv6 socket even for 127.0.0.1: ss shows [::ffff:127.0.0.1].
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address in LOOPBACK

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.name}) listening on {self.ip}:{self.port}"


def is_job_worker(process: psutil.Process) -> bool:
    """A process of MLflow's background job runner: the runner, or one of the huey consumers it starts."""
    with contextlib.suppress(psutil.Error):
        return "mlflow.server.jobs" in " ".join(process.cmdline())
    return False


def tcp_listeners(processes: list[psutil.Process]) -> list[Listener]:
    """Every listening TCP socket (IPv4 and IPv6) of these processes."""
    names = {}
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            names[process.pid] = process.name()
    found = set()
    for connection in psutil.net_connections(kind="tcp"):
        pid = connection.pid
        if connection.status != psutil.CONN_LISTEN or pid is None or pid not in names or not connection.laddr:
            continue
        found.add(Listener(pid, names[pid], connection.laddr.ip, connection.laddr.port))
    return sorted(found, key=lambda listener: (listener.pid, listener.port))


def correct_day(source: Path, target: Path, day: str) -> None:
    """Copy the bike CSV with one day's counts corrected (one more rental each hour): plausible, passes its checks."""
    frame = pd.read_csv(source)
    stamp = pd.Timestamp(day)
    rows = frame["dteday"] == f"{stamp.month}/{stamp.day}/{stamp.strftime('%y')}"
    assert rows.any()
    frame.loc[rows, "cnt"] += 1
    frame.to_csv(target, index=False)


def stale_causes(
    defs: dg.Definitions, instance: dg.DagsterInstance, key: dg.AssetKey, days: list[str]
) -> dict[str, str]:
    """Day -> the first cause Dagster's UI gives, for the days among `days` it shows stale (what the asset page reads:
    the same resolver, over the instance's records)."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._time import get_current_datetime

    graph = defs.resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(instance, graph, view)
    return {
        day: f"{cause.reason} {cause.dependency.partition_key if cause.dependency else ''}"
        for day in days
        if resolver.get_status(key, day) == StaleStatus.STALE
        for cause in resolver.get_stale_causes(key, day)[:1]
    }


def cannot_run_here(reason: str) -> NoReturn:
    """Skip a test this machine lacks something for, saying what; under CI (`CI` set, as `.ci/run` sets it) fail
    instead: CI's machine has everything the tests need, and a skip there would hide a test that never ran."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI is set, and CI must run this test)", pytrace=False)
    pytest.skip(f"{reason}; CI requires it")
