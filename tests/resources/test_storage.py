"""The partitioned asset store: files per partition, atomic writes, and real Dagster runs through it."""

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from kernel.names import ALLOW_MISSING_PARTITIONS, FINGERPRINT, RANGE_END, RANGE_START, UNFINISHED_DIR
from kernel.records import Rejected
from resources.storage import MissingPartitionError, PartitionedParquetIOManager
from sensors import unfinished_writes
from sensors.unfinished_writes import UNFINISHED_AFTER_S

KEY = dg.AssetKey(["bike_demand", "raw"])
DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-10")


@pytest.fixture
def store(tmp_path: Path) -> PartitionedParquetIOManager:
    return PartitionedParquetIOManager(base_uri=str(tmp_path / "assets"))


def sample_frame(day: str = "2024-01-02", rows: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": pd.date_range(day, periods=rows, freq="h").astype("datetime64[ns]"),
            "station": pd.Series([f"s{i}" for i in range(rows)], dtype="str"),
            "cnt": np.arange(rows, dtype="float64") + 0.5,
            "weathersit": pd.Series(["1", None, "3"][:rows], dtype="str"),
        }
    )


def leftovers(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if ".tmp-" in path.name]


def test_dataframe_partition_round_trip(store: PartitionedParquetIOManager, tmp_path: Path) -> None:
    frame = sample_frame()
    path = store.write(KEY, "2024-01-02", frame)
    assert Path(path) == tmp_path / "assets" / "bike_demand" / "raw" / "2024-01-02.parquet"
    assert pq.read_table(path).num_rows == 3

    back = store.read(KEY, "2024-01-02")
    assert isinstance(back, pd.DataFrame)
    assert {column: str(dtype) for column, dtype in back.dtypes.items()} == {
        "timestamp": "datetime64[ns]",
        "station": "str",
        "cnt": "float64",
        "weathersit": "str",
    }
    pd.testing.assert_frame_equal(back, frame)
    assert back["weathersit"].isna().tolist()[1]


def test_empty_frame_keeps_its_schema(store: PartitionedParquetIOManager) -> None:
    empty = sample_frame().iloc[0:0].reset_index(drop=True)
    store.write(KEY, "2024-01-03", empty)
    back = store.read(KEY, "2024-01-03")
    assert back.empty
    assert back.dtypes.to_dict() == empty.dtypes.to_dict()


def test_mapping_round_trip_as_json(store: PartitionedParquetIOManager, tmp_path: Path) -> None:
    value = {"version": 3, "metrics": {"mae": 12.5, "rmse": 20.0}, "days": ["2024-01-01", "2024-01-02"], "ok": True}
    path = store.write(dg.AssetKey(["bike_demand", "model"]), "2024-01-02", value)
    assert path.endswith("bike_demand/model/2024-01-02.json")
    assert json.loads(Path(path).read_text()) == value
    assert store.read(dg.AssetKey(["bike_demand", "model"]), "2024-01-02") == value


def test_unpartitioned_value(store: PartitionedParquetIOManager, tmp_path: Path) -> None:
    key = dg.AssetKey(["bike_demand", "champion"])
    store.write(key, None, {"version": 1})
    assert (tmp_path / "assets" / "bike_demand" / "champion" / "__all__.json").is_file()
    assert store.read(key, None) == {"version": 1}
    assert store.exists(key, None)
    assert not store.exists(key, "2024-01-01")


def test_overwrite_replaces_the_value(store: PartitionedParquetIOManager) -> None:
    store.write(KEY, "2024-01-02", sample_frame(rows=3))
    store.write(KEY, "2024-01-02", sample_frame(rows=2))
    assert len(store.read(KEY, "2024-01-02")) == 2


def test_read_many_skips_missing_only_when_allowed(store: PartitionedParquetIOManager) -> None:
    store.write(KEY, "2024-01-01", sample_frame("2024-01-01"))
    store.write(KEY, "2024-01-03", sample_frame("2024-01-03"))
    wanted = ["2024-01-01", "2024-01-02", "2024-01-03"]

    values = store.read_many(KEY, wanted, allow_missing=True)
    assert list(values) == ["2024-01-01", "2024-01-03"]
    assert values["2024-01-03"]["timestamp"].iloc[0] == pd.Timestamp("2024-01-03")

    with pytest.raises(MissingPartitionError) as caught:
        store.read_many(KEY, wanted, allow_missing=False)
    message = str(caught.value)
    assert "bike_demand/raw" in message
    assert "partition 2024-01-02" in message
    assert isinstance(caught.value, dg.Failure)


