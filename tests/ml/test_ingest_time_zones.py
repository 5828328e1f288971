"""Time zones: local exports crossing both DST changes, UTC offsets, and the partitions' own zone (issue 16, 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import BIKE_CSV
from messy_files import (
    AUTUMN,
    BERLIN,
    BIKE_AUTUMN,
    BIKE_SPRING,
    NEW_YORK,
    SPRING,
    berlin_export,
    berlin_spec,
    bike_document,
    write_csv,
)

from kernel.spec import PipelineSpec
from ml import ingest


def read(path: str, spec: PipelineSpec) -> ingest.Normalised:
    return ingest.normalise(ingest.read_source_file(path, spec, Path(path).parent), spec, origin=path)


def rows_per_day(frame: pd.DataFrame) -> pd.Series:
    return frame.groupby(frame["timestamp"].dt.strftime("%Y-%m-%d")).size()


@pytest.fixture(scope="module")
def export() -> pd.DataFrame:
    return berlin_export()


@pytest.fixture(scope="module")
def export_file(export: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_csv(export, tmp_path_factory.mktemp("berlin") / "berlin.csv")


def test_the_export_is_what_a_berlin_logger_writes(export: pd.DataFrame) -> None:
    per_day = export.groupby(export["time"].str[:10]).size()
    assert (per_day[SPRING], per_day[AUTUMN], per_day["2012-06-01"]) == (23, 25, 24)
    assert f"{SPRING} 02:00" not in set(export["time"])
    assert (export["time"] == f"{AUTUMN} 02:00").sum() == 2


def test_local_days_have_23_and_25_hours_and_every_instant_is_kept(export: pd.DataFrame, export_file: str) -> None:
    result = read(export_file, berlin_spec())
    frame = result.frame
    assert str(frame["timestamp"].dtype) == f"datetime64[ns, {BERLIN}]"
    per_day = rows_per_day(frame)
    assert (per_day[SPRING], per_day[AUTUMN]) == (23, 25)
    assert set(per_day.drop([SPRING, AUTUMN])) == {24}
    assert frame["timestamp"].is_unique
    # The repeated 02:00 is the earlier instant (CEST) on its first row and the later (CET) on its second.
    assert (frame["timestamp"].dt.tz_convert("UTC").to_numpy() == export["instant"].to_numpy()).all()
    assert frame["pm2.5"].equals(export["pm2.5"].astype("float64"))
    assert result.notes[AUTUMN] == {ingest.DST_AMBIGUOUS: 2}
    assert [day for day, notes in result.notes.items() if ingest.DST_NONEXISTENT in notes] == []


def test_utc_partitions_get_24_hours_every_day_from_the_same_export(export: pd.DataFrame, export_file: str) -> None:
    frame = read(export_file, berlin_spec(partition_zone="UTC")).frame
    assert frame["timestamp"].dtype == np.dtype("datetime64[ns]"), "UTC partitions keep the naive schema"
    assert (frame["timestamp"].to_numpy() == export["instant"].dt.tz_localize(None).to_numpy()).all()
    per_day = rows_per_day(frame)
    assert set(per_day.iloc[1:-1]) == {24}, "inner days are whole UTC days"


def test_a_skipped_local_time_is_read_with_the_offset_before_the_change(export: pd.DataFrame, tmp_path: Path) -> None:
    day = export[export["time"].str.startswith(SPRING)]
    extra = day[day["time"] == f"{SPRING} 01:00"].assign(time=f"{SPRING} 02:00")
    path = write_csv(pd.concat([day, extra]), tmp_path / "skipped.csv")
    result = read(path, berlin_spec(partition_zone="UTC"))
    assert result.notes[SPRING] == {ingest.DST_NONEXISTENT: 1}
    # 02:00 CET = 01:00 UTC: the instant of the real 03:00 CEST row, which the duplicates policy then judges.
    stamps = result.frame["timestamp"]
    assert (stamps == pd.Timestamp(f"{SPRING} 01:00")).sum() == 2


def test_offsets_are_honoured_mixed_or_z(export: pd.DataFrame, tmp_path: Path) -> None:
    berlin = export["instant"].dt.tz_convert(BERLIN)
    written = berlin.dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    with_offsets = export.assign(time=written.str[:-2] + ":" + written.str[-2:])
    assert set(with_offsets["time"].str[-6:]) == {"+01:00", "+02:00"}, "mixed offsets, as Berlin writes them"
    in_z = export.assign(time=export["instant"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    expected = export["instant"].dt.tz_convert(BERLIN).dt.as_unit("ns")
    for name, frame, fmt in [
        ("offsets.csv", with_offsets, "%Y-%m-%dT%H:%M:%S%z"),
        ("offsets_iso.csv", with_offsets, "ISO8601"),
        ("z.csv", in_z, "%Y-%m-%dT%H:%M:%S%z"),
        ("z_iso.csv", in_z, "ISO8601"),
    ]:
        # source.timezone says how naive times are read; values with an offset keep theirs whatever it is.
        spec = berlin_spec(timestamp={"column": "time", "format": fmt}, timezone=NEW_YORK)
        result = read(write_csv(frame, tmp_path / name), spec)
        pd.testing.assert_series_equal(result.frame["timestamp"], expected, check_names=False)
        assert all(ingest.DST_AMBIGUOUS not in notes for notes in result.notes.values()), name
        per_day = rows_per_day(result.frame)
        assert (per_day[SPRING], per_day[AUTUMN]) == (23, 25), name


@pytest.mark.parametrize(
    ("written", "fmt", "expected"),
    [
        ("2012-03-25T03:00:00+25:00", "%Y-%m-%dT%H:%M:%S%z", "1 value(s) in timestamp column 'time' do not match"),
        ("2012-03-25T03:00:00 CEST", "%Y-%m-%dT%H:%M:%S%z", "1 value(s) in timestamp column 'time' do not match"),
        ("2012-03-25T03:00:00+25:00", "ISO8601", "1 value(s) in timestamp column 'time' do not match"),
        ("2012-03-25T03:00:00+02:00", "%Y-%m-%d %H:%M", "1 value(s) in timestamp column 'time' do not match"),
        ("2012-03-25 03:00", "ISO8601", "mixes values with a UTC offset and without one"),
    ],
)
def test_an_offset_that_does_not_parse_is_a_format_error(
    export: pd.DataFrame, tmp_path: Path, written: str, fmt: str, expected: str
) -> None:
    offsets = export.head(48).assign(time=export["instant"].head(48).dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
    if fmt == "%Y-%m-%d %H:%M":
        offsets = export.head(48).copy()
    offsets.loc[7, "time"] = written
    path = write_csv(offsets, tmp_path / "bad_offset.csv")
    with pytest.raises(ingest.SourceFormatError) as caught:
        read(path, berlin_spec(timestamp={"column": "time", "format": fmt}))
    message = str(caught.value)
    assert message.startswith(f"{path}:")
    assert expected in message
    assert written in message


def test_the_bike_file_is_a_real_new_york_export() -> None:
    """The UCI file is local Washington time: hour 2 missing on the spring day, hour 1 written once in autumn."""
    document = bike_document(timezone=NEW_YORK)
    document["partitioning"] = {**document["partitioning"], "timezone": NEW_YORK}
    spec = PipelineSpec.model_validate(document)
    result = read(str(BIKE_CSV), spec)
    per_day = rows_per_day(result.frame)
    assert (per_day[BIKE_SPRING], per_day[BIKE_AUTUMN]) == (23, 24)
    assert result.notes[BIKE_AUTUMN] == {ingest.DST_AMBIGUOUS: 1}
    assert not any(ingest.DST_NONEXISTENT in notes for notes in result.notes.values())
    hour1 = result.frame[result.frame["timestamp"].dt.strftime("%Y-%m-%d %H") == f"{BIKE_AUTUMN} 01"]
    assert hour1["timestamp"].dt.tz_convert("UTC").tolist() == [pd.Timestamp(f"{BIKE_AUTUMN} 05:00", tz="UTC")]
    # In UTC partitions the same rows are 4 (summer) or 5 (winter) hours later.
    utc = ingest.normalise(
        pd.read_csv(BIKE_CSV),
        spec.model_copy(update={"partitioning": spec.partitioning.model_copy(update={"timezone": "UTC"})}),
    ).frame
    assert utc["timestamp"].iloc[0] == pd.Timestamp("2011-01-01 05:00")
    assert utc["timestamp"].dtype == np.dtype("datetime64[ns]")
