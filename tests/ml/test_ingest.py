"""Source files into the raw schema: real UCI bike data, structural errors, coercion reports, day splits."""

from __future__ import annotations

import io
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import AIR_CSV, AIR_SPEC, BIKE_CSV, BIKE_SPEC

from kernel.days import day_range
from kernel.spec import PipelineSpec, load_spec
from ml import ingest

SANDY = date(2012, 10, 29)  # Hurricane Sandy: one hour of data in the source


def nulls(values: Any) -> int:
    """Missing values in a column."""
    return int(np.count_nonzero(values.isna().to_numpy()))


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(BIKE_SPEC)


@pytest.fixture(scope="module")
def source() -> pd.DataFrame:
    """The UCI file exactly as written (read once, copied by tests that mutate it)."""
    return pd.read_csv(BIKE_CSV)


@pytest.fixture(scope="module")
def normalised(source: pd.DataFrame, spec: PipelineSpec) -> ingest.Normalised:
    return ingest.normalise(source, spec, origin=str(BIKE_CSV))


def test_real_file_keeps_every_row_and_the_schema(
    normalised: ingest.Normalised, source: pd.DataFrame, spec: PipelineSpec
) -> None:
    frame = normalised.frame
    assert len(frame) == len(source) == 17_379
    assert normalised.coercion_errors == {}
    assert list(frame.columns) == ["timestamp", *spec.source_columns]
    assert frame["timestamp"].dtype == np.dtype("datetime64[ns]")
    for column in [spec.target, *spec.features.numeric]:
        assert frame[column].dtype == np.dtype("float64"), column
    assert frame["weathersit"].dtype == "str"
    assert sorted(frame["weathersit"].unique()) == ["1", "2", "3", "4"]
    assert frame["timestamp"].is_monotonic_increasing
    assert frame["timestamp"].is_unique


def test_timestamp_is_date_plus_hour(normalised: ingest.Normalised, source: pd.DataFrame) -> None:
    frame = normalised.frame
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2011-01-01 00:00")
    assert frame["timestamp"].iloc[1] == pd.Timestamp("2011-01-01 01:00")
    assert frame["timestamp"].iloc[-1] == pd.Timestamp("2012-12-31 23:00")
    # Row by row against the source (already sorted by instant): M/D/YY date + hr.
    for row in [0, 5000, 15884, len(source) - 1]:
        month, day, year = (int(part) for part in source["dteday"].iloc[row].split("/"))
        expected = datetime(2000 + year, month, day, int(source["hr"].iloc[row]))
        assert frame["timestamp"].iloc[row] == pd.Timestamp(expected)
        assert frame["cnt"].iloc[row] == float(source["cnt"].iloc[row])


def test_real_day_counts_match_the_documented_gaps(normalised: ingest.Normalised) -> None:
    per_day = normalised.frame.groupby(normalised.frame["timestamp"].dt.date).size().to_dict()
    assert len(per_day) == 731
    assert 731 * 24 - len(normalised.frame) == 165
    assert per_day[SANDY] == 1
    assert per_day[date(2012, 10, 30)] == 11
    assert per_day[date(2011, 1, 27)] == 8


def test_missing_column_names_column_and_origin(source: pd.DataFrame, spec: PipelineSpec) -> None:
    with pytest.raises(ingest.SourceFormatError) as caught:
        ingest.normalise(source.drop(columns=["hum", "hr"]), spec, origin="landing/2012.csv")
    message = str(caught.value)
    assert message.startswith("landing/2012.csv:")
    assert "'hum'" in message
    assert "'hr'" in message
    assert "missing column" in message


def test_unparseable_timestamp_reports_count_and_examples(source: pd.DataFrame, spec: PipelineSpec) -> None:
    bad = source.head(48).copy()
    bad.loc[3, "dteday"] = "2011-01-01"
    bad.loc[7, "dteday"] = "13/45/11"
    with pytest.raises(ingest.SourceFormatError) as caught:
        ingest.normalise(bad, spec, origin="landing/bad.csv")
    message = str(caught.value)
    assert message.startswith("landing/bad.csv:")
    assert "2 value(s)" in message
    assert "'dteday'" in message
    assert "'2011-01-01'" in message
    assert "'13/45/11'" in message


