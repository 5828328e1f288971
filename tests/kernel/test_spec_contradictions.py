"""Specs that contradict themselves are refused at load, naming the file, the field and the reason (issue 16);
time zones and text event markers load with their documented defaults."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import AIR_SPEC, BIKE_SPEC

from kernel.pipeline import Pipeline
from kernel.spec import SpecError, load_spec

Document = dict[str, Any]
Mutation = Callable[[Document], None]


def shipped(path: Path = BIKE_SPEC) -> Document:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def refused(tmp_path: Path, document: Document) -> tuple[Path, str]:
    path = tmp_path / "contradiction.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return path, str(caught.value)


def put(section: str, key: str, value: Any) -> Mutation:
    def mutate(document: Document) -> None:
        document[section][key] = value

    return mutate


def timestamp(**value: Any) -> Mutation:
    return put("source", "timestamp", value)


def column_rule(column: str, **rule: Any) -> Mutation:
    def mutate(document: Document) -> None:
        document["expectations"]["columns"][column] = rule

    return mutate


def entities(*columns: str) -> Mutation:
    return put("source", "entity_columns", list(columns))


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (column_rule("cnt", min=2000, max=0), "expectations.columns.cnt", "min 2000.0 is above max 0.0"),
        (
            put("expectations", "rows_per_partition", {"min": 25, "max": 24}),
            "expectations.rows_per_partition",
            "min 25 is above max 24",
        ),
        (
            timestamp(column="dteday", format="%m/%d", hour_column="hr"),
            "source.timestamp",
            "format '%m/%d' has no year",
        ),
        (
            timestamp(column="dteday", format="%Y/%d", hour_column="hr"),
            "source.timestamp",
            "format '%Y/%d' has no month",
        ),
        (timestamp(column="dteday", format="%Y-%m", hour_column="hr"), "source.timestamp", "format '%Y-%m' has no day"),
        (
            timestamp(column="dteday", format="%Y-%m-%d"),
            "source.timestamp",
            "has no hour (%H or %I) and no hour_column",
        ),
        (
            timestamp(column="dteday", format="%Y-%m-%d %H", hour_column="hr"),
            "source.timestamp",
            "hour_column 'hr' adds another",
        ),
        (
            timestamp(column="dteday", format="%Y-%m-%d", hour_column="dteday"),
            "source.timestamp",
            "is the timestamp column itself",
        ),
        (entities("timestamp"), "source", "entity_columns: 'timestamp' is the raw schema's own column"),
        (entities("station", "station"), "source", "entity_columns: ['station'] named more than once"),
        (entities("hr"), "source", "entity_columns: ['hr'] also hold the timestamp"),
        (put("source", "timezone", "Eastern"), "source.timezone", "'Eastern' is not an IANA time zone name"),
        (put("partitioning", "timezone", "CET+1"), "partitioning.timezone", "'CET+1' is not an IANA time zone name"),
        (
            column_rule("weathersit", min=1, max=4),
            "<root>",
            "expectations.columns.weathersit: min/max on a text column",
        ),
        (
            column_rule("temp", allowed_values=["0.5"]),
            "<root>",
            "expectations.columns.temp: allowed_values on a number",
        ),
    ],
)
def test_a_contradiction_is_refused_naming_file_field_and_reason(
    tmp_path: Path, mutate: Mutation, field: str, reason: str
) -> None:
    document = shipped()
    mutate(document)
    path, message = refused(tmp_path, document)
    assert message.startswith(f"invalid pipeline spec {path}:")
    assert f"\n  {field}: " in message
    assert reason in message


def test_the_shipped_specs_read_utc_with_the_default_no_event_words() -> None:
    for path in (BIKE_SPEC, AIR_SPEC):
        spec = load_spec(path)
        assert (spec.source.timezone, spec.partitioning.timezone) == ("UTC", "UTC")


def test_time_zones_and_event_words_load_and_reach_the_partitions(tmp_path: Path) -> None:
    document = shipped()
    document["source"]["timezone"] = "America/New_York"
    document["source"]["timestamp"] = {"column": "when", "format": "ISO8601"}
    document["partitioning"]["timezone"] = "Europe/Berlin"
    document["features"]["numeric"].remove("holiday")
    document["expectations"]["columns"].pop("holiday")
    document["features"]["events"] = [{"column": "holiday"}, {"column": "storm", "no_event": ["calm", " "]}]
    path = tmp_path / "zones.yaml"
    path.write_text(yaml.safe_dump(document))
    spec = load_spec(path)
    assert (spec.source.timezone, spec.partitioning.timezone) == ("America/New_York", "Europe/Berlin")
    holiday, storm = spec.features.events
    assert holiday.no_event_keys == {"", "0", "none", "no", "false"}
    assert storm.no_event_keys == {"calm", ""}
    assert Pipeline(spec, tmp_path).partitions_def.timezone == "Europe/Berlin"
    assert Pipeline(load_spec(BIKE_SPEC), tmp_path).partitions_def.timezone == "UTC"


@pytest.mark.parametrize("fmt", ["%d.%m.%y %I %p", "%Y-%j %H", "%Y-%m-%dT%H:%M:%S%z", "%%Y %Y-%m-%d %H"])
def test_complete_formats_load(tmp_path: Path, fmt: str) -> None:
    document = shipped()
    document["source"]["timestamp"] = {"column": "when", "format": fmt}
    path = tmp_path / "format.yaml"
    path.write_text(yaml.safe_dump(document))
    assert load_spec(path).source.timestamp.format == fmt


def test_an_escaped_percent_is_no_directive(tmp_path: Path) -> None:
    document = shipped()
    document["source"]["timestamp"] = {"column": "when", "format": "%%Y-%m-%d %H"}
    _, message = refused(tmp_path, document)
    assert "has no year" in message
