"""Run the platform locally: one Ray head, the MLflow UI and Dagster's three services, all on 127.0.0.1.

Dagster runs as in production, one process each: the code server (`dagster code-server start`), the daemon and
the webserver, the last behind the cross-site guard (`python -m webguard`, see webguard/guard.py). `dagster dev`
cannot serve that: it always starts the stock webserver, which runs GraphQL mutations sent with GET from any page.

Every listening socket is on loopback, Ray's internal ones included (GCS, raylet, agents, client
server, workers): see `RAY_LOOPBACK_ENV`; tests/devtools/test_ray_loopback.py checks it on a real head.

A service that dies is reported (exit code, the tail of its log) and restarted alone, with backoff;
one that keeps dying stops the stack with a message (see `supervise`). Ctrl-C (or SIGTERM) stops
every process this command started, from the top (each service, then whatever outlived it; see `stop`), with
a grace period and then SIGKILL; a later start first clears what a crashed run left behind
(`<home>/dev-pids.json`) and settles the runs a kill left STARTED.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import yaml

from kernel.names import TEMPORARY, UNFINISHED_DIR
from kernel.paths import DEFAULT_HOME, PROJECT_ROOT, StatePaths, write_text_atomically

if TYPE_CHECKING:
    import dagster as dg

BIN = Path(sys.executable).parent
# Ray's default worker port range (`--min-worker-port`/`--max-worker-port`): a service port picked inside it
# makes `ray start` fail when a worker wants it (seen when 10001 was taken and the client server got 10002).
RAY_WORKER_PORTS = range(10002, 20000)
GRACE_SECONDS = 10
# What a stopped service left behind gets at least this long to exit on SIGTERM before SIGKILL.
LEFTOVER_GRACE_SECONDS = 2.0
# A service that exits this often within the window is broken, not unlucky: the stack stops instead of looping.
RESTART_LIMIT = 3
RESTART_WINDOW = 600.0
RESTART_BACKOFF = 2.0  # seconds before the first restart, doubled for each further exit within the window
LOG_TAIL_LINES = 20
LOCAL_INSTANCE_CONFIG = PROJECT_ROOT / "deploy" / "local" / "dagster.yaml"
BATCHED_EVENT_LOG = "BatchedSqliteEventLogStorage"  # resources/event_log.py, named by LOCAL_INSTANCE_CONFIG
PROJECT_WORKSPACE = PROJECT_ROOT / "workspace.yaml"
# Their output is the terminal itself (the others log to <home>/logs/).
DAGSTER_SERVICES = ("code-server", "daemon", "webserver")

# Warnings we know and accept, hidden in the dev stack only (other commands and production still show them).
# Matched by the start of their message, because PYTHONWARNINGS resolves a category before site-packages
# is importable: `ignore::dagster._utils.warnings.BetaWarning` is rejected at startup ("Invalid -W option
# ignored") and would hide every beta warning anyway. Anything not listed here still shows.
# Each message must hold no ',' or ':' (PYTHONWARNINGS' separators).
KNOWN_WARNINGS = (
    # BackfillPolicy.single_run makes a 731-day backfill one run instead of 731, and lets the CLI take a range.
    "Parameter `backfill_policy` of function `asset` is currently in beta",
    # features and model read look-back windows that start before the first partition; this lets those days build.
    "Parameter `allow_nonexistent_upstream_partitions` of initializer `TimeWindowPartitionMapping.__init__`"
    " is currently in beta",
    # Checks record one verdict per day (README: Days are the unit of truth); Dagster 1.13 pinned, tests pin it.
    "Specifying a partitions_def on an AssetCheckSpec is currently in preview",
)

# Keeps Ray on loopback (CVE-2023-48022: whoever reaches a Ray port runs code on this machine).
# Every Ray component picks its bind address from the node IP: GCS, raylet and workers listen on
# 127.0.0.1 when the node IP is 127.0.0.1 and on all interfaces otherwise; the dashboard agent,
# runtime-env agent, client server and metrics exporters follow `is_localhost(node_ip)` the same way.
# `--node-ip-address=127.0.0.1` alone does not give that node IP on Linux: `ray start` (and `ray.init`
# for RAY_ADDRESS=127.0.0.1:port) passes it through `services.resolve_ip_for_localhost`, which swaps
# loopback for the machine's routable IP unless `ray_constants.ENABLE_RAY_CLUSTER` is off, and this
# variable turns it off (its other effects: `ray start` neither prints nor accepts `--address` joins).
# So the head needs it, and so does every process that connects (Dagster's services, run workers, tests):
# without it a driver looks for the GCS on the routable IP, where nothing listens any more.
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@dataclass(frozen=True)
class Ports:
    dagster: int
    mlflow: int
    ray: int
    ray_dashboard: int
    ray_client: int
    ray_agent: int
    code_server: int = 4000


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, taken: set[int]) -> int:
    """`preferred` if it is free, else the next free port above it, outside the ports Ray gives its workers."""
    port = preferred
    while port in taken or port in RAY_WORKER_PORTS or not port_free(port):
        port = RAY_WORKER_PORTS.stop if port in RAY_WORKER_PORTS else port + 1
    taken.add(port)
    return port


def wait_for_port(port: int, name: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with code {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.5)
    raise SystemExit(f"{name} did not listen on port {port} within {timeout:.0f}s")


def stop(processes: list[psutil.Process], grace: float = GRACE_SECONDS) -> list[psutil.Process]:
    """Stop processes from the top: SIGTERM to each whose parent is not among them (a service's own process, which
    stops what it started), then to whatever outlives it; SIGKILL to what is left after the grace period, which
    it returns.

    From the top, because a supervisor stops its children in order: `ray start --block` takes its GCS, raylet and
    dashboard down in about 3 s, while the same processes sent SIGTERM together outlive any grace (over 15 s
    measured), and every stop of the stack or of a test's Ray head waited the full grace, then killed.
    """
    deadline = time.monotonic() + grace
    members = {process.pid for process in processes}
    roots = [process for process in processes if _parent_pid(process) not in members]
    _terminate(roots)
    psutil.wait_procs(roots, timeout=grace)
    left = [process for process in processes if _alive(process)]
    _terminate(left)
    _, alive = psutil.wait_procs(left, timeout=max(deadline - time.monotonic(), LEFTOVER_GRACE_SECONDS))
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=GRACE_SECONDS)
    return alive


def _terminate(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()


def _parent_pid(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.NoSuchProcess:
        return None


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def restore_interrupts() -> None:
    """SIGINT's default handler in this process, hence SIGINT's default action in every process it starts.

    Dagster's processes answer SIGTERM with whatever handles SIGINT (`dagster._utils.interrupts`), so where SIGINT
    is ignored (a stack under `nohup`, or a script's background job), the services ignored the SIGTERM that stops
    them and every stop waited the grace, then killed them.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)


