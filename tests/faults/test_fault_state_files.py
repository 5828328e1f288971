"""State-file faults: the rebase pin and `dev-pids.json` cut short, by a full disk or by whatever truncated them.

"Disk full" is real: a child process lowers its own `RLIMIT_FSIZE` (and ignores SIGXFSZ), so the kernel refuses
every byte written past the limit with EFBIG, as a full disk or an exhausted quota would, in the middle of the
write. The state file is then read by this process without a limit, as the next `make dev` would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import psutil
import pytest
import yaml

from devtools.stack import clear_leftovers
from kernel.paths import PROJECT_ROOT, StatePaths
from kernel.settings import Settings
from platform_assets.definitions import build_definitions

from .conftest import FaultRow, bike_spec_document

pytestmark = pytest.mark.faults

DISK_FULL = """
import resource, signal
def disk_full(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter at the project root, with `disk_full(limit)` defined."""
    script = DISK_FULL + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def rebasing_settings(tmp_path: Path) -> Settings:
    """A code location whose one pipeline rebases its sample, pinned in `<home>/rebase/`."""
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    document = bike_spec_document(name="pinned_bikes")
    (specs / "pinned_bikes.yaml").write_text(yaml.safe_dump(document))
    return Settings(
        env="local", root=PROJECT_ROOT, home=tmp_path / "home", specs_dir=specs, mlflow_ui_url="http://127.0.0.1:5000"
    )


def test_a_truncated_rebase_pin_is_a_clear_error(tmp_path: Path, fault: FaultRow) -> None:
    fault.scenario = "truncated rebase pin"
    fault.injected = "rebase/<p>.json cut to its first 10 bytes"
    settings = rebasing_settings(tmp_path)
    build_definitions(settings, today=date(2025, 6, 1))
    pin = settings.state.rebase / "pinned_bikes.json"
    pin.write_text(pin.read_text()[:10])

    with pytest.raises(ValueError, match="not valid JSON") as caught:
        build_definitions(settings, today=date(2025, 6, 1))

    message = str(caught.value)
    assert str(pin) in message and "make clean" in message, message
    assert pin.exists(), "the pin is left for the user to look at"
    fault.result = "load fails: '<pin> is not valid JSON (...): delete it (or run `make clean`) to re-pin ...'"


def test_a_full_disk_while_pinning_leaves_no_truncated_pin(tmp_path: Path, fault: FaultRow) -> None:
    fault.scenario = "disk full while pinning"
    fault.injected = "EFBIG after 16 bytes of the rebase pin (RLIMIT_FSIZE)"
    state = tmp_path / "home" / "rebase"
    crashed = run_python(f"""
        from datetime import date
        from pathlib import Path
        from kernel.pipeline import pinned_shift_days
        disk_full(16)
        pinned_shift_days("pinned_bikes", date(2012, 12, 31), Path({str(state)!r}), date(2025, 6, 1))
    """)
    assert crashed.returncode != 0 and "File too large" in crashed.stderr, crashed.stderr[-2000:]

    settings = rebasing_settings(tmp_path)
    build_definitions(settings, today=date(2025, 6, 1))

    pin = json.loads((state / "pinned_bikes.json").read_text())
    assert pin["shift_days"] % 7 == 0 and pin["shift_days"] > 0
    assert [p.name for p in state.iterdir()] == ["pinned_bikes.json"], "no temp file left behind"
    fault.result = "write failed loudly, no pin left; next load pinned afresh"


def test_a_truncated_pid_file_is_ignored_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: FaultRow
) -> None:
    fault.scenario = "truncated dev-pids.json"
    fault.injected = "dev-pids.json cut mid-list"
    pid_file = StatePaths(tmp_path).dev_pids
    pid_file.write_text("[[4242, 1700000000.5], [43")

    clear_leftovers(pid_file)

    err = capsys.readouterr().err
    assert str(pid_file) in err and "not valid JSON" in err, err
    assert not pid_file.exists(), "ignored and removed: make dev goes on"
    fault.result = "warned (path, what it means), ignored; make dev starts"


def test_a_full_disk_while_recording_pids_keeps_the_previous_list(tmp_path: Path, fault: FaultRow) -> None:
    fault.scenario = "disk full while recording pids"
    fault.injected = "EFBIG after 8 bytes of dev-pids.json; the dev command dies, its child lives on"
    pid_file = tmp_path / "dev-pids.json"
    crashed = run_python(f"""
        import subprocess, sys
        from pathlib import Path
        from devtools.stack import record
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        print(child.pid, flush=True)
        record(Path({str(pid_file)!r}))
        disk_full(8)
        record(Path({str(pid_file)!r}))
    """)
    leftover = int(crashed.stdout.split()[0])
    try:
        assert crashed.returncode != 0 and "File too large" in crashed.stderr, crashed.stderr[-2000:]
        assert psutil.pid_exists(leftover)

        clear_leftovers(pid_file)  # the next `make dev`

        assert not psutil.pid_exists(leftover) or psutil.Process(leftover).status() == psutil.STATUS_ZOMBIE
        assert not pid_file.exists()
        fault.result = "write failed, previous list intact; next start stopped the leftover"
    finally:
        if psutil.pid_exists(leftover):
            os.kill(leftover, 9)


@pytest.mark.parametrize("pin", ['{"pinned_at": "2025-06-01"}', '{"shift_days": "700"}', '{"shift_days": 701}', "[]"])
def test_a_pin_of_the_wrong_shape_is_a_clear_error(tmp_path: Path, pin: str) -> None:
    settings = rebasing_settings(tmp_path)
    settings.state.rebase.mkdir(parents=True)
    (settings.state.rebase / "pinned_bikes.json").write_text(pin)

    with pytest.raises(ValueError, match=r"holds no whole-week 'shift_days'.*make clean"):
        build_definitions(settings, today=date(2025, 6, 1))