def test_missing_unpartitioned_value(store: PartitionedParquetIOManager) -> None:
    with pytest.raises(MissingPartitionError, match="no partition"):
        store.read(dg.AssetKey("nothing"), None)


@pytest.mark.parametrize("value", [[1, 2], 42, "text", pd.Series([1.0])])
def test_wrong_value_type_fails(store: PartitionedParquetIOManager, tmp_path: Path, value: object) -> None:
    with pytest.raises(dg.Failure) as caught:
        store.write(KEY, "2024-01-02", value)
    assert "bike_demand/raw" in str(caught.value)
    assert type(value).__name__ in str(caught.value)
    assert not store.exists(KEY, "2024-01-02")


def test_no_temporary_files_left(store: PartitionedParquetIOManager, tmp_path: Path) -> None:
    for day in ["2024-01-01", "2024-01-02"]:
        store.write(KEY, day, sample_frame(day))
        store.write(dg.AssetKey(["bike_demand", "model"]), day, {"day": day})
    files = sorted(path.relative_to(tmp_path / "assets").as_posix() for path in (tmp_path / "assets").rglob("*.*"))
    assert files == [
        "bike_demand/model/2024-01-01.json",
        "bike_demand/model/2024-01-02.json",
        "bike_demand/raw/2024-01-01.parquet",
        "bike_demand/raw/2024-01-02.parquet",
    ]
    assert leftovers(tmp_path) == []


def frame_for(day: str) -> pd.DataFrame:
    """A distinct two-row frame per day, so a file read back can be traced to its partition."""
    return pd.DataFrame(
        {
            "timestamp": pd.date_range(day, periods=2, freq="12h").astype("datetime64[ns]"),
            "day": pd.Series([day, day], dtype="str"),
            "value": [float(day[-2:]), float(day[-2:]) * 10],
        }
    )


@dg.asset(key=["demo", "daily"], partitions_def=DAILY, backfill_policy=dg.BackfillPolicy.single_run())
def daily(context: dg.AssetExecutionContext) -> dict[str, pd.DataFrame]:
    return {key: frame_for(key) for key in context.partition_keys}


@dg.asset(
    key=["demo", "trailing"],
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        "upstream": dg.AssetIn(
            key=["demo", "daily"],
            partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-2),
            metadata={ALLOW_MISSING_PARTITIONS: True},
        )
    },
)
def trailing(context: dg.AssetExecutionContext, upstream: dict[str, pd.DataFrame]) -> dict[str, dict[str, Any]]:
    """Each day records which upstream days it was given (up to three: itself and the two before)."""
    return {
        key: {"seen": sorted(upstream), "rows": sum(len(f) for f in upstream.values())}
        for key in context.partition_keys
    }


@dg.asset(
    key=["demo", "strict"],
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        "upstream": dg.AssetIn(key=["demo", "daily"], partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-2))
    },
)
def strict(context: dg.AssetExecutionContext, upstream: dict[str, pd.DataFrame]) -> dict[str, dict[str, Any]]:
    return {key: {"seen": sorted(upstream)} for key in context.partition_keys}


def asset_returning(returned: object) -> dg.AssetsDefinition:
    @dg.asset(key=["demo", "bad"], partitions_def=DAILY, backfill_policy=dg.BackfillPolicy.single_run())
    def bad() -> Any:
        return returned

    return bad


def run(
    assets: list[dg.AssetsDefinition],
    store: PartitionedParquetIOManager,
    first: str,
    last: str,
    selection: list[dg.AssetKey] | None = None,
) -> dg.ExecuteInProcessResult:
    defs = dg.Definitions(assets=assets, resources={"io_manager": store})
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=selection,
        tags={RANGE_START: first, RANGE_END: last},
        raise_on_error=False,
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every message of the failure chain of the run's failed steps."""
    texts = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            texts.append(error.message)
            error = error.cause
    return "\n".join(texts)


