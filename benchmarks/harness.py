"""The main process's plumbing: temp state per section, measured subprocesses, sampling, the Ray head."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import StageFailed, bench_pipeline, write_bench_spec
from devtools.stack import RAY_LOOPBACK_ENV
from kernel.paths import PROJECT_ROOT, StatePaths

if TYPE_CHECKING:
    import psutil

    from kernel.pipeline import Pipeline

RUN_SCRIPT = Path(__file__).resolve().with_name("run.py")
WORKER_TIMEOUT_S = 1800
MB = 1024 * 1024


def _is_ray_worker(process: psutil.Process) -> bool:
    cmdline = process.cmdline()
    return bool(cmdline) and (cmdline[0].startswith("ray::") or any("default_worker.py" in c for c in cmdline))


def _is_ray_process(process: psutil.Process) -> bool:
    """A Ray worker or one of Ray's own services (raylet, GCS, dashboard, log monitor, ...)."""
    return _is_ray_worker(process) or any("/ray/" in part or "ray/_private" in part for part in process.cmdline()[:2])


def _descendants(roots: Sequence[int]) -> list[psutil.Process]:
    """Every live descendant of the processes `roots` (those gone are skipped)."""
    import psutil

    found: list[psutil.Process] = []
    for root in roots:
        with contextlib.suppress(psutil.Error):
            found += psutil.Process(root).children(recursive=True)
    return found


class ProcessSampler:
    """Peak RSS of a measured process tree (and of each of its processes that is not Ray's) and of the Ray workers,
    and the CPU time the Ray workers used, sampled from outside every 0.5 s (Ray workers are children of a raylet,
    of the head's or of a worker node's, not of the measured process)."""

    def __init__(self, root_pid: int, ray_roots: Sequence[int], interval: float = 0.5) -> None:
        self.root_pid, self.ray_roots, self.interval = root_pid, tuple(ray_roots), interval
        self.pid_peaks_mb: dict[int, float] = {}  # non-Ray processes of the tree: pid -> peak RSS
        self.peaks: dict[str, float] = {"tree_sum_mb": 0.0, "tree_max_mb": 0.0, "ray_workers_sum_mb": 0.0}
        self.peaks["ray_worker_max_mb"] = 0.0
        self.ray_cpu: dict[int, list[float]] = {}  # pid -> [cpu seconds at the window start, last seen]
        self.tree_cpu: dict[int, float] = {}  # pid -> last seen cpu seconds (catches children nobody waits for)
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()

    def _rss(self, processes: list[psutil.Process]) -> list[float]:
        import psutil

        values = []
        for process in processes:
            with contextlib.suppress(psutil.Error):
                values.append(process.memory_info().rss / MB)
        return values

    def _sample(self) -> None:
        import psutil

        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.root_pid)
            members = [root, *root.children(recursive=True)]
            for process in members:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    self.tree_cpu[process.pid] = times.user + times.system
            tree = self._rss(members)
            for process in members:
                with contextlib.suppress(psutil.Error):
                    if not _is_ray_process(process):
                        rss = process.memory_info().rss / MB
                        self.pid_peaks_mb[process.pid] = max(self.pid_peaks_mb.get(process.pid, 0.0), rss)
            if tree:
                self.peaks["tree_sum_mb"] = max(self.peaks["tree_sum_mb"], sum(tree))
                self.peaks["tree_max_mb"] = max(self.peaks["tree_max_mb"], *tree)
        workers = []
        for process in _descendants(self.ray_roots):
            with contextlib.suppress(psutil.Error):
                if _is_ray_worker(process):
                    workers.append(process)
                    times = process.cpu_times()
                    cpu = times.user + times.system
                    if process.pid not in self.ray_cpu:
                        baseline = 0.0 if process.create_time() >= self.started else cpu
                        self.ray_cpu[process.pid] = [baseline, cpu]
                    self.ray_cpu[process.pid][1] = cpu
        rss = self._rss(workers)
        if rss:
            self.peaks["ray_workers_sum_mb"] = max(self.peaks["ray_workers_sum_mb"], sum(rss))
            self.peaks["ray_worker_max_mb"] = max(self.peaks["ray_worker_max_mb"], *rss)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def summary(self) -> dict[str, float | int]:
        ray_cpu = sum(last - first for first, last in self.ray_cpu.values())
        return {
            **{k: round(v, 1) for k, v in self.peaks.items()},
            "ray_workers_seen": len(self.ray_cpu),
            "ray_workers_cpu_s": round(ray_cpu, 2),
            "tree_cpu_sampled_s": round(sum(self.tree_cpu.values()), 2),
        }


