"""Issue 18: a range run's Ray tasks read their days from the store themselves, after the step's day gate judged them
by reference. Between the two, another writer replaces a day whose verdict rejected one series: the tasks must not
build on the new bytes (no verdict judged them), and must still leave the rejected series out of the other days.

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

from benchmarks.stations import generate, spec_document
from kernel.days import day_range
from kernel.names import GATES
from kernel.records import Rejected
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
    paths, faults = generate(tmp_path / "landing", FIRST, LAST, stations=5)
    station, broken = faults.broken
    fault.injected = f"raw {broken} (station {station} rejected) rewritten by another writer after the day gate"
    document = spec_document(tmp_path / "landing", str(FIRST), str(LAST + timedelta(days=1)))
    defs, spec = make_defs(document, home=tmp_path), PipelineSpec.model_validate(document)
    store = (defs.resources or {})["io_manager"]
    assert isinstance(store, PartitionedParquetIOManager)
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
            (done,) = ray_map(day_tasks.build_feature_days, [(batch, lookback, spec)], timeout=300)
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


def window(day: str, lookback: int) -> list[date]:
    end = date.fromisoformat(day)
    return day_range(end - timedelta(days=lookback), end)


def fingerprint(built: day_tasks.DayBuilt) -> str:
    assert isinstance(built.value, Written)
    return built.value.fingerprint