def descendants() -> list[psutil.Process]:
    """Everything this command started, including services that moved to their own session."""
    return psutil.Process().children(recursive=True)


def record(pid_file: Path) -> None:
    """Remember (pid, start time) of every descendant, so a later start can clear a crashed run's leftovers.

    Written atomically: a crash or a full disk mid-write leaves the previous list, never half of one.
    """
    entries = []
    for process in descendants():
        with contextlib.suppress(psutil.NoSuchProcess):
            entries.append([process.pid, process.create_time()])
    write_text_atomically(pid_file, json.dumps(entries))


def read_leftovers(pid_file: Path) -> list[tuple[int, float]]:
    """The (pid, start time) pairs of `pid_file`; a file that does not parse is reported and ignored.

    It only lists what a crashed run may have left running, so a damaged one must not stop `make dev`.
    """
    try:
        entries = json.loads(pid_file.read_text())
        return [(int(pid), float(started)) for pid, started in entries if int(pid) > 0]
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        print(
            f"warning: {pid_file} is not valid JSON or not a list of [pid, start time] ({exc}); ignoring it. "
            "Processes a crashed earlier `make dev` left running, if any, are not stopped: look for "
            "ray/mlflow/dagster processes of this project and stop them if ports are busy.",
            file=sys.stderr,
        )
        return []


