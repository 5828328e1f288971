"""A check judges its run's days a chunk at a time, so its memory does not grow with the range: the chunks are
consecutive days of about `CHUNK_BYTES`, and a run judged in the smallest chunks records exactly the verdicts of a
run judged in one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from conftest import BIKE_CSV, PipelineFactory, bike_spec_document
from support import check_days, corrupt_day, landed, run_range

from checks import emit
from kernel.names import (
    COMPLETE_DAYS,
    FINGERPRINT,
    FINITE_VALUES,
    NO_DRIFT,
    PASSES_EXPECTATIONS,
    RANGE_END,
    RANGE_START,
    SCHEMA_STABLE,
)
from kernel.records import Rejected
from resources.storage import PartitionedParquetIOManager

KEY = dg.AssetKey(["chunks", "daily"])
FEATURE_CHECKS = (FINITE_VALUES, SCHEMA_STABLE, NO_DRIFT)
RAW_CHECKS = (PASSES_EXPECTATIONS, COMPLETE_DAYS)
DAYS = [str(day.date()) for day in pd.date_range("2024-01-01", periods=20)]


def test_chunks_are_consecutive_days_of_about_the_byte_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PartitionedParquetIOManager(base_uri=str(tmp_path / "assets"))
    frames = {day: pd.DataFrame({"value": range(1_000)}, dtype="float64") for day in DAYS}
    for day, frame in frames.items():
        store.write(KEY, day, frame)
    store.write(KEY, DAYS[5], Rejected(day=DAYS[5], reason="not built: upstream rejected"))
    day_bytes = frames[DAYS[0]].size * emit.CELL_BYTES
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


def _verdicts(
    result: dg.ExecuteInProcessResult, *, with_fingerprints: bool = False
) -> dict[str, dict[str, tuple[bool, str, dict[str, object]]]]:
    """Check -> day -> (passed, description, metadata), with or without the fingerprint of the bytes judged."""
    return {
        check: {
            day: (
                evaluation.passed,
                evaluation.description or "",
                {n: v.value for n, v in evaluation.metadata.items() if with_fingerprints or n != FINGERPRINT},
            )
            for day, evaluation in days.items()
        }
        for check, days in check_days(result).items()
    }


def test_the_writers_verdicts_are_those_a_check_run_alone_records_from_the_bytes_in_small_chunks(
    make_defs: PipelineFactory, ray_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A range run's raw days are judged by the step that writes them and its features by the Ray tasks that write
    them (the check steps record their verdicts without reading the days back); a check run alone reads the stored
    bytes and judges them itself, here in chunks of one day. Both record the same verdicts on the same bytes, for
    every day: the two paths are one judgement. The second of two consecutive runs is compared, so its drift check
    has a reference window (the first run's days)."""
    source = tmp_path / "landing" / "hour.csv"
    source.parent.mkdir()
    corrupt_day(BIKE_CSV, source, "2012-05-10")  # a negative count and a temperature that is not a number
    before = ("2012-04-17", "2012-05-02")  # a week of look-back, then the reference window's days
    days = ("2012-05-03", "2012-05-20")
    name = "bike_chunks"
    document = bike_spec_document(
        name=name,
        source={"uri": str(source)},
        partitioning={"start_date": "2012-03-01", "end_date": "2012-08-01", "rebase_to_yesterday": False},
        training={"window_days": 28},
    )
    defs = make_defs(document)
    features, raw = dg.AssetKey([name, "features"]), dg.AssetKey([name, "raw"])
    checks_alone = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(),
        asset_check_selection={dg.AssetCheckKey(features, n) for n in FEATURE_CHECKS}
        | {dg.AssetCheckKey(raw, n) for n in RAW_CHECKS},
    )
    read_back: list[str] = []  # the features days a check step read back
    raw_read_back: list[str] = []  # the raw days a check step read back
    stored_chunks = emit.stored_chunks

    def recording(store: PartitionedParquetIOManager, key: dg.AssetKey, *args: Any, **kwargs: Any) -> Any:
        for chunk in stored_chunks(store, key, *args, **kwargs):
            {features: read_back, raw: raw_read_back}[key].extend(chunk.values)
            yield chunk

    monkeypatch.setattr(emit, "stored_chunks", recording)
    with dg.instance_for_test() as instance:
        assert run_range(defs, ["raw", "features"], name, before, instance, tags=landed(source)).success
        read_back.clear()
        raw_read_back.clear()
        run = run_range(defs, ["raw", "features"], name, days, instance)
        assert run.success
        by_writer, read_by_run, raw_read_by_run = (
            _verdicts(run, with_fingerprints=True),
            sorted(read_back),
            raw_read_back[:],
        )
        monkeypatch.setattr(emit, "CHUNK_BYTES", 1)
        read_back.clear()
        raw_read_back.clear()
        alone = checks_alone.execute_in_process(instance=instance, tags={RANGE_START: days[0], RANGE_END: days[1]})
        by_check_alone = _verdicts(alone, with_fingerprints=True)

    assert set(by_writer) >= {"passes_expectations", "complete_days", *FEATURE_CHECKS}
    assert all(len(by_day) == 18 for by_day in by_writer.values()), "one verdict per day per check"
    assert by_writer["finite_values"]["2012-05-20"][2]["rows"] == 24
    psi = by_writer["no_drift"]["2012-05-20"][2]["psi"]
    assert isinstance(psi, dict) and {"lag_24h", "temp"} <= set(psi), "judged against a reference window"
    assert not by_writer["passes_expectations"]["2012-05-10"][0], "the corrupted day fails"
    not_built = sorted(day for day, verdict in by_writer["finite_values"].items() if not verdict[0])
    assert "2012-05-11" in not_built, "a features day whose look-back holds the corrupted day is not built"
    assert read_by_run == not_built, "the run read back only the features days it could not build (their reasons)"
    assert raw_read_by_run == [], "the run's raw step judged every day it wrote: none was read back"
    assert sorted(read_back) == sorted(by_check_alone["finite_values"]), "the check run alone read every day"
    assert sorted(raw_read_back) == sorted(by_check_alone[PASSES_EXPECTATIONS]), "... every raw day too"
    judged = (*FEATURE_CHECKS, *RAW_CHECKS)
    assert json.loads(json.dumps({c: by_writer[c] for c in judged})) == json.loads(json.dumps(by_check_alone))
