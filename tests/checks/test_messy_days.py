"""The raw gate and completeness on messy real-derived days: blank entities and `inf` fail their own day with the
reason; days of 23 or 25 hours at a DST change are complete when they hold every hour they have."""

from __future__ import annotations

from datetime import date
from pathlib import Path

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
    air_document,
    berlin_export,
    berlin_spec,
    bike_document,
    infinities,
    stations,
    write_csv,
)

from kernel import series
from kernel.spec import ColumnExpectation, PipelineSpec
from ml import ingest
from ml.expectations import completeness_verdicts, expectation_verdicts


def raw_days(path: Path, spec: PipelineSpec, days: list[str]) -> dict[str, pd.DataFrame]:
    frame = ingest.normalise(ingest.read_source_file(str(path), spec, path.parent), spec, str(path)).frame
    return ingest.split_days(frame, [date.fromisoformat(day) for day in days], spec)


@pytest.mark.parametrize("unit", ["series_day", "day"])
def test_rows_without_a_series_are_rejected_as_their_own_series_or_with_their_day(tmp_path: Path, unit: str) -> None:
    path, spec = stations(tmp_path)  # two stations; blank station cells on the third day, spaces on the fourth
    spec = spec.model_copy(update={"expectations": spec.expectations.model_copy(update={"reject": unit})})
    verdicts = expectation_verdicts(raw_days(path, spec, ["2010-01-02", "2010-01-03", "2010-01-04"]), spec)
    assert verdicts["2010-01-02"].passed and not verdicts["2010-01-02"].rejected_series
    for day, count in [("2010-01-03", 3), ("2010-01-04", 1)]:
        why = f"expect_column_values_to_not_be_null station: {count} row(s)"
        if unit == "day":
            assert not verdicts[day].passed
            assert verdicts[day].reason == f"1 of 3 series fail ({series.BLANK}: {why})"
        else:  # the stations' own rows are kept; the rows that name no station are rejected as their own series
            assert verdicts[day].passed
            assert verdicts[day].rejected_series == {series.BLANK: why}
            assert verdicts[day].reason == f"1 of 3 series rejected ({series.BLANK}: {why}); the other 2 kept"


def test_an_entity_the_spec_lets_be_blank_passes(tmp_path: Path) -> None:
    path, spec = stations(tmp_path)
    rules = spec.expectations.columns | {"station": ColumnExpectation(not_null=False)}
    lenient = spec.model_copy(update={"expectations": spec.expectations.model_copy(update={"columns": rules})})
    verdicts = expectation_verdicts(raw_days(path, lenient, ["2010-01-03"]), lenient)
    assert verdicts["2010-01-03"].passed


def test_inf_fails_its_day_even_where_the_spec_gives_only_a_lower_bound(tmp_path: Path) -> None:
    spec = PipelineSpec.model_validate(air_document())  # Iws: {min: 0} only; TEMP: {min: -40, max: 50}
    verdicts = expectation_verdicts(raw_days(infinities(tmp_path), spec, ["2010-01-02", "2010-01-03"]), spec)
    assert not verdicts["2010-01-02"].passed
    assert verdicts["2010-01-02"].reason == "expect_column_values_to_be_between Iws: 2 row(s)"
    assert not verdicts["2010-01-03"].passed
    assert verdicts["2010-01-03"].reason == "expect_column_values_to_be_between TEMP: 1 row(s)"


def test_inf_in_a_column_without_rules_fails_its_day() -> None:
    document = bike_document()
    document["expectations"]["columns"].pop("windspeed")
    spec = PipelineSpec.model_validate(document)
    source = pd.read_csv(BIKE_CSV, nrows=48).astype({"windspeed": "object"})
    source.loc[30, "windspeed"] = "inf"
    frame = ingest.normalise(source, spec).frame
    verdicts = expectation_verdicts(ingest.split_days(frame, [date(2011, 1, 1), date(2011, 1, 2)], spec), spec)
    assert verdicts["2011-01-01"].passed
    assert verdicts["2011-01-02"].reason == "expect_column_values_to_be_between windspeed: 1 row(s)"


@pytest.fixture(scope="module")
def berlin_days(tmp_path_factory: pytest.TempPathFactory) -> tuple[PipelineSpec, dict[str, pd.DataFrame]]:
    path = Path(write_csv(berlin_export("2012-03-24", "2012-10-29"), tmp_path_factory.mktemp("b") / "berlin.csv"))
    spec = berlin_spec()
    return spec, raw_days(path, spec, ["2012-03-24", SPRING, "2012-03-26", "2012-10-27", AUTUMN, "2012-10-29"])


def test_dst_days_in_berlin_partitions_are_complete_and_pass_the_gate(
    berlin_days: tuple[PipelineSpec, dict[str, pd.DataFrame]],
) -> None:
    spec, raw = berlin_days
    assert {day: len(frame) for day, frame in raw.items()} == {
        "2012-03-24": 24, SPRING: 23, "2012-03-26": 24, "2012-10-27": 24, AUTUMN: 25, "2012-10-29": 24
    }  # fmt: skip
    assert str(raw[AUTUMN]["timestamp"].dtype) == f"datetime64[ns, {BERLIN}]"
    completeness = completeness_verdicts(raw, spec)
    assert all(verdict.passed for verdict in completeness.values()), {d: v.reason for d, v in completeness.items()}
    assert (completeness[SPRING].metadata["min_rows"], completeness[SPRING].metadata["hours"]) == (23, 23)
    assert (completeness[AUTUMN].metadata["max_rows"], completeness[AUTUMN].metadata["hours"]) == (25, 25)
    gate = expectation_verdicts(raw, spec)
    assert gate[SPRING].passed and gate[AUTUMN].passed, (gate[SPRING].reason, gate[AUTUMN].reason)


def test_a_dst_day_missing_an_hour_is_short(berlin_days: tuple[PipelineSpec, dict[str, pd.DataFrame]]) -> None:
    spec, raw = berlin_days
    short = {AUTUMN: raw[AUTUMN].iloc[1:].reset_index(drop=True), SPRING: raw[SPRING].iloc[1:].reset_index(drop=True)}
    verdicts = completeness_verdicts(short, spec)
    assert verdicts[AUTUMN].reason == "1 series outside 25..25 rows"
    assert verdicts[SPRING].reason == "1 series outside 23..23 rows"


def test_the_new_york_bike_file_in_new_york_partitions() -> None:
    """The real export writes the repeated hour once: 24 rows on a 25-hour day, inside the bike spec's 22..24
    moved to 23..25; a spec asking for every hour flags that day as short by one."""
    document = bike_document(timezone=NEW_YORK)
    document["partitioning"] |= {"timezone": NEW_YORK}
    spec = PipelineSpec.model_validate(document)
    raw = raw_days(BIKE_CSV, spec, [BIKE_SPRING, BIKE_AUTUMN])
    assert completeness_verdicts(raw, spec)[BIKE_AUTUMN].passed
    document["expectations"]["rows_per_partition"] = {"min": 24, "max": 24}
    every_hour = PipelineSpec.model_validate(document)
    verdicts = completeness_verdicts(raw, every_hour)
    assert verdicts[BIKE_SPRING].passed, "23 rows on a 23-hour day"
    assert verdicts[BIKE_AUTUMN].reason == "1 series outside 25..25 rows"
