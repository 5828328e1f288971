"""`make bench` runs as documented: its default (a) range leaves room for a model's history on the shipped data, and
a range that does not is refused up front with the largest one that fits."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.common import (
    DEFAULT_DAYS,
    LAST_DAY,
    PARTITION_START,
    StageFailed,
    backfill_range,
    bench_pipeline,
    history_days,
    write_bench_spec,
)


def test_default_range_fits_the_history_a_model_needs(tmp_path: Path) -> None:
    write_bench_spec(tmp_path)
    pipeline = bench_pipeline(tmp_path)
    setup_first, first = backfill_range(pipeline, DEFAULT_DAYS)
    assert (LAST_DAY - first).days + 1 == DEFAULT_DAYS
    assert (first - setup_first).days == history_days(pipeline)
    assert setup_first >= PARTITION_START


def test_a_range_without_room_for_history_names_the_largest_that_fits(tmp_path: Path) -> None:
    write_bench_spec(tmp_path)
    pipeline = bench_pipeline(tmp_path)
    most = (LAST_DAY - PARTITION_START).days + 1 - history_days(pipeline)
    setup_first, _ = backfill_range(pipeline, most)
    assert setup_first == PARTITION_START
    with pytest.raises(StageFailed, match=rf"--days {most + 1} leaves no room.*at most --days {most}"):
        backfill_range(pipeline, most + 1)