def test_materialise_three_partitions_in_one_run(store: PartitionedParquetIOManager, tmp_path: Path) -> None:
    result = run([daily], store, "2024-01-02", "2024-01-04")
    assert result.success
    materialised = result.get_asset_materialization_events()
    assert sorted(e.partition for e in materialised if e.partition) == ["2024-01-02", "2024-01-03", "2024-01-04"]
    assert len(result.get_step_success_events()) == 1  # one step for the whole range (single-run backfill)

    folder = tmp_path / "assets" / "demo" / "daily"
    assert sorted(path.name for path in folder.iterdir()) == [
        "2024-01-02.parquet",
        "2024-01-03.parquet",
        "2024-01-04.parquet",
    ]
    for day in ["2024-01-02", "2024-01-03", "2024-01-04"]:
        pd.testing.assert_frame_equal(store.read(dg.AssetKey(["demo", "daily"]), day), frame_for(day))
    assert leftovers(tmp_path) == []


def test_downstream_window_gets_only_existing_partitions(store: PartitionedParquetIOManager) -> None:
    assert run([daily], store, "2024-01-02", "2024-01-03").success
    assert run([daily], store, "2024-01-05", "2024-01-05").success

    result = run([daily, trailing], store, "2024-01-04", "2024-01-06", selection=[dg.AssetKey(["demo", "trailing"])])
    assert result.success, failure_text(result)
    # The run's window is 01-02..01-06; 01-04 and 01-06 were never materialised upstream.
    seen = {
        day: store.read(dg.AssetKey(["demo", "trailing"]), day) for day in ["2024-01-04", "2024-01-05", "2024-01-06"]
    }
    for value in seen.values():
        assert value == {"seen": ["2024-01-02", "2024-01-03", "2024-01-05"], "rows": 6}


def test_downstream_window_without_permission_fails_on_a_gap(store: PartitionedParquetIOManager) -> None:
    assert run([daily], store, "2024-01-02", "2024-01-03").success
    result = run([daily, strict], store, "2024-01-05", "2024-01-05", selection=[dg.AssetKey(["demo", "strict"])])
    assert not result.success
    text = failure_text(result)
    assert "demo/daily has no stored value for partition 2024-01-04" in text


@pytest.mark.parametrize(
    ("returned", "got"),
    [
        (frame_for("2024-01-02"), "got DataFrame"),
        (
            {"2024-01-02": frame_for("2024-01-02"), "2024-01-03": frame_for("2024-01-03")},
            "got ['2024-01-02', '2024-01-03']",
        ),
        (
            {day: frame_for(day) for day in ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]},
            "got ['2024-01-02', '2024-01-03', '2024-01-04', '2024-01-05']",
        ),
    ],
    ids=["not_a_mapping", "missing_key", "extra_key"],
)
def test_partitioned_asset_must_return_exactly_its_partitions(
    store: PartitionedParquetIOManager, tmp_path: Path, returned: object, got: str
) -> None:
    result = run([asset_returning(returned)], store, "2024-01-02", "2024-01-04")
    assert not result.success
    text = failure_text(result)
    assert "demo/bad: a partitioned asset must return a mapping from each partition key of the run" in text
    assert "expected 3 keys (2024-01-02..2024-01-04)" in text
    assert got in text
    assert not (tmp_path / "assets" / "demo" / "bad").exists()


def test_handle_output_writes_every_mapping_value(store: PartitionedParquetIOManager) -> None:
    values: Mapping[str, dict[str, str]] = {"2024-01-07": {"a": "1"}, "2024-01-08": {"a": "2"}}
    bad = asset_returning(dict(values))
    assert run([bad], store, "2024-01-07", "2024-01-08").success
    assert store.read_many(dg.AssetKey(["demo", "bad"]), list(values), allow_missing=False) == values


def test_numpy_scalars_in_a_mapping_keep_their_type(store: PartitionedParquetIOManager) -> None:
    key = dg.AssetKey(["bike_demand", "model"])
    store.write(key, "2024-01-02", {"rows": np.int64(5), "passed": np.bool_(True), "mae": np.float64(1.5)})
    assert store.read(key, "2024-01-02") == {"rows": 5, "passed": True, "mae": 1.5}


@dg.asset(key=["demo", "settings"])
def settings() -> dict[str, Any]:
    return {"threshold": 0.05, "families": ["ridge"]}


@dg.asset(key=["demo", "summary"], ins={"settings": dg.AssetIn(key=["demo", "settings"])})
def summary(settings: dict[str, Any]) -> dict[str, Any]:
    return {"families": len(settings["families"]), "threshold": settings["threshold"]}