def clear_leftovers(pid_file: Path) -> None:
    if not pid_file.exists():
        return
    leftovers = []
    for pid, started in read_leftovers(pid_file):
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            if process.create_time() == started:  # not a reused pid
                leftovers.append(process)
    if leftovers:
        print(f"stopping {len(leftovers)} process(es) left over from an earlier run")
        stop(leftovers)
    pid_file.unlink()


def recover_interrupted(home: Path) -> list[str]:
    """Settle what a killed run left behind, before the services start; return what was done, one line each.

    A run whose process died (kill -9, OOM, a crashed `make dev`) stays STARTED forever locally: Dagster's run
    monitoring only fails such a run through the run launcher's worker health check, and the default run launcher
    has none (K8sRunLauncher has). So a run still unfinished here, none of whose recent events came from a live
    process, is marked FAILED and its pool slots freed; its MLflow runs still RUNNING end FAILED; and when no run
    is alive any more, the asset store's temp files (`_unfinished/*.tmp-*`: writes cut short before their rename; no
    reader ever sees them) are removed.
    """
    import dagster as dg

    state = StatePaths(home)
    done: list[str] = []
    if not (state.dagster_home / "dagster.yaml").exists():
        return done
    with dg.DagsterInstance.from_config(str(state.dagster_home)) as instance:
        statuses = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
        unfinished = instance.get_run_records(filters=dg.RunsFilter(statuses=statuses))
        alive = [record.dagster_run.run_id for record in unfinished if run_process_alive(instance, record)]
        for record in unfinished:
            run = record.dagster_run
            if run.run_id in alive:
                continue
            instance.report_run_failed(
                run, message=f"{run.status.value} with no live process at `make dev` start: its process was killed"
            )
            done.append(f"marked run {run.run_id} FAILED (was {run.status.value}, no live process)")
            # Its pool slots too: a killed champion, rollback or promotion would otherwise hold the `promotion`
            # pool (limit 1) for good, and every later writer of the champion alias would wait forever.
            if instance.event_log_storage.supports_global_concurrency_limits:
                instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed = {
            record.dagster_run.run_id
            for record in instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        }
    done += end_orphaned_mlflow_runs(state, failed)
    if not alive and state.assets.exists():
        for leftover in sorted((state.assets / UNFINISHED_DIR).glob(f"*{TEMPORARY}*")):
            leftover.unlink()
            done.append(f"removed {leftover.relative_to(home)} (a write cut short)")
    return done


def run_process_alive(instance: dg.DagsterInstance, record: dg.RunRecord) -> bool:
    """Whether a process that logged one of the run's latest events is still running (and is not a reused pid)."""
    for event in instance.get_records_for_run(record.dagster_run.run_id, limit=50, ascending=False).records:
        entry = event.event_log_entry
        pid = entry.dagster_event.pid if entry.dagster_event is not None else None
        with contextlib.suppress(psutil.NoSuchProcess):
            if pid is not None and psutil.Process(pid).create_time() <= entry.timestamp:
                return True
    return False


def end_orphaned_mlflow_runs(state: StatePaths, failed_dagster_runs: set[str]) -> list[str]:
    """End FAILED the local MLflow runs still RUNNING whose Dagster run failed (they can never finish)."""
    if not failed_dagster_runs or not (state.mlflow_dir / "mlflow.db").exists():
        return []
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=state.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    done = []
    for run in client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'"):
        if run.data.tags.get("dagster_run_id") in failed_dagster_runs:
            client.set_terminated(run.info.run_id, status="FAILED")
            done.append(f"ended MLflow run {run.info.run_id} FAILED (its Dagster run failed)")
    return done


def prepare_home(home: Path) -> Path:
    state = StatePaths(home)
    dagster_home = state.dagster_home
    dagster_home.mkdir(parents=True, exist_ok=True)
    state.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        shutil.copy(LOCAL_INSTANCE_CONFIG, config)
    elif added := add_missing_settings(config, LOCAL_INSTANCE_CONFIG):
        print(f"added {', '.join(added)} to {config} (from {LOCAL_INSTANCE_CONFIG.relative_to(PROJECT_ROOT)})")
    place_event_log(config, dagster_home / "storage")
    return dagster_home