@dataclass
class Measured:
    """One measured subprocess: exit code, wall seconds, CPU seconds, sampled peaks and its log."""

    code: int
    wall_s: float
    cpu_s: float
    sampled: dict[str, float | int]
    pid_peaks_mb: dict[int, float]
    log: Path


@dataclass
class Bench:
    """Temp state, the Ray head and the spec copy every measurement shares."""

    tmp: Path
    specs_dir: Path
    pipeline: Pipeline
    ray_address: str = ""
    ray_head_pid: int | None = None
    ray_node_pids: list[int] = field(default_factory=list)
    logs: Path = field(init=False)

    @classmethod
    def create(cls, tmp: Path) -> Bench:
        """A bench in `tmp`: the spec copy in `tmp/specs` and the platform's view of it."""
        specs_dir = write_bench_spec(tmp / "specs").parent
        return cls(tmp=tmp, specs_dir=specs_dir, pipeline=bench_pipeline(specs_dir))

    def __post_init__(self) -> None:
        self.logs = self.tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def home(self, name: str, instance: str = "minimal") -> StatePaths:
        """A platform state folder for one section, its Dagster home with the dagster.yaml of `instance`
        (`benchmarks.instances`; by default one that only turns telemetry off)."""
        from benchmarks.instances import write_instance

        state = StatePaths(self.tmp / f"home_{name}")
        state.dagster_home.mkdir(parents=True, exist_ok=True)
        write_instance(state.dagster_home, instance, new=True)
        return state

    def env(self, state: StatePaths | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "RAY_AUTH_MODE": "disabled",
                "RAY_USAGE_STATS_ENABLED": "0",
                # The head is loopback-only; its drivers must resolve 127.0.0.1 the same way to reach it.
                **RAY_LOOPBACK_ENV,
                "PLATFORM_ENV": "local",
                "PLATFORM_ROOT": str(PROJECT_ROOT),
                "PLATFORM_SPECS_DIR": str(self.specs_dir),
                "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            }
        )
        if self.ray_address:
            env["RAY_ADDRESS"] = self.ray_address
        if state is not None:
            env["PLATFORM_HOME"] = str(state.home)
            env["DAGSTER_HOME"] = str(state.dagster_home)
        return env

    def run(
        self,
        label: str,
        command: list[str],
        env: Mapping[str, str],
        *,
        check: bool = True,
        timeout: float = WORKER_TIMEOUT_S,
    ) -> Measured:
        """Run a measured subprocess and wait for it (CPU time from the rusage of waited-for children)."""
        log = self.logs / f"{label}.log"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with log.open("wb") as handle:
            started = time.perf_counter()
            process = subprocess.Popen(
                command, env=dict(env), cwd=PROJECT_ROOT, stdout=handle, stderr=subprocess.STDOUT
            )
            ray_roots = [pid for pid in (self.ray_head_pid, *self.ray_node_pids) if pid is not None]
            with ProcessSampler(process.pid, ray_roots) as sampler:
                try:
                    code = process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    raise StageFailed(f"{label}: timed out after {timeout}s (log: {log})") from None
            wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        waited = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        # rusage misses children the measured process never waits for (forkserver workers); sampling misses
        # processes shorter than the interval: take the larger.
        cpu = max(waited, float(sampler.summary()["tree_cpu_sampled_s"]))
        if check and code != 0:
            raise StageFailed(f"{label}: exited with code {code} (log: {log}):\n{tail(log)}")
        return Measured(code, wall, cpu, sampler.summary(), sampler.pid_peaks_mb, log)

    def worker(
        self, label: str, name: str, args: Mapping[str, Any], state: StatePaths, *, timeout: float = WORKER_TIMEOUT_S
    ) -> dict[str, Any]:
        """Run `run.py --worker NAME` measured and return its result plus what was measured from outside."""
        out = self.tmp / f"{label}.json"
        command = [sys.executable, str(RUN_SCRIPT), "--worker", name]
        command += ["--worker-args", json.dumps(args), "--worker-out", str(out)]
        print(f"  · {label} ...", end="", flush=True)
        load_before = os.getloadavg()[0]
        measured = self.run(label, command, self.env(state), timeout=timeout)
        result: dict[str, Any] = json.loads(out.read_text())
        result["process_wall_s"] = round(measured.wall_s, 2)
        result["process_cpu_s"] = round(measured.cpu_s, 2)
        result["cpu_incl_ray_workers_s"] = round(measured.cpu_s + float(measured.sampled["ray_workers_cpu_s"]), 2)
        result["sampled_rss"] = measured.sampled
        result["sampled_rss_by_pid"] = {str(pid): round(mb, 1) for pid, mb in measured.pid_peaks_mb.items()}
        result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        print(f" {measured.wall_s:.1f}s wall, {result['cpu_incl_ray_workers_s']:.1f}s CPU", flush=True)
        return result


