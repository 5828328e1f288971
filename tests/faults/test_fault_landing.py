"""Landing-zone faults on real files through the real landing sensor: nothing lost, nothing quarantined for a blip.

Each test delivers real CSV files into a landing zone, injects one fault, evaluates the landing sensor of the real
code location tick after tick with `dg.build_sensor_context`, and checks what was requested, what is still in the
landing zone and what is in quarantine; then it launches the runs the sensor requested (in-process, on the sensor's
instance) and checks that they succeed and store every day of the good files. Transient read errors and torn reads
are injected at pyarrow's `open_input_file` (`FlakyDisk`): the tests run as root, so an unreadable mode does not
stop a read, and a FIFO or a directory is never listed as a landing file at all, so the only honest way to make a
real read of a listed file fail once is to fail the open itself.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from support import cannot_run_here

from kernel.names import RANGE_END, RANGE_START
from kernel.paths import PROJECT_ROOT
from ml import ingest
from sensors.landing import run_key

from .conftest import BIKE_CSV, NAME, FaultRow, FlakyDisk, Landing, digest, raw_key

pytestmark = pytest.mark.faults

BIKE = pd.read_csv(BIKE_CSV)
STABLE_TICKS = 4  # enough for any file to be seen, found stable and read


def csv_days(*days: str, frame: pd.DataFrame = BIKE) -> bytes:
    """The sample's rows for `days` (YYYY-MM-DD) as CSV bytes, exactly as a producer would write them."""
    dates = pd.to_datetime(frame["dteday"], format="%m/%d/%y").dt.strftime("%Y-%m-%d")
    return frame[dates.isin(days)].to_csv(index=False).encode()


def holding(*days: str) -> tuple[bytes, tuple[str, ...]]:
    """A good file's content for `days` and the days it must land as (for `Landing.deliver`)."""
    return csv_days(*days), days


def quarantined(landing: Landing, root: Path | None = None) -> dict[str, str]:
    """Quarantined data files (name -> reason text) in `<quarantine>/<pipeline>/` (default `<landing>/_quarantine`)."""
    folder = (root or landing.zone / "_quarantine") / NAME
    if not folder.exists():
        return {}
    files = sorted(p for p in folder.iterdir() if not p.name.endswith(".reason.txt"))
    return {p.name: (p.parent / f"{p.name}.reason.txt").read_text() for p in files}


def settle(landing: Landing, ticks: int = STABLE_TICKS) -> None:
    for _ in range(ticks):
        landing.tick()


def failures(runs: list[dg.ExecuteInProcessResult]) -> str:
    """The failed steps of `runs` and the error at the root of each (empty when every run succeeded)."""
    found = []
    for run in runs:
        for event in run.all_events:
            error = event.step_failure_data.error if event.is_step_failure and event.step_failure_data else None
            while error is not None and error.cause is not None:
                error = error.cause
            if error is not None:
                found.append(f"{event.step_key}: {error.message.strip()}")
    return " | ".join(found)


def assert_runs_succeed(landing: Landing, count: int) -> None:
    """Launch what the sensor requested: `count` runs, each successful, and every expected day stored as raw."""
    runs = landing.launch()
    assert len(runs) == count, f"{len(runs)} runs requested, expected {count}"
    assert all(run.success for run in runs), f"a requested run failed: {failures(runs)}"
    assert landing.stored_days() == landing.expected, f"raw days not stored: {landing.expected - landing.stored_days()}"


def test_a_transient_read_error_keeps_the_file_and_reads_it_next_tick(
    landing: Landing, flaky_disk: type[FlakyDisk], fault: FaultRow
) -> None:
    fault.scenario = "transient read error"
    fault.injected = "EIO on the first open of a good file"
    landing.build()
    good = landing.deliver("good.csv", *holding("2012-03-01", "2012-03-02"))
    flaky_disk.fail_once[str(good)] = OSError(errno.EIO, "Input/output error (injected)", str(good))

    settle(landing)

    assert str(good) not in flaky_disk.fail_once, "the injected error fired"
    assert landing.landed() == ["good.csv"], "a file that failed to read once stays in the landing zone"
    assert quarantined(landing) == {}
    assert landing.ranges() == [("good.csv", "2012-03-01", "2012-03-02")], "read again on a later tick"
    assert_runs_succeed(landing, 1)
    fault.result = "kept, read on the next tick, 1 request; its run stored both days"


