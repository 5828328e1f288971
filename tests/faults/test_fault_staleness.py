"""Issue 15 row 3: a raw day is corrected after the features, models and champion built on it. Dagster shows every
downstream day whose window holds it stale, and the champion refuses a model trained on the replaced bytes until its
partition is retrained on the corrected data.

Real parts: the code location, a Dagster instance on disk made as `make dev` makes it, a real Ray head, a SQLite
MLflow store; the correction is a real file change re-materialised as the landing sensor's run would.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from support import correct_day, landed, run_range, run_unpartitioned, stale_causes

from devtools.stack import prepare_home
from kernel.names import CHAMPION
from kernel.records import ModelRecord
from platform_assets.definitions import build_definitions
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

from .conftest import BIKE_CSV, TODAY, FaultRow, promotable_bikes

NAME = "corrected_bikes"
FIRST, SERVING, NEWER = "2012-04-25", "2012-06-25", "2012-06-26"
CORRECTED = "2012-06-20"  # inside both models' 56-day windows


def stale(defs: dg.Definitions, instance: dg.DagsterInstance, stage: str, days: list[str]) -> set[str]:
    """The days among `days` that Dagster's UI shows stale."""
    return set(stale_causes(defs, instance, dg.AssetKey([NAME, stage]), days))


@pytest.mark.faults
@pytest.mark.timeout(600)
def test_a_raw_day_corrected_after_the_models_shows_them_stale_and_the_champion_refuses_the_stale_one(
    tmp_path: Path, ray_address: str, fault: FaultRow
) -> None:
    fault.scenario = "raw corrected after features"
    fault.injected = f"raw {CORRECTED} re-landed with corrected counts after features, two models and a champion"
    landing = tmp_path / "landing" / "hour.csv"
    landing.parent.mkdir()
    shutil.copy(BIKE_CSV, landing)
    settings = promotable_bikes(tmp_path, NAME)
    spec_file = settings.specs_dir / f"{NAME}.yaml"
    document = spec_file.read_text()
    assert "data/bike_sharing/*.csv" in document
    spec_file.write_text(document.replace("data/bike_sharing/*.csv", str(landing)))
    dagster_home = prepare_home(settings.home)
    defs = build_definitions(settings, today=TODAY)
    resources = defs.resources or {}
    tracking, store = resources["mlflow"], resources["io_manager"]
    assert isinstance(tracking, MlflowTracking) and isinstance(store, PartitionedParquetIOManager)
    model_key, features_key = dg.AssetKey([NAME, "model"]), dg.AssetKey([NAME, "features"])

    def version(day: str) -> str:
        return ModelRecord.model_validate(store.read(model_key, day)).version

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert run_range(defs, ["raw", "features"], NAME, (FIRST, NEWER), instance).success
        assert run_range(defs, ["model", "champion"], NAME, (SERVING, SERVING), instance).success
        assert run_range(defs, ["model"], NAME, (NEWER, NEWER), instance).success
        serving, newer = version(SERVING), version(NEWER)
        assert tracking.alias_version(NAME, CHAMPION) == serving

        correct_day(BIKE_CSV, landing, CORRECTED)
        # As the landing sensor's run: the corrected file lands in the ingest log, its day is rebuilt.
        assert run_range(
            defs, ["raw", "features"], NAME, (CORRECTED, CORRECTED), instance, tags=landed(landing)
        ).success
        followers = [str(d.date()) for d in pd.date_range(CORRECTED, NEWER)][1:]
        stale_features = stale(defs, instance, "features", followers)
        assert stale_features == set(followers), "every features day whose look-back holds the corrected day"
        assert stale(defs, instance, "model", [SERVING, NEWER]) == {SERVING, NEWER}

        # The stale features days rebuilt (as automation does); the models still hold what they learned before.
        assert run_range(defs, ["features"], NAME, (followers[0], followers[-1]), instance).success
        assert run_unpartitioned(defs, ["champion"], NAME, instance).success
        refused = tracking.alias_version(NAME, CHAMPION)
        event = instance.get_latest_materialization_event(dg.AssetKey([NAME, "champion"]))
        assert event is not None and event.asset_materialization is not None
        reasons = str(event.asset_materialization.metadata["reasons"].value)
        assert refused == serving, f"the stale v{newer} was promoted"
        assert f"v{newer}" in reasons and "stale" in reasons and CORRECTED in reasons, reasons

        # Retrained on the corrected days, the newest partition is current again and is promoted.
        assert run_range(defs, ["model", "champion"], NAME, (NEWER, NEWER), instance).success
        retrained = version(NEWER)
        current = store.fingerprints(
            features_key, list(ModelRecord.model_validate(store.read(model_key, NEWER)).features_fingerprints)
        )
        promoted = tracking.alias_version(NAME, CHAMPION)
        served = ModelRecord.model_validate(store.read(model_key, NEWER if promoted == retrained else SERVING))
        fault.ungated = sum(1 for day, fp in served.features_fingerprints.items() if current.get(day) != fp)
        assert promoted == retrained != newer
        assert fault.ungated == 0
        assert stale(defs, instance, "model", [NEWER]) == set()
    fault.result = (
        f"{len(stale_features)} features days and both models shown stale; stale v{newer} refused (v{serving} kept); "
        f"retrained v{retrained} promoted"
    )