def tail(path: Path, lines: int = 25) -> str:
    """The worker's own failure message if it wrote one, else the end of its log."""
    text = path.read_text(errors="replace")
    marker = "BENCHMARK STAGE FAILED: "
    if marker in text:
        return text[text.rindex(marker) + len(marker) :].strip()
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def ray_head(bench: Bench, cpus: int | None = None) -> Iterator[None]:
    """One Ray head on free loopback ports with `cpus` CPUs (default: the machine's; 0: a driver-only head whose
    tasks all run on worker nodes), stopped (with its whole process tree) on exit."""
    import psutil

    from devtools.stack import Ports, pick_ports, ray_head_command, stop, wait_for_port

    ports = pick_ports(Ports(dagster=0, mlflow=0, ray=6680, ray_dashboard=8565, ray_client=9301, ray_agent=52665))
    log = (bench.logs / "ray_head.log").open("ab")
    env = bench.env()
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        ray_head_command(ports, cpus=(os.cpu_count() or 2) if cpus is None else cpus),
        env=env,
        cwd=PROJECT_ROOT,
        start_new_session=True,
        stdout=log,
        stderr=log,
    )
    try:
        started = time.perf_counter()
        try:
            wait_for_port(ports.ray_dashboard, "ray", head, timeout=120)
        except SystemExit as exc:
            raise StageFailed(f"Ray head did not start: {exc} (log: {bench.logs / 'ray_head.log'})") from None
        bench.ray_address, bench.ray_head_pid = f"127.0.0.1:{ports.ray}", head.pid
        print(f"Ray head at {bench.ray_address} (pid {head.pid}) up in {time.perf_counter() - started:.1f}s")
        yield
    finally:
        bench.ray_address, bench.ray_head_pid = "", None
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(head.pid)
            stop([parent, *parent.children(recursive=True)])
        log.close()


NODE_JOINED = "Ray worker node "
NODE_JOIN_TIMEOUT_S = 120


@contextlib.contextmanager
def ray_node(bench: Bench, cpus: float = 1) -> Iterator[int]:
    """One more local Ray worker node (`devtools/ray_node.py`) with `cpus` CPUs joined to the bench's head, its pid
    sampled with the head's; stopped (SIGTERM, then its whole tree) on exit. A node that exits before it joined is
    started again until `NODE_JOIN_TIMEOUT_S`: a head whose dashboard is up may not have registered itself in its GCS
    yet, and a node started then gives up at once ("No node info found for head node")."""
    import psutil

    from devtools.stack import stop

    if not bench.ray_address:
        raise StageFailed("a Ray worker node needs the bench's head: start it first (ray_head)")
    log_path = bench.logs / f"ray_node_{len(bench.ray_node_pids) + 1}.log"
    node = _start_node(bench, cpus, log_path)
    try:
        deadline = time.monotonic() + NODE_JOIN_TIMEOUT_S
        while NODE_JOINED not in log_path.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise StageFailed(f"Ray worker node did not join {bench.ray_address} (log: {log_path})")
            if node.poll() is not None:
                time.sleep(2)
                node = _start_node(bench, cpus, log_path)
            time.sleep(0.5)
        bench.ray_node_pids.append(node.pid)
        yield node.pid
    finally:
        if node.pid in bench.ray_node_pids:
            bench.ray_node_pids.remove(node.pid)
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(node.pid)
            stop([parent, *parent.children(recursive=True)])


def _start_node(bench: Bench, cpus: float, log_path: Path) -> subprocess.Popen[bytes]:
    from devtools.stack import ray_node_command

    with log_path.open("ab") as log:
        return subprocess.Popen(
            ray_node_command(bench.ray_address, cpus),
            env=bench.env(),
            cwd=PROJECT_ROOT,
            start_new_session=True,
            stdout=log,
            stderr=log,
        )