def place_event_log(config: Path, storage: Path) -> None:
    """Name the home's own `storage` folder (Dagster's default place for its event log) as the batched event log's
    base_dir: an instance opened from the folder (`DagsterInstance.from_config`) has no DAGSTER_HOME to derive it."""
    text = config.read_text()
    ours = f"  class: {BATCHED_EVENT_LOG}\n"
    event_log = (yaml.safe_load(text) or {}).get("event_log_storage") or {}
    if event_log.get("class") == BATCHED_EVENT_LOG and "config" not in event_log and ours in text:
        text = text.replace(ours, f"{ours}  config:\n    base_dir: {json.dumps(str(storage))}\n", 1)
        config.write_text(text)


def add_missing_settings(config: Path, template: Path) -> list[str]:
    """Append the template's top-level settings that `config` lacks; return their names.

    An existing home keeps every setting it has (a developer may have tuned it), so nothing is overwritten;
    a setting the project added later (such as `nux`) still reaches homes made before it.
    """
    text = config.read_text()
    current = yaml.safe_load(text) or {}
    missing = {key: value for key, value in (yaml.safe_load(template.read_text()) or {}).items() if key not in current}
    if missing:
        separator = "" if not text or text.endswith("\n") else "\n"
        added = yaml.safe_dump(missing, sort_keys=False)
        config.write_text(f"{text}{separator}# Added by `make dev` from {template.relative_to(PROJECT_ROOT)}:\n{added}")
    return list(missing)


def quiet_warnings(existing: str | None) -> str:
    """PYTHONWARNINGS that ignores KNOWN_WARNINGS; the caller's own entries come last, so they win."""
    ours = [f"ignore:{message}:Warning" for message in KNOWN_WARNINGS]
    return ",".join([*ours, *([existing] if existing else [])])


# `mlflow server` without MLflow's background job runner (GenAI scorers and prompt optimisation, which the platform
# does not use): on by default, it starts eight more processes (huey consumers) that import MLflow after the server
# answers, ~36 s of CPU here, and hold ~0.5 s per 30 s idle. Production's Deployment sets the same
# (deploy/mlflow/deployment.yaml).
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def service_env(home: Path, ports: Ports) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PLATFORM_ENV": "local",
            "PLATFORM_HOME": str(home),
            "DAGSTER_HOME": str(StatePaths(home).dagster_home),
            "RAY_ADDRESS": f"127.0.0.1:{ports.ray}",
            # Loopback-only cluster: every process must agree on the auth mode (Ray 2.60 defaults to token).
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            **RAY_LOOPBACK_ENV,
            "PLATFORM_MLFLOW_UI_URL": f"http://127.0.0.1:{ports.mlflow}",
            "MLFLOW_TRACKING_URI": StatePaths(home).tracking_uri,
            **MLFLOW_SERVER_ENV,
            # MLflow's own model loaders off: models load only through their verified lineage (load_verified).
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
            # Inherited by Dagster's webserver, daemon, code server and every run worker.
            "PYTHONWARNINGS": quiet_warnings(os.environ.get("PYTHONWARNINGS")),
            # The names the guarded webserver answers to: its own loopback URL only (webguard/__main__.py).
            "PLATFORM_UI_HOSTS": f"127.0.0.1:{ports.dagster},localhost:{ports.dagster}",
        }
    )
    return env


def ray_head_command(ports: Ports, cpus: int) -> list[str]:
    """A blocking `ray start --head` bound to loopback on the given ports.

    `env` pins RAY_LOOPBACK_ENV on the head itself, so a caller whose environment lacks it gets a head
    its drivers cannot reach (a loud failure), never a head that listens on every interface.
    """
    return [
        "env", *(f"{name}={value}" for name, value in RAY_LOOPBACK_ENV.items()),
        str(BIN / "ray"), "start", "--head", "--block",
        f"--port={ports.ray}", f"--dashboard-port={ports.ray_dashboard}",
        f"--ray-client-server-port={ports.ray_client}", f"--dashboard-agent-listen-port={ports.ray_agent}",
        "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1",
        f"--num-cpus={cpus}", "--disable-usage-stats",
    ]  # fmt: skip


