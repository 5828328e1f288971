"""Pipeline specs: the shipped spec loads, and every broken spec fails naming the file, the field and the reason."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import AIR_CSV, AIR_SPEC, BIKE_CSV, BIKE_SPEC

from kernel.spec import PipelineSpec, SpecError, load_spec, load_specs

Document = dict[str, Any]
Writer = Callable[[Document], Path]


def shipped_document() -> Document:
    document = yaml.safe_load(BIKE_SPEC.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture
def write_spec(tmp_path: Path) -> Writer:
    """Write a spec document to its own file under tmp_path and return the path."""
    counter = iter(range(1_000))

    def write(document: Document) -> Path:
        path = tmp_path / f"spec_{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(document))
        return path

    return write


def spec_error(path: Path) -> str:
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return str(caught.value)


def test_shipped_spec_loads() -> None:
    document = shipped_document()
    spec = load_spec(BIKE_SPEC)
    # Fixed by the UCI data the spec reads.
    assert spec.name == "bike_demand"
    assert spec.target == "cnt"
    assert (spec.source.timestamp.column, spec.source.timestamp.hour_column) == ("dteday", "hr")
    header = BIKE_CSV.read_text().splitlines()[0].split(",")
    assert set(spec.source_columns) <= set(header)
    # Tunable values come through as written in the YAML.
    assert spec.training.window_days == document["training"]["window_days"]
    assert [c.family for c in spec.training.candidates] == [c["family"] for c in document["training"]["candidates"]]
    assert spec.features.target_lags_hours == document["features"]["target_lags_hours"]
    lags = document["features"]["target_lags_hours"]
    rolling = [min(lags) + r["window_hours"] for r in document["features"]["rolling"]]
    assert spec.features.min_lag_hours == min(lags)
    assert spec.features.lookback_hours == max(lags + rolling)
    for stage in ("features", "model", "predictions"):
        window = getattr(spec.freshness, stage)
        assert timedelta(minutes=1) <= window.warn < window.fail


def test_round_trip_of_the_shipped_document_is_equal(write_spec: Writer) -> None:
    path = write_spec(shipped_document())
    assert load_spec(path).model_dump() == load_spec(BIKE_SPEC).model_dump()
    assert (load_spec(path).file, load_spec(BIKE_SPEC).file) == (str(path), str(BIKE_SPEC))


def test_field_error_names_file_dotted_field_and_reason(write_spec: Writer) -> None:
    document = shipped_document()
    document["training"]["window_days"] = 1
    path = write_spec(document)
    message = spec_error(path)
    assert str(path) in message
    assert "training.window_days" in message
    assert "greater than 1" in message


def test_error_in_a_list_item_names_its_index(write_spec: Writer) -> None:
    document = shipped_document()
    document["training"]["candidates"][0]["family"] = "xgboost"
    message = spec_error(write_spec(document))
    assert "training.candidates.0.family" in message
    assert "ridge" in message  # the reason lists the allowed families


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: bike\nsource: [unclosed\n")
    message = spec_error(path)
    assert str(path) in message
    assert "not valid YAML" in message


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("", "NoneType")])
def test_document_that_is_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "not_mapping.yaml"
    path.write_text(text)
    message = spec_error(path)
    assert str(path) in message
    assert "<root>" in message
    assert f"expected a mapping, got {kind}" in message


@pytest.mark.parametrize(
    ("section", "field"), [(None, "schedule"), ("features", "lag_hours"), ("freshness.model", "warning")]
)
def test_unknown_field_is_rejected(write_spec: Writer, section: str | None, field: str) -> None:
    document = shipped_document()
    target = document
    for part in section.split(".") if section else []:
        target = target[part]
    target[field] = 1
    message = spec_error(write_spec(document))
    dotted = f"{section}.{field}" if section else field
    assert f"{dotted}: Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("26h", timedelta(hours=26)),
        ("2d", timedelta(days=2)),
        ("90m", timedelta(minutes=90)),
        (" 3 h ", timedelta(hours=3)),
    ],
)
def test_duration_parsing(write_spec: Writer, text: str, expected: timedelta) -> None:
    document = shipped_document()
    document["freshness"]["model"] = {"warn": text, "fail": "30d"}
    spec = load_spec(write_spec(document))
    assert spec.freshness.model.warn == expected
    assert spec.freshness.model.fail == timedelta(days=30)


@pytest.mark.parametrize("text", ["5x", "h", "1.5h", "-2h"])
def test_bad_duration_is_rejected(write_spec: Writer, text: str) -> None:
    document = shipped_document()
    document["freshness"]["predictions"]["warn"] = text
    message = spec_error(write_spec(document))
    assert "freshness.predictions.warn" in message
    assert repr(text) in message
    assert "must look like" in message


@pytest.mark.parametrize(("warn", "fail"), [("50h", "50h"), ("3d", "2d"), ("1h", "59m")])
def test_warn_must_be_below_fail(write_spec: Writer, warn: str, fail: str) -> None:
    document = shipped_document()
    document["freshness"]["features"] = {"warn": warn, "fail": fail}
    message = spec_error(write_spec(document))
    assert "freshness.features" in message
    assert "need 1m <= warn < fail" in message


def test_warn_of_one_minute_is_the_smallest_allowed(write_spec: Writer) -> None:
    document = shipped_document()
    document["freshness"]["features"] = {"warn": "1m", "fail": "2m"}
    assert load_spec(write_spec(document)).freshness.features.warn == timedelta(minutes=1)
    document["freshness"]["features"] = {"warn": "0m", "fail": "2m"}
    assert "1m <= warn < fail" in spec_error(write_spec(document))


def test_baseline_season_must_be_one_of_the_lags(write_spec: Writer) -> None:
    document = shipped_document()
    lags = document["features"]["target_lags_hours"]
    assert 1000 not in lags
    document["evaluation"]["baseline_season_hours"] = 1000
    message = spec_error(write_spec(document))
    assert "evaluation.baseline_season_hours=1000" in message
    assert f"must be one of features.target_lags_hours {lags}" in message


@pytest.mark.parametrize("extra_days", [0, 8])
def test_holdout_must_be_shorter_than_window(write_spec: Writer, extra_days: int) -> None:
    document = shipped_document()
    document["evaluation"]["holdout_days"] = document["training"]["window_days"] + extra_days
    message = spec_error(write_spec(document))
    assert "evaluation.holdout_days must be smaller than training.window_days" in message


def test_holdout_one_day_shorter_than_window_is_fine(write_spec: Writer) -> None:
    document = shipped_document()
    document["evaluation"]["holdout_days"] = document["training"]["window_days"] - 1
    spec = load_spec(write_spec(document))
    assert spec.evaluation.holdout_days == spec.training.window_days - 1


def test_expectations_on_unknown_columns_are_rejected(write_spec: Writer) -> None:
    document = shipped_document()
    document["expectations"]["columns"]["casual"] = {"min": 0}
    document["expectations"]["columns"]["registered"] = {"min": 0}
    message = spec_error(write_spec(document))
    assert "expectations name columns that are not in the pipeline" in message
    assert "['casual', 'registered']" in message


def test_expectations_may_name_entity_columns(write_spec: Writer) -> None:
    document = shipped_document()
    document["source"]["entity_columns"] = ["station"]
    document["expectations"]["columns"]["station"] = {"not_null": True}
    spec = load_spec(write_spec(document))
    assert spec.expectations.columns["station"].not_null


def test_feature_named_like_a_reserved_column_is_rejected(write_spec: Writer) -> None:
    document = shipped_document()
    document["features"]["numeric"].append("timestamp")
    assert "reserved" in spec_error(write_spec(document))


def test_lag_below_a_day_is_rejected(write_spec: Writer) -> None:
    document = shipped_document()
    document["features"]["target_lags_hours"] = [1, 24, 168]
    message = spec_error(write_spec(document))
    assert "features.target_lags_hours.0" in message


def test_model_validate_accepts_the_document_without_a_file() -> None:
    spec = PipelineSpec.model_validate(shipped_document())
    assert spec.partitioning.end_date is not None
    assert spec.partitioning.end_date > spec.partitioning.start_date


def test_load_specs_reads_every_yaml_sorted(tmp_path: Path) -> None:
    for name in ["zeta", "alpha"]:
        document = shipped_document()
        document["name"] = name
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(document))
    (tmp_path / "notes.txt").write_text("not a spec")
    assert [spec.name for spec in load_specs(tmp_path)] == ["alpha", "zeta"]


def test_load_specs_rejects_duplicate_names(tmp_path: Path) -> None:
    for file_name in ["a.yaml", "b.yaml"]:
        (tmp_path / file_name).write_text(yaml.safe_dump(shipped_document()))
    with pytest.raises(SpecError) as caught:
        load_specs(tmp_path)
    message = str(caught.value)
    assert "pipeline names must be unique" in message
    assert str(tmp_path) in message
    assert "bike_demand" in message


def test_load_specs_propagates_the_bad_file(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(shipped_document()))
    document = shipped_document()
    document["name"] = "Not-A-Name"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(SpecError) as caught:
        load_specs(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "bad.yaml") in message
    assert "name: String should match pattern" in message


# Options for real, messy data: each is used by the shipped air-quality spec or rejected with file, field, reason.


def air_document() -> Document:
    document = yaml.safe_load(AIR_SPEC.read_text())
    assert isinstance(document, dict)
    return document


def test_shipped_air_quality_spec_reads_its_file() -> None:
    spec = load_spec(AIR_SPEC)
    header = AIR_CSV.read_text().splitlines()[0].split(",")
    parts = spec.source.timestamp.parts
    assert parts is not None
    assert spec.source.timestamp.columns == [parts.year, parts.month, parts.day, parts.hour]
    assert set(spec.source.timestamp.columns) | set(spec.source_columns) <= set(header)
    # Persistence (same hour yesterday) is its baseline; a few empty target hours are tolerated per day.
    assert spec.evaluation.baseline_season_hours == 24
    assert 0 < spec.expectations.columns[spec.target].mostly < 1


def test_duplicates_policy_defaults_to_error_and_accepts_the_documented_ones(write_spec: Writer) -> None:
    assert load_spec(BIKE_SPEC).source.duplicates == "error"
    for policy in ("first", "last", "mean", "error"):
        document = shipped_document()
        document["source"]["duplicates"] = policy
        assert load_spec(write_spec(document)).source.duplicates == policy


def test_unknown_duplicates_policy_is_rejected(write_spec: Writer) -> None:
    document = shipped_document()
    document["source"]["duplicates"] = "max"
    path = write_spec(document)
    message = spec_error(path)
    assert str(path) in message
    assert "source.duplicates: Input should be 'error', 'first', 'last' or 'mean'" in message


PARTS = {"year": "year", "month": "month", "day": "day", "hour": "hour"}


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ({k: v for k, v in PARTS.items() if k != "hour"}, "source.timestamp.parts.hour: Field required"),
        (PARTS | {"minute": "min"}, "source.timestamp.parts.minute: Extra inputs are not permitted"),
        (PARTS | {"day": "month"}, "['month'] is named by more than one part"),
    ],
)
def test_bad_timestamp_parts_are_rejected(write_spec: Writer, parts: dict[str, str], reason: str) -> None:
    document = air_document()
    document["source"]["timestamp"] = {"parts": parts}
    path = write_spec(document)
    message = spec_error(path)
    assert str(path) in message
    assert reason in message


def test_a_timestamp_part_written_twice_is_rejected(tmp_path: Path) -> None:
    text = AIR_SPEC.read_text().replace("{parts: {year: year,", "{parts: {year: year, year: No,")
    assert "year: No" in text
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    message = spec_error(path)
    assert str(path) in message
    assert "found key 'year' twice" in message


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        ({"column": "dteday", "format": "%m/%d/%y", "parts": PARTS}, "not both"),
        ({"column": "dteday"}, "give column + format"),
        ({}, "give column + format"),
    ],
)
def test_timestamp_needs_exactly_one_shape(write_spec: Writer, timestamp: dict[str, Any], reason: str) -> None:
    document = shipped_document()
    document["source"]["timestamp"] = timestamp
    message = spec_error(write_spec(document))
    assert "source.timestamp" in message
    assert reason in message


def set_mostly(value: float) -> Callable[[Document], None]:
    def mutate(document: Document) -> None:
        document["expectations"]["columns"]["cnt"]["mostly"] = value

    return mutate


def event_also_listed_as(kind: str) -> Callable[[Document], None]:
    def mutate(document: Document) -> None:
        document["features"][kind].append("holiday_marker")
        document["features"]["events"] = [{"column": "holiday_marker", "lagged": True}]

    return mutate


EVENT_CLASH = "event columns ['holiday_marker'] are also the target or a numeric/categorical feature"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        *((set_mostly(v), "expectations.columns.cnt.mostly: Input should be") for v in (0, -0.5, 1.01, 2)),
        *((event_also_listed_as(kind), EVENT_CLASH) for kind in ("numeric", "categorical")),
    ],
)
def test_nonsense_in_a_real_data_option_names_file_field_and_reason(
    write_spec: Writer, mutate: Callable[[Document], None], reason: str
) -> None:
    document = shipped_document()
    mutate(document)
    path = write_spec(document)
    message = spec_error(path)
    assert str(path) in message
    assert reason in message


def test_mostly_of_one_is_the_default_and_allowed(write_spec: Writer) -> None:
    document = shipped_document()
    document["expectations"]["columns"]["cnt"]["mostly"] = 1
    assert load_spec(write_spec(document)).expectations.columns["cnt"].mostly == 1
    assert load_spec(BIKE_SPEC).expectations.columns["temp"].mostly == 1


def test_event_column_becomes_a_source_column(write_spec: Writer) -> None:
    document = shipped_document()
    document["features"]["numeric"].remove("holiday")
    document["features"]["events"] = [{"column": "holiday", "lagged": True}]
    document["expectations"]["columns"]["holiday"] = {"not_null": False, "min": 0, "max": 1}
    spec = load_spec(write_spec(document))
    assert spec.source_columns[-1] == "holiday"
    assert spec.features.events[0].lagged


def test_gradient_boosting_fits_absolute_error_unless_the_spec_says_otherwise(write_spec: Writer) -> None:
    document = shipped_document()
    document["training"]["candidates"] = [
        {"family": "hist_gradient_boosting", "params": {"max_iter": 50}},
        {"family": "random_forest"},
        {"family": "hist_gradient_boosting", "params": {"loss": "squared_error"}},
        {"family": "hist_gradient_boosting"},
    ]
    spec = load_spec(write_spec(document))
    losses = [c.params.get("loss") for c in spec.training.candidates]
    assert losses == ["absolute_error", None, "squared_error", "absolute_error"]  # random_forest gets no default