def test_unpartitioned_assets_through_the_store(store: PartitionedParquetIOManager, tmp_path: Path) -> None:
    result = (
        dg.Definitions(assets=[settings, summary], resources={"io_manager": store})
        .resolve_implicit_global_asset_job_def()
        .execute_in_process(raise_on_error=False)
    )
    assert result.success, failure_text(result)
    folder = tmp_path / "assets" / "demo"
    assert sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.json")) == [
        "settings/__all__.json",
        "summary/__all__.json",
    ]
    assert store.read(dg.AssetKey(["demo", "summary"]), None) == {"families": 1, "threshold": 0.05}


def test_a_frame_read_carries_its_fingerprint_and_what_is_built_from_it_does_not_store_it(
    store: PartitionedParquetIOManager,
) -> None:
    key = dg.AssetKey(["p", "features"])
    _, written = store.write_stored(key, "2024-01-01", pd.DataFrame({"a": [1.0, 2.0]}))
    read = store.read_many(key, ["2024-01-01"], allow_missing=False)["2024-01-01"]
    assert read.attrs[FINGERPRINT] == written == store.fingerprint(key, "2024-01-01")

    derived = read.assign(b=read["a"] * 2)
    assert derived.attrs, "pandas carries attrs into what is built from a frame"
    _, with_attrs = store.write_stored(key, "2024-01-02", derived)
    derived.attrs.clear()
    _, without = store.write_stored(key, "2024-01-03", derived)
    assert with_attrs == without, "the fingerprint is the content alone, not where it came from"


def test_the_sweep_deletes_only_temp_files_of_writes_cut_short_an_hour_ago(
    store: PartitionedParquetIOManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed writer's temp files (a day's parquet, an ingest log entry) go once an hour old; a live write's young
    temp file and every stored file stay; the sensor's tick names what it removed. The sensor holds the store as the
    production wiring builds it, its URI an `EnvVar`. Every write goes through the store's one folder of unfinished
    writes, so that folder is all the sweep lists."""
    key = dg.AssetKey(["bike", "raw"])
    store.write_stored(key, "2024-01-02", sample_frame())
    final = Path(store.path_for(key, "2024-01-02", "parquet"))
    unfinished = tmp_path / "assets" / UNFINISHED_DIR
    assert unfinished.is_dir() and not list(unfinished.iterdir()), "the write went through it and left nothing"
    dead = unfinished / f"{final.name}.tmp-0123"
    dead.write_bytes(final.read_bytes()[:100])  # torn, as a killed writer leaves it
    entry = unfinished / "0001.json.tmp-4567"  # an ingest log entry's
    entry.write_text("{")
    live = unfinished / f"{final.name}.tmp-89ab"
    live.write_bytes(b"being written")
    hour_ago = time.time() - UNFINISHED_AFTER_S - 60
    for path in (dead, entry):
        os.utime(path, (hour_ago, hour_ago))

    monkeypatch.setenv("PLATFORM_STORAGE_URI", store.base_uri)
    sensor = unfinished_writes.build(PartitionedParquetIOManager(base_uri=dg.EnvVar("PLATFORM_STORAGE_URI")))
    with dg.instance_for_test() as instance:
        tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))

    assert leftovers(tmp_path) == [live]
    assert pd.read_parquet(final).equals(sample_frame())
    assert tick.skip_message is not None and "removed 2 temp file(s)" in tick.skip_message
    assert str(dead) in tick.skip_message and str(entry) in tick.skip_message
    with dg.instance_for_test() as instance:
        again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert again.skip_message == "no unfinished write in the asset store"


def test_row_counts_and_columns_of_many_days_without_their_data(store: PartitionedParquetIOManager) -> None:
    """Footer row counts, and a window's named columns as one frame: days never stored and rejections are left out,
    a column a day lacks is null there."""
    store.write(KEY, "2024-01-01", sample_frame("2024-01-01", rows=3))
    store.write(KEY, "2024-01-02", sample_frame("2024-01-02", rows=2).drop(columns=["cnt"]))
    store.write(KEY, "2024-01-03", Rejected(day="2024-01-03", reason="no rows"))
    days = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]

    assert store.row_counts(KEY, days) == {"2024-01-01": 3, "2024-01-02": 2, "2024-01-03": None}
    window = store.read_columns(KEY, days, ["cnt", "station"])
    assert window is not None
    assert list(window.columns) == ["cnt", "station"]
    assert window["cnt"].tolist()[:3] == [0.5, 1.5, 2.5]
    assert window["cnt"].iloc[3:].isna().all()
    assert window["station"].tolist() == ["s0", "s1", "s2", "s0", "s1"]
    assert store.read_columns(KEY, ["2024-01-03", "2024-01-04"], ["cnt"]) is None
