"""One service of `make dev` dies: it is reported and restarted alone; one that keeps dying stops the stack clearly.

`devtools.stack.supervise` (what `make dev` runs once the platform is up) watches two real services in a child
process: `steady` and `flaky`, each a real HTTP server on a loopback port. `flaky` also leaves a child in its process
group, as a killed `ray start` leaves its GCS and raylet holding ports. The test kills `flaky` with SIGKILL three
times; `steady` must never be touched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests
from dev_stack import free_port

from devtools.stack import RESTART_LIMIT, stop
from kernel.paths import PROJECT_ROOT

from .conftest import FaultRow, wait_until

SERVER = "import http.server as h; h.HTTPServer(('127.0.0.1', {port}), h.SimpleHTTPRequestHandler).serve_forever()"
# `flaky` says it serves (the log tail must show it), leaves a grandchild in its group, then serves.
FLAKY = "import subprocess, sys; print('flaky serving', flush=True); subprocess.Popen(['sleep', '600']); " + SERVER

SUPERVISOR = """
import sys
from pathlib import Path
from devtools.stack import Service, descendants, stop, supervise

logs, steady_port, flaky_port, steady, flaky = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:6]
services = [
    Service("steady", [sys.executable, "-c", steady], steady_port, logs / "steady.log", ready_timeout=30),
    Service("flaky", [sys.executable, "-c", flaky], flaky_port, logs / "flaky.log", ready_timeout=30),
]
try:
    for service in services:
        service.start({})
        service.wait_ready()
    print("up", flush=True)
    code = supervise(services, {}, logs / "pids.json", on_restart=lambda: print("recovery ran", flush=True), poll=0.2)
finally:
    stop(descendants())
sys.exit(code)
"""


def serving(port: int) -> int | None:
    """The pid of the process listening on `port`, if any."""
    for connection in psutil.net_connections("tcp"):
        if connection.status == psutil.CONN_LISTEN and tuple(connection.laddr)[1:] == (port,) and connection.pid:
            return connection.pid
    return None


@pytest.mark.faults
@pytest.mark.timeout(120)
def test_a_dead_service_is_reported_and_restarted_alone_and_one_that_keeps_dying_stops_the_stack(
    tmp_path: Path, fault: FaultRow
) -> None:
    fault.scenario = "one dev service dies"
    fault.injected = f"kill -9 of one of two supervised services, {RESTART_LIMIT} times"
    steady_port, flaky_port = free_port(), free_port()
    output = tmp_path / "supervisor.out"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    with output.open("wb") as out:
        supervisor = subprocess.Popen(
            [
                sys.executable, "-c", SUPERVISOR, str(tmp_path), str(steady_port), str(flaky_port),
                SERVER.format(port=steady_port), FLAKY.format(port=flaky_port),
            ],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    text = output.read_text
    try:
        wait_until("both services up", lambda: "up" in text().split(), 60, output)
        steady = serving(steady_port)
        assert steady is not None
        restarts = []
        for kill in range(1, RESTART_LIMIT + 1):
            flaky = serving(flaky_port)
            assert flaky is not None
            grandchild = [p for p in psutil.Process(flaky).children() if p.name() == "sleep"]
            os.kill(flaky, 9)
            if kill < RESTART_LIMIT:
                wait_until(f"restart {kill}", lambda n=kill: text().count("flaky is back") == n, 30, output)
                assert serving(flaky_port) not in (None, flaky)
                assert not any(p.is_running() for p in grandchild), "the dead service's process group is stopped"
                restarts.append(serving(flaky_port))
            assert serving(steady_port) == steady, "the other service keeps running, untouched"
            requests.get(f"http://127.0.0.1:{steady_port}/", timeout=5).raise_for_status()
        code = supervisor.wait(timeout=60)
    finally:
        if supervisor.poll() is None:
            stop([psutil.Process(supervisor.pid), *psutil.Process(supervisor.pid).children(recursive=True)])
    log = text()
    assert "flaky exited with code -9; the last lines of its log:\n  | flaky serving" in log
    assert re.search(r"restarting flaky in 2s \(the other services keep running\)", log), log
    assert "restarting flaky in 4s" in log
    assert log.count("recovery ran") == RESTART_LIMIT - 1
    assert f"flaky exited {RESTART_LIMIT} times within 600s: not restarting it again; stopping everything" in log
    assert code == 1
    assert serving(steady_port) is None and serving(flaky_port) is None, "then everything is stopped"
    fault.result = (
        f"reported with exit code and log tail, restarted alone {len(restarts)}x (2 s, 4 s backoff), the other "
        f"untouched; exit {RESTART_LIMIT} in 600 s: stack stopped with a message, code 1"
    )
