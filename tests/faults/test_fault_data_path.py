"""Issue 18: a range run's Ray tasks read their days from the store themselves, after the step's day gate judged them
by reference. Between the two, another writer replaces a day whose verdict rejected one series: the tasks must not
build on the new bytes (no verdict judged them), and must still leave the rejected series out of the other days. The
model's tasks likewise: a feature day replaced after its verdict is left out of every window holding it, and what a
model partition records as read are the fingerprints of the stored files.

Real parts: per-station files derived from the real bike sample (benchmarks/stations.py, one broken station-day),
landed and judged by a real raw run (Great Expectations, the day gate on the instance), the session's Ray head running
the very task function the features asset submits. The writer is real too: the store's own atomic write.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
from support import landed, run_range

from benchmarks.stations import Faults, generate, spec_document
from kernel.days import day_range
from kernel.names import GATES
from kernel.records import ModelRecord, Rejected
from kernel.spec import PipelineSpec
from resources import day_tasks
from resources.compute import RayCluster, ray_map
from resources.storage import PartitionedParquetIOManager
from resources.store import StoredDay, Written
from resources.verdicts import gate

from .conftest import FaultRow

NAME = "stations"
FIRST, LAST = date(2012, 5, 1), date(2012, 5, 16)


@pytest.mark.faults
@pytest.mark.timeout(600)
def test_a_series_day_replaced_after_its_verdict_is_not_built_on_by_the_ray_tasks(
    make_defs: Callable[..., dg.Definitions], tmp_path: Path, ray_address: str, fault: FaultRow
) -> None:
    fault.scenario = "(day, series) verdict, then its bytes replaced before the Ray tasks read them"
    paths, faults, defs, spec, store = stations_pipeline(make_defs, tmp_path, LAST)
    station, broken = faults.broken
    fault.injected = f"raw {broken} (station {station} rejected) rewritten by another writer after the day gate"
    raw_key, days = dg.AssetKey([NAME, "raw"]), [str(day) for day in day_range(FIRST, LAST)]
    with dg.instance_for_test() as instance:
        assert run_range(defs, ["raw"], NAME, (str(FIRST), str(LAST)), instance, tags=landed(*paths)).success
        verdicts = gate(instance, raw_key, GATES["raw"], store.fingerprints(raw_key, days))
    assert not verdicts.days and list(verdicts.series) == [broken], "the broken station-day is rejected alone"
    refs = {
        day: StoredDay(tuple(raw_key.path), day, fingerprint, verdicts.series.get(day, {}))
        for day, fingerprint in store.fingerprints(raw_key, days).items()
    }
    lookback = -(-spec.features.lookback_hours // 24)
    built_days = days[lookback:]

    def build(output: str) -> dict[str, day_tasks.DayBuilt]:
        """The features asset's task over the built days, connected as a run connects (and disconnected after)."""
        batch = day_tasks.DayBatch(store.store, (NAME, output), built_days, refs)
        with dg.build_resources({"ray_cluster": RayCluster(address=ray_address)}):
            (done,) = ray_map(day_tasks.build_feature_days, [(batch, lookback, spec, None)], timeout=300)
        return {result.day: result for result in done.days}

    judged = build("features_judged")
    holding = {day for day in built_days if broken in {str(d) for d in window(day, lookback)}}
    assert holding, "no built day's look-back holds the broken day"
    assert all(isinstance(judged[day].value, Written) for day in built_days), "judged bytes must build"
    assert {day for day in built_days if station in judged[day].left_out} == holding

    # Another writer lands other bytes for the broken day (its station mended) after the gate judged the old ones.
    mended = store.read(raw_key, broken)
    mended.loc[mended["station"] == station, "cnt"] = 7
    store.write(raw_key, broken, mended)
    after = build("features_after")
    rejected = {day for day, result in after.items() if isinstance(result.value, Rejected)}
    fault.ungated = len(holding - rejected)
    assert fault.ungated == 0, "a day was built on bytes no verdict judged"
    assert rejected == holding, "only the days whose window holds the replaced day are rejected"
    reason = str(after[min(holding)].value)
    assert "replaced since it was judged" in reason, reason
    kept = [day for day in built_days if day not in holding]
    assert all(fingerprint(after[day]) == fingerprint(judged[day]) for day in kept), "a day outside it changed"
    fault.result = (
        f"{len(holding)} features days whose look-back holds the replaced day rejected (replaced since judged); "
        f"{len(kept)} others built as before"
    )