def test_a_half_written_file_is_read_only_once_stable(
    landing: Landing, flaky_disk: type[FlakyDisk], fault: FaultRow
) -> None:
    fault.scenario = "half-written file"
    fault.injected = "upload in 3 chunks, cut mid-row, one tick apart"
    landing.build()
    data = csv_days("2012-05-01", "2012-05-02", "2012-05-03")
    path = landing.zone / "upload.csv"
    cuts = [len(data) // 3 + 7, 2 * len(data) // 3 + 3, len(data)]
    written = 0
    for cut in cuts:  # a real append each time: the size changes between ticks
        with path.open("ab") as out:
            out.write(data[written:cut])
        written = cut
        result = landing.tick()
        assert landing.ranges(result) == [], f"nothing is requested for a file still growing ({written} bytes)"
        assert flaky_disk.opened == [], "a file still growing is not even opened"
    landing.delivered.append(digest(data))
    landing.expected.update(["2012-05-01", "2012-05-02", "2012-05-03"])

    quiet = landing.tick()  # the first tick that finds the file as the last one left it

    assert landing.ranges(quiet) == [("upload.csv", "2012-05-01", "2012-05-03")], "one request, for the whole file"
    settle(landing)
    assert len(landing.requests) == 1
    assert quarantined(landing) == {}
    assert_runs_succeed(landing, 1)
    fault.result = "not opened while growing; 1 request for all 3 days on the first quiet tick; its run stored them"


def test_a_removed_landing_file_loses_nothing(landing: Landing, fault: FaultRow) -> None:
    fault.scenario = "landing file removed"
    fault.injected = "a landed file deleted, then the sensor ticks and its days are re-materialised from the UI"
    landing.build()
    days = ("2012-06-10", "2012-06-11")
    path = landing.deliver("good.csv", *holding(*days))
    settle(landing)
    assert_runs_succeed(landing, 1)
    store = landing.store()
    before = {day: store.read_stored(raw_key(), day) for day in days}

    path.unlink()
    settle(landing)
    assert len(landing.requests) == 1, "a removed file requests nothing"
    job = landing.defs.resolve_implicit_global_asset_job_def()
    rerun = job.execute_in_process(
        instance=landing.instance,
        asset_selection=[raw_key()],
        tags={RANGE_START: days[0], RANGE_END: days[-1]},  # an untagged range run, as a UI backfill launches it
        raise_on_error=False,
    )

    assert rerun.success, failures([rerun])
    after = {day: store.read_stored(raw_key(), day) for day in days}
    changed = [day for day in days if after[day].fingerprint != before[day].fingerprint]
    fault.lost = len(changed) + len(landing.expected - landing.stored_days())
    assert changed == [], f"days rebuilt from a removed file changed: {changed}"
    for day in days:
        pd.testing.assert_frame_equal(after[day].value, before[day].value)
    fault.result = "nothing requested; the re-run rebuilt both days from the ingest log, same bytes (fingerprints)"


def test_a_poison_file_does_not_stop_the_good_one(
    landing: Landing, capfd: pytest.CaptureFixture[str], fault: FaultRow
) -> None:
    fault.scenario = "poison file"
    fault.injected = "hour column True/False (TypeError in parsing) next to a good file"
    landing.build()
    poison = BIKE[pd.to_datetime(BIKE["dteday"], format="%m/%d/%y").dt.strftime("%Y-%m-%d") == "2012-06-01"].copy()
    poison["hr"] = poison["hr"] > 11
    landing.deliver("a_poison.csv", poison.to_csv(index=False).encode())
    landing.deliver("b_good.csv", *holding("2012-06-02"))

    settle(landing)

    assert landing.ranges() == [("b_good.csv", "2012-06-02", "2012-06-02")]
    assert landing.landed() == ["a_poison.csv", "b_good.csv"], "the poison file is kept where it was"
    assert quarantined(landing) == {}, "an unexpected error says nothing about the file: not quarantined"
    errors = [line for line in capfd.readouterr().err.splitlines() if " - ERROR - " in line]
    assert any("a_poison.csv" in line and "TypeError" in line for line in errors), errors
    assert_runs_succeed(landing, 1)
    fault.result = "good file requested, its run stored its day; poison kept and logged (TypeError), not quarantined"


def test_a_file_over_the_size_cap_is_quarantined_unread(
    landing: Landing, flaky_disk: type[FlakyDisk], fault: FaultRow
) -> None:
    cap = 20_000
    fault.scenario = "huge file"
    fault.injected = f"a 30-day file over a cap of {cap} bytes"
    landing.build(max_file_bytes=cap)
    days = [f"2012-07-{d:02d}" for d in range(1, 31)]
    big = landing.deliver("big.csv", csv_days(*days))
    small = landing.deliver("small.csv", *holding("2012-08-01"))
    size = big.stat().st_size
    assert small.stat().st_size < cap < size

    settle(landing)

    assert landing.ranges() == [("small.csv", "2012-08-01", "2012-08-01")]
    assert str(big) not in flaky_disk.opened, "a file over the cap is never parsed"
    ((name, reason),) = quarantined(landing).items()
    assert name.startswith("big") and name.endswith(".csv")
    assert f"file is {size} bytes, over the cap of {cap}" in reason
    assert_runs_succeed(landing, 1)
    assert str(big) not in flaky_disk.opened, "the run read the file over the cap"
    fault.result = f"quarantined unread: 'file is {size} bytes, over the cap of {cap}'; the small file's run stored it"


def test_two_files_with_one_name_keep_both_quarantine_copies(landing: Landing, fault: FaultRow) -> None:
    fault.scenario = "same name quarantined twice"
    fault.injected = "bad.csv (missing column), then another bad.csv (bad timestamps)"
    landing.build()
    day = BIKE[pd.to_datetime(BIKE["dteday"], format="%m/%d/%y").dt.strftime("%Y-%m-%d") == "2012-09-01"]
    landing.deliver("bad.csv", day.drop(columns=["cnt"]).to_csv(index=False).encode())
    settle(landing)
    second = day.copy()
    second["dteday"] = "not a date"
    landing.deliver("bad.csv", second.to_csv(index=False).encode())
    settle(landing)

    copies = quarantined(landing)
    assert landing.landed() == []
    assert len(copies) == 2, copies
    assert sorted("missing column(s) ['cnt']" in r for r in copies.values()) == [False, True]
    assert any("do not match format" in r for r in copies.values())
    assert landing.lost() == 0, "both copies are kept, byte for byte"
    assert landing.requests == [], "a refused file requested a run"
    fault.result = "2 copies kept under unique names, each with its reason"


def test_a_file_replaced_while_read_is_read_again_not_requested_torn(
    landing: Landing, flaky_disk: type[FlakyDisk], fault: FaultRow
) -> None:
    fault.scenario = "file replaced while read"
    fault.injected = "a writer rewrites the file right after the sensor opened it"
    landing.build()
    path = landing.deliver("a.csv", csv_days("2012-10-01"))
    replacement = csv_days("2012-10-01", "2012-10-02", "2012-10-03")

    def rewrite() -> None:
        before = path.stat()
        path.write_bytes(replacement)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))

    flaky_disk.on_open[str(path)] = rewrite
    landing.delivered[-1] = digest(replacement)  # what must survive is the file as its writer left it
    landing.expected.update(["2012-10-01", "2012-10-02", "2012-10-03"])

    settle(landing)

    assert str(path) not in flaky_disk.on_open, "the writer ran during a read"
    final = ingest.SourceFile(str(path), path.stat().st_size, path.stat().st_mtime_ns).fingerprint
    assert [r.run_key for r in landing.requests] == [run_key({str(path): final})], "one request, for the file as it is"
    assert landing.ranges() == [("a.csv", "2012-10-01", "2012-10-03")]
    assert_runs_succeed(landing, 1)
    fault.result = "torn read discarded; re-read when stable, 1 request for the new content; its run stored 3 days"