def test_missing_timestamp_is_unparseable(source: pd.DataFrame, spec: PipelineSpec) -> None:
    bad = source.head(24).copy()
    bad.loc[2, "dteday"] = None
    with pytest.raises(ingest.SourceFormatError, match="1 value"):
        ingest.normalise(bad, spec)


@pytest.mark.parametrize("hour", [24, -1, 1.5, "noon", None])
def test_bad_hour_values(source: pd.DataFrame, spec: PipelineSpec, hour: Any) -> None:
    bad = source.head(24).copy().astype({"hr": "object"})
    bad.loc[5, "hr"] = hour
    with pytest.raises(ingest.SourceFormatError) as caught:
        ingest.normalise(bad, spec, origin="landing/hours.csv")
    message = str(caught.value)
    assert "1 value(s) in hour column 'hr'" in message
    assert "whole hours 0-23" in message
    assert str(hour) in message


def test_non_numeric_cell_becomes_nan_and_is_reported(spec: PipelineSpec) -> None:
    csv = BIKE_CSV.read_text().splitlines()[:30]
    header = csv[0].split(",")
    broken = csv[5].split(",")
    broken[header.index("temp")] = "n/a?"
    assert header[-1] == "cnt"
    csv[5] = ",".join(broken[:-1]) + ',"12,5"'  # a decimal comma in the last column, quoted
    frame = pd.read_csv(io.StringIO("\n".join(csv)))
    result = ingest.normalise(frame, spec)

    assert len(result.frame) == 29
    assert nulls(result.frame["temp"]) == 1
    assert nulls(result.frame["cnt"]) == 1
    assert np.isnan(result.frame["temp"].to_numpy()[4])
    assert result.coercion_errors == {
        "temp": {"count": 1, "examples": ["n/a?"]},
        "cnt": {"count": 1, "examples": ["12,5"]},
    }
    # Good cells of the same columns keep their values.
    assert result.frame["temp"].dropna().tolist() == pd.read_csv(BIKE_CSV, nrows=29)["temp"].drop(index=4).tolist()


def test_empty_numeric_cell_is_missing_not_a_coercion_error(source: pd.DataFrame, spec: PipelineSpec) -> None:
    frame = source.head(24).copy()
    frame.loc[3, "windspeed"] = np.nan
    result = ingest.normalise(frame, spec)
    assert nulls(result.frame["windspeed"]) == 1
    assert result.coercion_errors == {}


def test_coercion_examples_are_capped(source: pd.DataFrame, spec: PipelineSpec) -> None:
    frame = source.head(24).copy().astype({"hum": "object"})
    for row in range(8):
        frame.loc[row, "hum"] = f"bad{row}"
    result = ingest.normalise(frame, spec)
    assert result.coercion_errors["hum"]["count"] == 8
    assert result.coercion_errors["hum"]["examples"] == [f"bad{row}" for row in range(ingest.MAX_ERROR_EXAMPLES)]


def test_blank_categorical_cell_keeps_other_values_as_written(spec: PipelineSpec, tmp_path: Path) -> None:
    lines = BIKE_CSV.read_text().splitlines()[:25]
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("weathersit")] = ""
    lines[3] = ",".join(cells)
    path = tmp_path / "blank_weathersit.csv"
    path.write_text("\n".join(lines) + "\n")
    frame = ingest.read_source_file(str(path), spec, tmp_path)
    result = ingest.normalise(frame, spec, origin=str(path))
    assert nulls(result.frame["weathersit"]) == 1
    assert set(result.frame["weathersit"].dropna()) <= {"1", "2", "3", "4"}