@pytest.mark.faults
@pytest.mark.timeout(900)
def test_a_feature_day_replaced_after_its_verdict_is_not_trained_on_by_the_model_tasks(
    make_defs: Callable[..., dg.Definitions], tmp_path: Path, ray_address: str, fault: FaultRow
) -> None:
    from ml.evaluation import TrainedWindow

    fault.scenario = "model range run: a features day replaced after its verdict, before the Ray tasks read it"
    last = date(2012, 5, 28)
    paths, _, defs, spec, store = stations_pipeline(make_defs, tmp_path, last)
    features_key, model_key = dg.AssetKey([NAME, "features"]), dg.AssetKey([NAME, "model"])
    feature_days = [str(day) for day in day_range(FIRST, last)]
    model_days = [str(day) for day in day_range(last - timedelta(days=2), last)]
    with dg.instance_for_test() as instance:
        landing = run_range(defs, ["raw", "features"], NAME, (str(FIRST), str(last)), instance, tags=landed(*paths))
        assert landing.success
        run_range(defs, ["model"], NAME, (model_days[0], model_days[-1]), instance)  # its gates' verdicts do not matter
        verdicts = gate(instance, features_key, GATES["features"], store.fingerprints(features_key, feature_days))
    stored = store.fingerprints(features_key, feature_days)
    records = {day: ModelRecord.model_validate(store.read(model_key, day)) for day in model_days}
    for day, record in records.items():
        assert record.features_fingerprints == {d: stored[d] for d in (*record.train_days, *record.holdout_days)}, day
    refs: dict[str, StoredDay | Rejected] = {
        day: Rejected(day=day, reason=verdicts.days[day])
        if day in verdicts.days
        else StoredDay(tuple(features_key.path), day, fingerprint, verdicts.series.get(day, {}))
        for day, fingerprint in stored.items()
    }

    def train() -> dict[str, day_tasks.DayTrained]:
        """The model asset's task over the model days, connected as a run connects (and disconnected after)."""
        batch = day_tasks.DayBatch(store.store, tuple(model_key.path), model_days, refs)
        with dg.build_resources({"ray_cluster": RayCluster(address=ray_address)}):
            (done,) = ray_map(day_tasks.train_model_days, [(batch, spec, None)], timeout=600)
        return {result.day: result for result in done.days}

    judged = train()
    assert {day: dict(result.features_fingerprints) for day, result in judged.items()} == {
        day: record.features_fingerprints for day, record in records.items()
    }, "the task reads what the run recorded"

    # Another writer lands other bytes for a hold-out day of every model day after the gate judged the old ones.
    replaced = model_days[0]
    changed = store.read(features_key, replaced)
    changed["cnt"] = changed["cnt"] + 1
    store.write(features_key, replaced, changed)
    after = train()
    fault.ungated = sum(replaced in result.features_fingerprints for result in after.values())
    assert fault.ungated == 0, "a model trained on bytes no verdict judged"
    for day, result in after.items():
        assert isinstance(result.value, TrainedWindow), day
        assert replaced in result.value.split.window.rejected_days, "the replaced day is left out as rejected"
        kept = {d: fp for d, fp in judged[day].features_fingerprints.items() if d != replaced}
        assert result.features_fingerprints == kept, "the other days are read as judged"
    fault.result = (
        f"{len(model_days)} model days trained without the replaced features day (left out as rejected); "
        "recorded features fingerprints are the stored files'"
    )


def stations_pipeline(
    make_defs: Callable[..., dg.Definitions], tmp_path: Path, last: date
) -> tuple[list[Path], Faults, dg.Definitions, PipelineSpec, PartitionedParquetIOManager]:
    """Five stations' files from FIRST to `last` (one broken station-day) and a pipeline reading them."""
    paths, faults = generate(tmp_path / "landing", FIRST, last, stations=5)
    document = spec_document(tmp_path / "landing", str(FIRST), str(last + timedelta(days=1)))
    defs = make_defs(document, home=tmp_path)
    store = (defs.resources or {})["io_manager"]
    assert isinstance(store, PartitionedParquetIOManager)
    return paths, faults, defs, PipelineSpec.model_validate(document), store


def window(day: str, lookback: int) -> list[date]:
    end = date.fromisoformat(day)
    return day_range(end - timedelta(days=lookback), end)


def fingerprint(built: day_tasks.DayBuilt) -> str:
    assert isinstance(built.value, Written)
    return built.value.fingerprint