def test_quarantine_survives_a_pod_restart(landing: Landing, fault: FaultRow) -> None:
    fault.scenario = "pod restart after quarantine"
    fault.injected = "a malformed file, then the state folder (emptyDir in production) wiped"
    landing.build()
    landing.deliver("broken.csv", b"not,a,bike,file\n1,2,3,4\n")
    settle(landing)
    assert landing.landed() == []
    assert landing.requests == [], "a malformed file requested a run"

    shutil.rmtree(landing.home, ignore_errors=True)  # a pod restart empties PLATFORM_HOME, an emptyDir per pod

    assert landing.lost() == 0, "the quarantined copy lives with the landing zone, not in the pod's state folder"
    ((_, reason),) = quarantined(landing).items()
    assert "missing column(s)" in reason
    env = yaml.safe_load((PROJECT_ROOT / "deploy" / "k8s" / "platform-env.yaml").read_text())["data"]
    assert "://" in env["PLATFORM_QUARANTINE_URI"], "production quarantines into the object store"
    assert not env["PLATFORM_QUARANTINE_URI"].startswith(env["PLATFORM_HOME"])
    fault.result = "copy kept under <landing>/_quarantine/; production sets PLATFORM_QUARANTINE_URI (object store)"


def test_quarantine_on_another_filesystem_copies_then_deletes(landing: Landing, fault: FaultRow) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == landing.root.stat().st_dev:
        cannot_run_here("needs /dev/shm on a filesystem other than the test's tmp folder")
    fault.scenario = "quarantine on another filesystem"
    fault.injected = "PLATFORM_QUARANTINE_URI on tmpfs (rename fails: EXDEV)"
    elsewhere = Path(tempfile.mkdtemp(prefix="quarantine-", dir="/dev/shm"))
    try:
        landing.build(quarantine_uri=str(elsewhere))
        landing.deliver("broken.csv", b"not,a,bike,file\n1,2,3,4\n")
        settle(landing)

        assert landing.landed() == []
        assert landing.requests == [], "a malformed file requested a run"
        assert landing.lost(elsewhere) == 0
        ((name, _),) = quarantined(landing, elsewhere).items()
        leftovers = [p.name for p in (elsewhere / NAME).iterdir() if p.name.startswith(".")]
        assert leftovers == [], "no temp copy left behind"
        fault.lost = landing.lost(elsewhere)
        assert name.startswith("broken.") and name.endswith(".csv")
        fault.result = "copied to a temp name on tmpfs, renamed, source deleted"
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
