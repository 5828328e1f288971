"""The dev command's process bookkeeping: free ports, leftovers of a crashed run cleared, a damaged list ignored."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from devtools.stack import clear_leftovers, pick_port, port_free, record, restore_interrupts, stop


def test_pick_port_skips_busy_and_taken_ports() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = int(busy.getsockname()[1])
        assert not port_free(port)
        taken = {port + 1}
        chosen = pick_port(port, taken)
    assert chosen not in {port, port + 1}
    assert chosen in taken


def test_leftovers_of_a_crashed_run_are_stopped(tmp_path: Path) -> None:
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    process = psutil.Process(leftover.pid)
    pid_file = tmp_path / "dev-pids.json"
    pid_file.write_text(json.dumps([[leftover.pid, process.create_time()]]))

    clear_leftovers(pid_file)

    assert leftover.wait(timeout=15) is not None
    assert not pid_file.exists()


def test_a_reused_pid_is_left_alone(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        pid_file = tmp_path / "dev-pids.json"
        started = psutil.Process(bystander.pid).create_time()
        pid_file.write_text(json.dumps([[bystander.pid, started - 1000]]))  # same pid, another process

        clear_leftovers(pid_file)

        assert bystander.poll() is None
        assert not pid_file.exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_taken_port_never_moves_into_rays_worker_port_range() -> None:
    from devtools.stack import RAY_WORKER_PORTS, pick_port

    assert pick_port(RAY_WORKER_PORTS.start, set()) >= RAY_WORKER_PORTS.stop
    assert pick_port(RAY_WORKER_PORTS.start - 1, {RAY_WORKER_PORTS.start - 1}) >= RAY_WORKER_PORTS.stop


def test_a_pid_file_of_the_wrong_shape_is_ignored_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pid_file = tmp_path / "dev-pids.json"
    for damaged in ('{"pid": 1}', "[[1, 2, 3]]", '[["x", 1.0]]', "\xff\xfe"):
        pid_file.write_text(damaged, encoding="latin-1")

        clear_leftovers(pid_file)

        assert f"warning: {pid_file} is not valid JSON" in capsys.readouterr().err, damaged
        assert not pid_file.exists()


def test_record_replaces_the_pid_file_whole(tmp_path: Path) -> None:
    pid_file = tmp_path / "dev-pids.json"
    pid_file.write_text("[[1, 2.0]] and some garbage a plain overwrite of a longer file would leave")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        record(pid_file)
        entries = json.loads(pid_file.read_text())
        assert [child.pid, psutil.Process(child.pid).create_time()] in entries
        assert [p.name for p in tmp_path.iterdir()] == ["dev-pids.json"], "no temp file left behind"
    finally:
        child.kill()
        child.wait()


def test_a_dagster_process_started_where_interrupts_were_ignored_still_stops_on_sigterm() -> None:
    """`nohup make dev`, or a script's background job, starts the stack with SIGINT ignored; Dagster's processes
    answer SIGTERM with SIGINT's handler, so its services would ignore the stack's SIGTERM without
    `restore_interrupts`. Here a real Dagster process, after the stack's own start-up step."""
    child_code = (
        "import time\n"
        "from dagster._utils.interrupts import setup_interrupt_handlers\n"
        "setup_interrupt_handlers()\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        restore_interrupts()
        child = subprocess.Popen([sys.executable, "-c", child_code], stdout=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        killed = stop([psutil.Process(child.pid)])
    finally:
        child.kill()
        child.wait(timeout=30)
    assert not killed, "the Dagster process ignored SIGTERM and was killed"