def test_rows_are_sorted_by_entity_then_time(spec: PipelineSpec) -> None:
    document = yaml.safe_load(BIKE_SPEC.read_text())
    document["source"]["entity_columns"] = ["station"]
    station_spec = PipelineSpec.model_validate(document)
    frame = pd.DataFrame(
        {
            "dteday": ["1/2/11", "1/1/11", "1/1/11", "1/1/11"],
            "hr": [0, 5, 1, 3],
            "station": ["b", "b", "a", "b"],
            "cnt": [1, 2, 3, 4],
            **{column: [0.5] * 4 for column in spec.features.numeric},
            "weathersit": [1, 2, 3, 4],
        }
    )
    out = ingest.normalise(frame, station_spec).frame
    assert list(out.columns) == ["timestamp", "station", *spec.source_columns]
    assert out["station"].dtype == "str"
    assert out["station"].tolist() == ["a", "b", "b", "b"]
    assert out["cnt"].tolist() == [3.0, 4.0, 2.0, 1.0]
    assert out["timestamp"].tolist() == [
        pd.Timestamp("2011-01-01 01:00"),
        pd.Timestamp("2011-01-01 03:00"),
        pd.Timestamp("2011-01-01 05:00"),
        pd.Timestamp("2011-01-02 00:00"),
    ]


def test_split_days_gives_each_requested_day(normalised: ingest.Normalised, spec: PipelineSpec) -> None:
    days = [date(2012, 10, 28), SANDY, date(2012, 10, 30)]
    by_day = ingest.split_days(normalised.frame, days, spec)
    assert list(by_day) == ["2012-10-28", "2012-10-29", "2012-10-30"]
    assert [len(frame) for frame in by_day.values()] == [24, 1, 11]
    assert by_day["2012-10-29"]["timestamp"].tolist() == [pd.Timestamp("2012-10-29 00:00")]
    for key, frame in by_day.items():
        assert (frame["timestamp"].dt.date.astype("str") == key).all()
        assert frame.index.tolist() == list(range(len(frame)))


def test_split_days_gives_an_empty_frame_with_the_schema(normalised: ingest.Normalised, spec: PipelineSpec) -> None:
    by_day = ingest.split_days(normalised.frame, [date(2013, 1, 1), date(2012, 12, 31)], spec)
    empty = by_day["2013-01-01"]
    assert empty.empty
    assert empty.dtypes.to_dict() == normalised.frame.dtypes.to_dict()
    assert len(by_day["2012-12-31"]) == 24


def test_rebase_shifts_by_whole_days(normalised: ingest.Normalised) -> None:
    frame = normalised.frame.head(48)
    shifted = ingest.rebase(frame, 14)
    assert bool((shifted["timestamp"] - frame["timestamp"] == pd.Timedelta(days=14)).all())
    assert shifted["timestamp"].dtype == np.dtype("datetime64[ns]")
    # Same weekday and hour; values untouched; the input is not modified.
    assert (shifted["timestamp"].dt.day_of_week == frame["timestamp"].dt.day_of_week).all()
    assert (shifted["timestamp"].dt.hour == frame["timestamp"].dt.hour).all()
    pd.testing.assert_frame_equal(shifted.drop(columns="timestamp"), frame.drop(columns="timestamp"))
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2011-01-01")
    assert ingest.rebase(frame, 0)["timestamp"].iloc[0] == pd.Timestamp("2011-01-01")


def test_days_in_and_day_range(normalised: ingest.Normalised) -> None:
    days = ingest.days_in(normalised.frame)
    assert days[0] == date(2011, 1, 1)
    assert days[-1] == date(2012, 12, 31)
    assert days == day_range(date(2011, 1, 1), date(2012, 12, 31))
    assert day_range(date(2012, 2, 28), date(2012, 3, 1)) == [
        date(2012, 2, 28),
        date(2012, 2, 29),
        date(2012, 3, 1),
    ]