def ray_node_command(address: str, cpus: float, resources: dict[str, float] | None = None) -> list[str]:
    """A blocking local Ray worker node (`devtools/ray_node.py`) with `cpus` CPUs and custom `resources`, joined to
    the head at `address`."""
    return [
        sys.executable, "-m", "devtools.ray_node", "--address", address, "--num-cpus", f"{cpus:g}",
        "--resources", json.dumps(resources or {}),
    ]  # fmt: skip


def code_server_workspace(home: Path, ports: Ports, location: dict[str, str]) -> Path:
    """A workspace file pointing the webserver and daemon at the one code server (as `dagster dev` writes one)."""
    workspace = StatePaths(home).dagster_home / "workspace.yaml"
    server = {"host": "127.0.0.1", "port": ports.code_server, "location_name": location["location_name"]}
    write_text_atomically(workspace, yaml.safe_dump({"load_from": [{"grpc_server": server}]}))
    return workspace


def commands(home: Path, ports: Ports, ray_cpus: int, ray_workers: int = 0) -> dict[str, list[str]]:
    """Every service's command, in start order; `ray_workers` local Ray worker nodes of one CPU each join the head."""
    state = StatePaths(home)
    location = yaml.safe_load(PROJECT_WORKSPACE.read_text())["load_from"][0]["python_module"]
    workspace = str(code_server_workspace(home, ports, location))
    workers = {f"ray-worker-{n}": ray_node_command(f"127.0.0.1:{ports.ray}", cpus=1) for n in range(1, ray_workers + 1)}
    return {
        "ray": ray_head_command(ports, ray_cpus),
        **workers,
        "mlflow": [
            str(BIN / "mlflow"), "server",
            "--backend-store-uri", state.tracking_uri,
            "--default-artifact-root", state.mlflow_artifacts.as_uri(),
            "--host", "127.0.0.1", "--port", str(ports.mlflow), "--workers", "1",
        ],
        "code-server": [
            str(BIN / "dagster"), "code-server", "start", "-m", location["module_name"],
            "--location-name", location["location_name"], "-h", "127.0.0.1", "-p", str(ports.code_server),
        ],
        "daemon": [str(BIN / "dagster-daemon"), "run", "-w", workspace],
        "webserver": [
            sys.executable, "-m", "webguard", "-w", workspace, "-h", "127.0.0.1", "-p", str(ports.dagster),
        ],
    }  # fmt: skip


def print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line, flush=True)


@dataclass
class Service:
    """One supervised process: its command, the port that says it is up (None: none, such as the daemon's), and its
    log (None: the terminal)."""

    name: str
    command: list[str]
    ready_port: int | None
    log: Path | None
    ready_timeout: float = 180
    process: subprocess.Popen[bytes] | None = None
    exits: list[float] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> None:
        output = None if self.log is None else self.log.open("ab")
        try:
            self.process = subprocess.Popen(
                self.command, env=env, cwd=PROJECT_ROOT, start_new_session=True, stdout=output, stderr=output
            )
        finally:
            if output is not None:
                output.close()

    def wait_ready(self) -> None:
        assert self.process is not None
        if self.ready_port is not None:
            wait_for_port(self.ready_port, self.name, self.process, timeout=self.ready_timeout)

    def stop_group(self) -> None:
        """Stop what the dead service left in its process group: a killed `ray start` leaves its GCS and raylet
        holding the ports, a killed code server its gRPC server and the run workers it started."""
        assert self.process is not None
        stop([p for p in psutil.process_iter() if _pgid(p) == self.process.pid])

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.log is None:
            return "  (its output is on this terminal, above)"
        with contextlib.suppress(OSError):
            tail = self.log.read_text(errors="replace").splitlines()[-lines:]
            return "\n".join(f"  | {line}" for line in tail)
        return f"  (no log at {self.log})"


def _pgid(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, psutil.NoSuchProcess):
        return None


