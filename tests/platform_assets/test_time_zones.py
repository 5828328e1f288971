"""A pipeline in local time end to end through raw and features: a Berlin-time export of the Beijing data, Berlin
partitions, across the autumn DST change (a 25-hour day)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
from conftest import PipelineFactory
from messy_files import AUTUMN, BERLIN, air_document, berlin_export, write_csv
from support import check_days, run_range

from resources.storage import PartitionedParquetIOManager

NAME = "air_berlin"


def test_a_25_hour_day_is_stored_judged_and_featurised_in_local_time(
    make_defs: PipelineFactory, tmp_path: Path, ray_address: str
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    export = berlin_export("2012-10-20", "2012-11-03")
    write_csv(export, landing / "berlin.csv")
    document = air_document(
        uri=str(landing / "*.csv"), timestamp={"column": "time", "format": "%Y-%m-%d %H:%M"}, timezone=BERLIN
    )
    document |= {
        "name": NAME,
        "partitioning": {"start_date": "2012-10-01", "end_date": "2012-11-10", "timezone": BERLIN},
    }
    defs = make_defs(document)
    store = (defs.resources or {})["io_manager"]
    assert isinstance(store, PartitionedParquetIOManager)

    run = run_range(defs, ["raw", "features"], NAME, ("2012-10-24", "2012-10-30"), dg.DagsterInstance.ephemeral())

    assert run.success
    checks = check_days(run)
    assert checks["passes_expectations"][AUTUMN].passed
    assert checks["complete_days"][AUTUMN].passed, "25 rows on a 25-hour day"
    raw = store.read(dg.AssetKey([NAME, "raw"]), AUTUMN)
    assert len(raw) == 25
    assert str(raw["timestamp"].dtype) == f"datetime64[ns, {BERLIN}]"
    day = export[export["time"].str.startswith(AUTUMN)]
    assert (raw["timestamp"].dt.tz_convert("UTC").to_numpy() == day["instant"].to_numpy()).all()
    notes = {
        m.materialization.partition: m.materialization.metadata["notes_this_day"].value
        for m in run.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey([NAME, "raw"]) and "notes_this_day" in m.materialization.metadata
    }
    assert notes == {AUTUMN: {"dst_ambiguous": 2}}, "noted on the day's own materialisation alone"

    features = store.read(dg.AssetKey([NAME, "features"]), AUTUMN).set_index("timestamp")
    # Lags are whole hours of elapsed time: 24 h before the second 02:00 (CET) is 03:00 CEST the day before.
    history = pd.concat(
        [store.read(dg.AssetKey([NAME, "raw"]), d) for d in ("2012-10-26", "2012-10-27", AUTUMN)]
    ).set_index("timestamp")["pm2.5"]
    expected = history.reindex(features.index - pd.Timedelta(hours=24))
    pd.testing.assert_series_equal(features["lag_24h"], expected, check_names=False, check_index=False)
    assert features.index.is_unique
    assert set(features["hour"]) == set(range(24)), "calendar hours are local: 02 appears twice"
