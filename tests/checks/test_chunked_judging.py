"""A check judges its run's days a chunk at a time, so its memory does not grow with the range: the chunks are
consecutive days of about `CHUNK_BYTES`, and a run judged in the smallest chunks records exactly the verdicts of a
run judged in one."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from conftest import BIKE_CSV, PipelineFactory, bike_spec_document
from support import check_days, corrupt_day, landed, run_range

from checks import emit
from kernel.names import FINGERPRINT
from kernel.records import Rejected
from resources.storage import PartitionedParquetIOManager

KEY = dg.AssetKey(["chunks", "daily"])
DAYS = [str(day.date()) for day in pd.date_range("2024-01-01", periods=20)]


def test_chunks_are_consecutive_days_of_about_the_byte_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PartitionedParquetIOManager(base_uri=str(tmp_path / "assets"))
    frames = {day: pd.DataFrame({"value": range(1_000)}, dtype="float64") for day in DAYS}
    for day, frame in frames.items():
        store.write(KEY, day, frame)
    store.write(KEY, DAYS[5], Rejected(day=DAYS[5], reason="not built: upstream rejected"))
    day_bytes = int(frames[DAYS[0]].memory_usage(index=True).sum())
    monkeypatch.setattr(emit, "CHUNK_BYTES", 10 * day_bytes)

    chunks = list(emit.stored_chunks(store, KEY, DAYS))

    # read READ_AHEAD (8) days at a time: 8 days hold less than the budget, 16 reach it, the last 4 end the run
    assert [list(chunk.values) for chunk in chunks] == [DAYS[:16], DAYS[16:]]
    whole = store.read_for_judging(KEY, DAYS, allow_missing=False)
    for chunk in chunks:
        for day, value in chunk.values.items():
            assert chunk.fingerprints[day] == whole[day].fingerprint
            if day == DAYS[5]:
                assert isinstance(value, Rejected) and value.reason == "not built: upstream rejected"
            else:
                pd.testing.assert_frame_equal(value, frames[day])


def _verdicts(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, tuple[bool, str, dict[str, object]]]]:
    """Check -> day -> (passed, description, metadata), without the fingerprint (each run writes its own files)."""
    return {
        check: {
            day: (
                evaluation.passed,
                evaluation.description or "",
                {name: value.value for name, value in evaluation.metadata.items() if name != FINGERPRINT},
            )
            for day, evaluation in days.items()
        }
        for check, days in check_days(result).items()
    }


def test_a_run_judged_in_small_chunks_records_the_verdicts_of_one_judged_at_once(
    make_defs: PipelineFactory, ray_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "landing" / "hour.csv"
    source.parent.mkdir()
    corrupt_day(BIKE_CSV, source, "2012-05-10")  # a negative count and a temperature that is not a number
    days = ("2012-04-24", "2012-05-20")  # a week of look-back, then days with features
    recorded = {}
    for name, budget in [("bike_whole", emit.CHUNK_BYTES), ("bike_chunked", 1)]:
        monkeypatch.setattr(emit, "CHUNK_BYTES", budget)
        document = bike_spec_document(
            name=name,
            source={"uri": str(source)},
            partitioning={"start_date": "2012-03-01", "end_date": "2012-08-01", "rebase_to_yesterday": False},
            training={"window_days": 28},
        )
        defs = make_defs(document)
        with dg.instance_for_test() as instance:
            result = run_range(defs, ["raw", "features"], name, days, instance, tags=landed(source))
        assert result.success
        recorded[name] = json.loads(json.dumps(_verdicts(result)))

    whole, chunked = recorded["bike_whole"], recorded["bike_chunked"]
    assert set(whole) >= {"passes_expectations", "complete_days", "finite_values", "schema_stable", "no_drift"}
    assert all(len(by_day) == 27 for by_day in whole.values()), "one verdict per day per check"
    assert whole["finite_values"]["2012-05-20"][2]["rows"] == 24
    assert not whole["passes_expectations"]["2012-05-10"][0], "the corrupted day fails in both"
    assert chunked == json.loads(json.dumps(whole).replace("bike_whole/", "bike_chunked/"))