def test_list_source_files_with_a_glob(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    for name, text in [("b.csv", "x\n1\n"), ("a.csv", "x\n"), ("notes.txt", "n"), ("a.csv.bak", "old")]:
        (landing / name).write_text(text)
    files = ingest.list_source_files("landing/*.csv", tmp_path)
    assert [Path(f.path).name for f in files] == ["a.csv", "b.csv"]
    assert [f.size for f in files] == [2, 4]
    assert all(Path(f.path).parent == landing for f in files)
    assert files[0].fingerprint == f"2:{files[0].mtime_ns}"
    assert files[0].mtime_ns > 0

    absolute = ingest.list_source_files(str(landing / "b.*"), Path("/nonexistent"))
    assert [Path(f.path).name for f in absolute] == ["b.csv"]
    assert ingest.list_source_files("missing/*.csv", tmp_path) == []


def test_list_source_files_single_file(tmp_path: Path) -> None:
    (tmp_path / "one.csv").write_text("x\n")
    (tmp_path / "two.csv").write_text("x\n")
    assert [Path(f.path).name for f in ingest.list_source_files("one.csv", tmp_path)] == ["one.csv"]


def test_glob_star_does_not_descend_into_subdirectories(tmp_path: Path) -> None:
    (tmp_path / "landing" / "archive").mkdir(parents=True)
    (tmp_path / "landing" / "new.csv").write_text("x\n")
    (tmp_path / "landing" / "archive" / "old.csv").write_text("x\n")
    assert [Path(f.path).name for f in ingest.list_source_files("landing/*.csv", tmp_path)] == ["new.csv"]


def test_read_source_file_reads_the_real_csv(spec: PipelineSpec) -> None:
    root = BIKE_CSV.parents[2]
    (file,) = ingest.list_source_files(spec.source.uri, root)
    assert Path(file.path) == BIKE_CSV
    frame = ingest.read_source_file(file.path, spec, root)
    assert len(frame) == 17_379
    assert {"dteday", "hr", "cnt", "weathersit"} <= set(frame.columns)


# Real, messy hourly data: the Beijing PM2.5 file and generated files with what it lacks.


@pytest.fixture(scope="module")
def air_spec() -> PipelineSpec:
    return load_spec(AIR_SPEC)


def air_lines(count: int) -> list[str]:
    """The header and the first `count` rows of the Beijing file, as written."""
    return AIR_CSV.read_text().splitlines()[: count + 1]


def write_lines(tmp_path: Path, lines: list[str], name: str = "slice.csv") -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_real_air_file_builds_its_timestamp_from_four_columns(air_spec: PipelineSpec) -> None:
    frame = ingest.read_source_file(str(AIR_CSV), air_spec, AIR_CSV.parents[2])
    out = ingest.normalise(frame, air_spec, origin=str(AIR_CSV)).frame
    assert len(out) == 43_824 == 5 * 365 * 24 + 24  # 2010-01-01 .. 2014-12-31 (2012 is a leap year)
    assert out["timestamp"].is_unique
    assert (out["timestamp"].min(), out["timestamp"].max()) == (
        pd.Timestamp("2010-01-01 00:00"),
        pd.Timestamp("2014-12-31 23:00"),
    )
    expected = pd.to_datetime(frame[["year", "month", "day", "hour"]]).astype("datetime64[ns]")
    assert (out["timestamp"].to_numpy() == expected.sort_values().to_numpy()).all()
    # Its README: 2,067 empty target hours, kept as missing (not a coercion error); four wind directions.
    assert nulls(out["pm2.5"]) == 2_067
    assert ingest.normalise(frame, air_spec).coercion_errors == {}
    assert set(out["cbwd"]) == {"NE", "NW", "SE", "cv"}


@pytest.mark.parametrize(
    ("column", "value"), [("month", "13"), ("hour", "24"), ("day", "30"), ("hour", "1.5"), ("year", ""), ("day", "x")]
)
def test_timestamp_part_out_of_range_is_a_format_error(
    air_spec: PipelineSpec, tmp_path: Path, column: str, value: str
) -> None:
    lines = air_lines(30)
    header = lines[0].split(",")
    cells = lines[7].split(",")
    cells[header.index("month")] = "2"  # 30 February when the day is 30
    cells[header.index(column)] = value
    if column != "day":
        cells[header.index("day")] = "3"
    lines[7] = ",".join(cells)
    path = write_lines(tmp_path, lines)
    frame = ingest.read_source_file(path, air_spec, tmp_path)
    with pytest.raises(ingest.SourceFormatError) as caught:
        ingest.normalise(frame, air_spec, origin=path)
    message = str(caught.value)
    assert path in message
    assert "1 row(s) whose timestamp parts" in message
    assert "not a valid date and hour 0-23" in message


def test_missing_timestamp_part_column_is_a_format_error(air_spec: PipelineSpec) -> None:
    frame = pd.read_csv(AIR_CSV, nrows=48).drop(columns=["hour"])
    with pytest.raises(ingest.SourceFormatError, match=r"missing column\(s\) \['hour'\]"):
        ingest.normalise(frame, air_spec, origin="slice")


def test_text_that_pandas_would_call_missing_stays_text(air_spec: PipelineSpec, tmp_path: Path) -> None:
    lines = air_lines(48)
    header = lines[0].split(",")
    for row, word in zip(range(1, 7), ["None", "NA", "null", "N/A", "nan", ""], strict=True):
        cells = lines[row].split(",")
        cells[header.index("cbwd")] = word
        lines[row] = ",".join(cells)
    cells = lines[30].split(",")
    cells[header.index("TEMP")] = "NA"  # a number column keeps pandas' missing words
    lines[30] = ",".join(cells)
    path = write_lines(tmp_path, lines)
    result = ingest.normalise(ingest.read_source_file(path, air_spec, tmp_path), air_spec, origin=path)
    assert result.frame["cbwd"].head(6).tolist()[:5] == ["None", "NA", "null", "N/A", "nan"]
    assert nulls(result.frame["cbwd"]) == 1  # only the empty cell
    assert nulls(result.frame["TEMP"]) == 1
    assert nulls(result.frame["pm2.5"]) == 24  # the file's own empty first day
    assert result.coercion_errors == {}


def duplicated_hours(air_spec: PipelineSpec, policy: str) -> tuple[PipelineSpec, pd.DataFrame]:
    """Two days of the real file (from 2010-01-02) where hours 3 and 5 of the first day arrive twice, the
    second copy with other values, and hour 5's first copy has no target."""
    spec = air_spec.model_copy(update={"source": air_spec.source.model_copy(update={"duplicates": policy})})
    frame = ingest.normalise(pd.read_csv(AIR_CSV, skiprows=range(1, 25), nrows=48), spec).frame
    frame.loc[5, "pm2.5"] = np.nan
    again = frame.iloc[[3, 5]].copy()
    again["pm2.5"] = [500.0, 300.0]
    again["TEMP"] = [10.0, 20.0]
    again["cbwd"] = pd.Series(["XX", "YY"], index=again.index, dtype="str")
    return spec, pd.concat([frame, again], ignore_index=True)


def test_duplicates_error_keeps_every_row(air_spec: PipelineSpec) -> None:
    spec, frame = duplicated_hours(air_spec, "error")
    result = ingest.collapse_duplicates(frame, spec)
    assert len(result.frame) == 50
    assert result.rows_collapsed == {}


@pytest.mark.parametrize("policy", ["first", "last", "mean"])
def test_duplicates_are_collapsed_and_counted_per_day(air_spec: PipelineSpec, policy: str) -> None:
    spec, frame = duplicated_hours(air_spec, policy)
    first = frame.iloc[:48]
    result = ingest.collapse_duplicates(frame, spec)
    out = result.frame
    assert len(out) == 48
    assert out["timestamp"].is_monotonic_increasing
    assert out["timestamp"].is_unique
    assert result.rows_collapsed == {"2010-01-02": 2}
    hour3, hour5 = out.iloc[3], out.iloc[5]
    expected = {
        "first": (first.iloc[3]["pm2.5"], first.iloc[3]["TEMP"], first.iloc[3]["cbwd"], True, first.iloc[5]["TEMP"]),
        "last": (500.0, 10.0, "XX", False, 20.0),
        # numbers: the mean of what is known (hour 5's missing target is skipped); text: the first known value
        "mean": (
            (first.iloc[3]["pm2.5"] + 500) / 2,
            (first.iloc[3]["TEMP"] + 10) / 2,
            first.iloc[3]["cbwd"],
            False,
            (first.iloc[5]["TEMP"] + 20) / 2,
        ),
    }[policy]
    assert (hour3["pm2.5"], hour3["TEMP"]) == pytest.approx(expected[:2])
    assert hour3["cbwd"] == expected[2]
    assert bool(np.isnan(hour5["pm2.5"])) is expected[3]
    assert hour5["TEMP"] == pytest.approx(expected[4])
    assert out.iloc[24:].reset_index(drop=True).equals(first.iloc[24:].reset_index(drop=True))
