"""Messy real files get a clear answer (issue 16, 5): text event markers, a column with no number, blank entities,
`inf`, and an empty file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from messy_files import HOLIDAYS, air_document, bike_document, bike_source, infinities, stations

from kernel.spec import PipelineSpec
from ml import ingest


def read(path: Path, spec: PipelineSpec) -> ingest.Normalised:
    return ingest.normalise(ingest.read_source_file(str(path), spec, path.parent), spec, origin=str(path))


def holiday_spec(**event: object) -> PipelineSpec:
    """The bike spec with `holiday` an event column instead of a number feature."""
    document = bike_document()
    document["features"]["numeric"].remove("holiday")
    document["features"]["events"] = [{"column": "holiday", **event}]
    document["expectations"]["columns"].pop("holiday")
    return PipelineSpec.model_validate(document)


def holiday_days(frame: pd.DataFrame) -> set[str]:
    marked = frame[frame["holiday"] != 0]
    return set(marked["timestamp"].dt.strftime("%Y-%m-%d"))


@pytest.fixture(scope="module")
def bike() -> pd.DataFrame:
    return bike_source()


@pytest.fixture(scope="module")
def flagged_days(bike: pd.DataFrame) -> set[str]:
    """The days the UCI file flags with holiday = 1, read as numbers (as on main)."""
    return holiday_days(ingest.normalise(bike, holiday_spec()).frame)


def test_the_holiday_names_cover_exactly_the_flagged_days(bike: pd.DataFrame) -> None:
    assert set(bike.loc[bike["holiday"] == 1, "dteday"]) == set(HOLIDAYS)


def test_text_holiday_markers_mark_the_same_days_and_keep_their_names(
    bike: pd.DataFrame, flagged_days: set[str], tmp_path: Path
) -> None:
    text = bike.assign(holiday=bike["dteday"].map(HOLIDAYS).fillna("None"))
    path = tmp_path / "holidays_as_text.csv"
    text.to_csv(path, index=False)
    result = read(path, holiday_spec())
    assert len(flagged_days) == 21
    assert holiday_days(result.frame) == flagged_days, "on main every text value became NaN: no event ever"
    assert set(result.frame["holiday"].unique()) == {0.0, 1.0}
    assert result.coercion_errors == {}
    markers = {day: notes[ingest.EVENT_MARKERS] for day, notes in result.notes.items() if ingest.EVENT_MARKERS in notes}
    assert markers["2012-07-04"] == {"holiday": ["Independence Day"]}
    assert markers["2011-11-24"] == {"holiday": ["Thanksgiving Day"]}
    assert set(markers) == flagged_days


@pytest.mark.parametrize("quiet", ["", "0", "none", "NO", " False ", "0.0"])
def test_no_event_words_in_any_case_and_zero_mean_no_event(
    bike: pd.DataFrame, flagged_days: set[str], tmp_path: Path, quiet: str
) -> None:
    text = bike.assign(holiday=bike["dteday"].map(HOLIDAYS).fillna(quiet))
    path = tmp_path / "quiet.csv"
    text.to_csv(path, index=False)
    assert holiday_days(read(path, holiday_spec()).frame) == flagged_days


def test_the_spec_names_its_own_no_event_words(bike: pd.DataFrame, tmp_path: Path) -> None:
    text = bike.assign(holiday=bike["dteday"].map(HOLIDAYS).fillna("regular day"))
    path = tmp_path / "regular.csv"
    text.to_csv(path, index=False)
    assert len(holiday_days(read(path, holiday_spec()).frame)) == 731, "not a default word: every day is marked"
    assert len(holiday_days(read(path, holiday_spec(no_event=["Regular Day"])).frame)) == 21


def test_a_numeric_event_column_keeps_working(bike: pd.DataFrame, flagged_days: set[str], tmp_path: Path) -> None:
    path = tmp_path / "hour.parquet"
    bike.to_parquet(path)
    document = holiday_spec().model_dump()
    document["source"] |= {"format": "parquet", "uri": "hour.parquet"}
    frame = read(path, PipelineSpec.model_validate(document)).frame
    assert frame["holiday"].dtype == np.dtype("float64")
    assert holiday_days(frame) == flagged_days


def test_a_column_with_no_number_in_it_is_a_format_error(bike: pd.DataFrame, tmp_path: Path) -> None:
    """A European export: decimal commas, quoted; on main the whole column silently became NaN."""
    comma = bike.head(72).assign(temp=bike["temp"].head(72).map(lambda v: f"{v}".replace(".", ",")))
    path = tmp_path / "decimal_comma.csv"
    comma.to_csv(path, index=False)
    with pytest.raises(ingest.SourceFormatError) as caught:
        read(path, PipelineSpec.model_validate(bike_document()))
    message = str(caught.value)
    assert message.startswith(f"{path}:")
    assert "column 'temp' has no number in any of its 72 value(s)" in message
    assert "'0,24'" in message


def test_a_column_with_some_numbers_is_still_read_and_reported(bike: pd.DataFrame) -> None:
    frame = bike.head(48).astype({"temp": "object"})
    frame.loc[3, "temp"] = "0,24"
    result = ingest.normalise(frame, PipelineSpec.model_validate(bike_document()))
    assert result.coercion_errors == {"temp": {"count": 1, "examples": ["0,24"]}}


def test_blank_entity_cells_are_missing_and_counted_per_day(tmp_path: Path) -> None:
    path, spec = stations(tmp_path)
    result = read(path, spec)
    assert int(result.frame["station"].isna().sum()) == 4
    assert {day: notes for day, notes in result.notes.items()} == {
        "2010-01-03": {ingest.BLANK_ENTITIES: {"station": 3}},
        "2010-01-04": {ingest.BLANK_ENTITIES: {"station": 1}},
    }


def test_infinite_numbers_are_kept_and_counted_per_day(tmp_path: Path) -> None:
    result = read(infinities(tmp_path), PipelineSpec.model_validate(air_document()))
    assert result.coercion_errors == {}
    assert np.isposinf(result.frame["Iws"]).sum() == 2
    assert result.notes == {
        "2010-01-02": {ingest.NON_FINITE: {"Iws": 2}},
        "2010-01-03": {ingest.NON_FINITE: {"TEMP": 1}},
    }


def test_an_empty_file_is_a_format_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(ingest.SourceFormatError, match=r"empty\.csv: file is empty \(0 bytes\)"):
        ingest.read_source_file(str(path), PipelineSpec.model_validate(bike_document()), tmp_path)


def test_notes_of_several_files_merge_and_follow_the_rebase() -> None:
    first = {"2010-01-02": {ingest.NON_FINITE: {"Iws": 2}, ingest.DST_AMBIGUOUS: 1}}
    second = {
        "2010-01-02": {ingest.NON_FINITE: {"Iws": 1, "TEMP": 1}, ingest.EVENT_MARKERS: {"holiday": ["B", "A"]}},
        "2010-01-03": {ingest.EVENT_MARKERS: {"holiday": ["A"]}},
    }
    third = {"2010-01-03": {ingest.EVENT_MARKERS: {"holiday": ["C", "A"]}, ingest.DST_AMBIGUOUS: 2}}
    merged = ingest.merge_notes(first, second, third)
    assert merged == {
        "2010-01-02": {
            ingest.NON_FINITE: {"Iws": 3, "TEMP": 1},
            ingest.DST_AMBIGUOUS: 1,
            ingest.EVENT_MARKERS: {"holiday": ["A", "B"]},
        },
        "2010-01-03": {ingest.EVENT_MARKERS: {"holiday": ["A", "C"]}, ingest.DST_AMBIGUOUS: 2},
    }
    assert list(ingest.rebase_notes(merged, 14)) == ["2010-01-16", "2010-01-17"]


def test_a_file_whose_series_column_is_blank_in_every_row_is_a_format_error(tmp_path: Path) -> None:
    path, spec = stations(tmp_path)
    frame = pd.read_csv(path)
    frame.assign(station="  ").to_csv(path, index=False)
    with pytest.raises(
        ingest.SourceFormatError, match=r"stations\.csv: series column\(s\) \['station'\] blank in every"
    ):
        read(path, spec)
