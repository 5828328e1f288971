"""The dev command's Ray head listens on loopback only: a reachable Ray runs anyone's code (CVE-2023-48022).

A real head is started exactly as `make dev` starts it (same command line, same environment), a driver
connects the way the platform's runs do and starts a task and an actor, so the workers' gRPC servers
exist too; then every listening TCP socket of both process trees must be on 127.0.0.1 or ::1.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from support import Listener, process_tree, tcp_listeners

from devtools.stack import GRACE_SECONDS, Ports, pick_ports, ray_head_command, service_env, stop, wait_for_port
from kernel.paths import PROJECT_ROOT

# Connects through RAY_ADDRESS (as dagster-ray's RayCluster does), then keeps a worker and an actor alive.
DRIVER = """
import time, ray
ray.init(address="auto", logging_level="WARNING")

@ray.remote
class Holder:
    def ping(self):
        return "pong"

@ray.remote
def square(x):
    return x * x

holder = Holder.remote()
assert ray.get(holder.ping.remote()) == "pong"
assert ray.get(square.remote(3)) == 9
print("ready", flush=True)
time.sleep(300)
"""


def wait_for_ready(driver: subprocess.Popen[str], timeout: float) -> None:
    assert driver.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = driver.stdout.readline()
        if line.strip() == "ready":
            return
        if not line and driver.poll() is not None:
            break
    pytest.fail(f"the driver did not connect and run a task (exit code {driver.poll()})")


@pytest.mark.timeout(180)
def test_the_dev_ray_head_and_its_workers_listen_on_loopback_only(tmp_path: Path) -> None:
    ports = pick_ports(Ports(dagster=0, mlflow=0, ray=6780, ray_dashboard=8665, ray_client=9401, ray_agent=52765))
    env = service_env(tmp_path, ports)
    log = (tmp_path / "ray.log").open("ab")
    head = subprocess.Popen(
        ray_head_command(ports, cpus=1), env=env, cwd=PROJECT_ROOT, start_new_session=True, stdout=log, stderr=log
    )
    driver: subprocess.Popen[str] | None = None
    try:
        wait_for_port(ports.ray_dashboard, "ray", head, timeout=120)
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER],
            env=env,
            cwd=PROJECT_ROOT,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        wait_for_ready(driver, timeout=120)

        # The agents and the client server come up on their own schedule: wait until the fixed ports
        # are all listening, so the check below looks at a complete head, never a half-started one.
        expected = {ports.ray, ports.ray_dashboard, ports.ray_client, ports.ray_agent}
        deadline = time.monotonic() + 30
        listeners: list[Listener] = []
        while time.monotonic() < deadline:
            trees = [*process_tree(psutil.Process(head.pid)), *process_tree(psutil.Process(driver.pid))]
            listeners = tcp_listeners(trees)
            if expected <= {listener.port for listener in listeners}:
                break
            time.sleep(1)
        listening = "\n  ".join(map(str, listeners))
        assert expected <= {listener.port for listener in listeners}, f"not all of {expected} listen:\n  {listening}"
        names = {listener.name for listener in listeners}
        assert {"gcs_server", "raylet"} <= names, f"the core services are in the tree:\n  {listening}"
        assert any(name.startswith("ray::Holder") for name in names), f"the actor listens:\n  {listening}"

        exposed = [listener for listener in listeners if not listener.on_loopback]
        assert not exposed, "listening beyond loopback:\n  " + "\n  ".join(map(str, exposed))

        # Stopped as the stack stops it (from the top): every process exits on SIGTERM, none is left to SIGKILL.
        tree = [*process_tree(psutil.Process(driver.pid)), *process_tree(psutil.Process(head.pid))]
        names = {process.pid: " ".join(process.cmdline())[:80] for process in tree}
        killed = stop(tree)
        assert not killed, f"needed SIGKILL after {GRACE_SECONDS} s: {[names[p.pid] for p in killed]}"
    finally:
        survivors = process_tree(psutil.Process(head.pid)) if psutil.pid_exists(head.pid) else []
        if driver is not None and psutil.pid_exists(driver.pid):
            survivors += process_tree(psutil.Process(driver.pid))
        stop(survivors)
        head.wait(timeout=30)
        if driver is not None:
            driver.wait(timeout=30)
        log.close()