def supervise(
    services: list[Service],
    env: dict[str, str],
    pid_file: Path,
    on_restart: Callable[[], None],
    poll: float = 2,
) -> int:
    """Watch the services; report one that exits (exit code, log tail) and restart it alone, with backoff.

    The MLflow UI and the Ray head are safe to restart: runs write to MLflow's store, not through the UI, and a run
    whose Ray tasks died with the head fails on its task time limit, the next run connects to the new head. Dagster's
    services are restarted too, each only once its whole process group is stopped (the code server's holds its run
    workers) and `on_restart` (the start's own recovery, run before every restart) has failed the runs that died
    with it: a fresh daemon never runs beside an old one, which would launch a backfill's runs twice.
    A service that exits `RESTART_LIMIT` times within `RESTART_WINDOW` seconds is broken, not unlucky: then the
    stack stops everything (returns 1) with that message rather than loop. Returns only then.
    """
    while True:
        for service in services:
            assert service.process is not None
            code = service.process.poll()
            if code is None:
                continue
            now = time.monotonic()
            service.exits = [t for t in service.exits if now - t < RESTART_WINDOW] + [now]
            print(
                f"{service.name} exited with code {code}; the last lines of its log:\n{service.log_tail()}",
                file=sys.stderr,
                flush=True,
            )
            service.stop_group()
            if len(service.exits) >= RESTART_LIMIT:
                print(
                    f"{service.name} exited {len(service.exits)} times within {RESTART_WINDOW:.0f}s: not restarting "
                    f"it again; stopping everything. Fix the cause (its log above), then start again.",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            backoff = RESTART_BACKOFF * 2 ** (len(service.exits) - 1)
            print(
                f"restarting {service.name} in {backoff:.0f}s (the other services keep running)",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(backoff)
            on_restart()
            service.start(env)
            record(pid_file)
            try:
                service.wait_ready()
            except SystemExit as exc:
                print(f"{service.name} did not come back: {exc}", file=sys.stderr, flush=True)
                service.stop_group()  # exited or hung: either way the next pass reports it and counts it
                continue
            print(f"{service.name} is back (pid {service.process.pid})", flush=True)
        record(pid_file)
        time.sleep(poll)


def pick_ports(preferred: Ports) -> Ports:
    """The preferred ports where free, else the next free ones."""
    taken: set[int] = set()
    return Ports(**{name: pick_port(port, taken) for name, port in preferred.__dict__.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("PLATFORM_HOME", DEFAULT_HOME)))
    parser.add_argument("--dagster-port", type=int, default=3000)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--ray-port", type=int, default=6380)
    parser.add_argument("--ray-dashboard-port", type=int, default=8265)
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--ray-workers",
        type=int,
        default=0,
        help="local Ray worker nodes (1 CPU each) to join the head, to watch "
        "range runs spread over nodes in the Ray dashboard",
    )
    args = parser.parse_args(argv)

    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    pid_file = StatePaths(home).dev_pids
    clear_leftovers(pid_file)
    prepare_home(home)
    print_lines(recover_interrupted(home))
    ports = pick_ports(
        Ports(
            dagster=args.dagster_port,
            mlflow=args.mlflow_port,
            ray=args.ray_port,
            ray_dashboard=args.ray_dashboard_port,
            ray_client=10001,
            ray_agent=52365,
        )
    )
    env = service_env(home, ports)
    logs = StatePaths(home).logs
    logs.mkdir(exist_ok=True)

    ready_ports = {
        "ray": ports.ray_dashboard, "mlflow": ports.mlflow, "code-server": ports.code_server, "daemon": None,
        "webserver": ports.dagster,
    }  # fmt: skip
    services = [
        Service(name, command, ready_ports.get(name), None if name in DAGSTER_SERVICES else logs / f"{name}.log")
        for name, command in commands(home, ports, args.ray_cpus, args.ray_workers).items()
    ]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    restore_interrupts()
    try:
        for service in services:
            service.start(env)
            record(pid_file)
            service.wait_ready()
        print(
            "\nPlatform is up:\n"
            f"  Dagster UI     http://127.0.0.1:{ports.dagster}\n"
            f"  MLflow UI      http://127.0.0.1:{ports.mlflow}\n"
            f"  Ray dashboard  http://127.0.0.1:{ports.ray_dashboard}\n"
            f"State in {home} (logs in {logs}). Ctrl-C stops everything.\n",
            flush=True,
        )
        return supervise(services, env, pid_file, on_restart=lambda: print_lines(recover_interrupted(home)))
    except KeyboardInterrupt:
        return 0
    finally:
        stop(descendants())
        pid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
