"""The Ray head dies mid-run: the run fails with a message naming the task and the time limit, and once a head is
back on the same address the next run succeeds.

Real processes throughout: a Ray head started as `make dev` starts it (own ports, own temp dir, loopback), a Dagster
run in a child process whose asset fans out with the platform's `ray_map` over `RayCluster`, and a `kill -9` of the
head's whole process group while the tasks run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from devtools.stack import Ports, pick_ports, ray_head_command, service_env, stop, wait_for_port
from kernel.paths import PROJECT_ROOT

from .conftest import FaultRow

# One Dagster run: an asset whose four days are Ray tasks of `seconds` each, under `timeout`; prints the outcome.
RUN = """
import json, sys, time
import dagster as dg
from resources.compute import RayCluster, ray_map

seconds, timeout = float(sys.argv[1]), float(sys.argv[2])

def work(day, pause=seconds):
    time.sleep(pause)
    return day

@dg.asset
def days(ray_cluster: RayCluster) -> list[str]:
    print("tasks submitted", flush=True)
    return ray_map(work, [(f"2012-05-0{d}",) for d in range(1, 5)], timeout=timeout)

result = dg.materialize([days], resources={"ray_cluster": RayCluster()}, raise_on_error=False)
failure = next((e.step_failure_data.error.message for e in result.get_step_failure_events()), None)
print(json.dumps({"status": result.dagster_run.status.value, "failure": failure}), flush=True)
"""


class RayHead:
    """A `make dev` Ray head on its own ports and temp dir, which can be killed and started again on them."""

    def __init__(self, ports: Ports, temp_dir: Path, log: Path) -> None:
        self.ports, self.temp_dir, self.log = ports, temp_dir, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [*ray_head_command(self.ports, cpus=2), f"--temp-dir={self.temp_dir}"]
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                command,
                env=service_env(self.temp_dir, self.ports),
                start_new_session=True,
                stdout=output,
                stderr=output,
            )
        wait_for_port(self.ports.ray_dashboard, "ray", self.process, timeout=120)

    def kill(self) -> None:
        """SIGKILL to the head's whole process group (GCS, raylet, dashboard, workers) at once."""
        assert self.process is not None
        os.killpg(self.process.pid, 9)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and psutil.pid_exists(self.process.pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                head = psutil.Process(self.process.pid)
                stop([head, *head.children(recursive=True)])
            self.process.wait(timeout=30)


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[RayHead]:
    # Ray's Unix sockets live under the temp dir, whose path must stay short (108 bytes): not pytest's tmp_path.
    temp_dir = Path(tempfile.mkdtemp(prefix="fault-ray-", dir="/tmp"))
    ports = pick_ports(Ports(dagster=0, mlflow=0, ray=6880, ray_dashboard=8765, ray_client=9501, ray_agent=52865))
    head = RayHead(ports, temp_dir, tmp_path / "ray.log")
    try:
        yield head
    finally:
        head.stop()
        subprocess.run(["rm", "-rf", str(temp_dir)], check=False)


def start_run(head: RayHead, seconds: float, timeout: float) -> subprocess.Popen[str]:
    env = service_env(head.temp_dir, head.ports)
    return subprocess.Popen(
        [sys.executable, "-c", RUN, str(seconds), str(timeout)],
        env=env,
        cwd=PROJECT_ROOT,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def outcome(run: subprocess.Popen[str], timeout: float) -> dict[str, str | None]:
    output, _ = run.communicate(timeout=timeout)
    lines = [line for line in output.splitlines() if line.startswith('{"status"')]
    assert lines, f"the run printed no outcome (exit code {run.returncode}):\n{output[-3000:]}"
    return json.loads(lines[-1])


@pytest.mark.faults
@pytest.mark.timeout(240)
def test_a_run_whose_ray_head_dies_fails_clearly_and_the_next_run_succeeds(ray_head: RayHead, fault: FaultRow) -> None:
    fault.scenario = "Ray head killed mid-run"
    fault.injected = "kill -9 of the head's process group while 4 Ray tasks of 30 s run (limit 10 s)"
    ray_head.start()
    run = start_run(ray_head, seconds=30, timeout=10)
    try:
        assert run.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "tasks submitted" not in run.stdout.readline():
            pass
        time.sleep(2)  # the tasks are running on the head's workers
        ray_head.kill()
        failed = outcome(run, timeout=90)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, 9)
            run.wait(timeout=30)
    assert failed["status"] == "FAILURE", failed
    assert "Ray task work: 4 of 4 not done after 10s" in str(failed["failure"]), failed
    assert "ray_task_timeout_seconds" in str(failed["failure"]), failed

    ray_head.start()  # the same address, as `make dev`'s supervisor restarts it
    succeeded = outcome(start_run(ray_head, seconds=0.1, timeout=60), timeout=120)
    assert succeeded["status"] == "SUCCESS", succeeded
    fault.result = f"run FAILURE: {str(failed['failure'])[:60]}...; after the head is back: SUCCESS"
