"""The bike pipeline end to end, in-process, on a real Ray head, a real MLflow store and real GX."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from conftest import BIKE_CSV, PipelineFactory, bike_spec_document
from support import check_results, corrupt_day, materialized_keys, run_range, run_unpartitioned

from kernel.names import CHAMPION, PREVIOUS_CHAMPION
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

FIRST, LAST = "2012-04-25", "2012-06-30"
FAST_TRAINING = {
    "window_days": 56,
    "candidates": [
        {"family": "hist_gradient_boosting", "params": {"max_iter": 100}},
        {"family": "ridge", "params": {"alpha": 1.0}},
    ],
}


def small_spec(name: str, source: Path = BIKE_CSV, **overrides: object) -> dict[str, object]:
    return bike_spec_document(
        name=name,
        source={"uri": str(source)},
        partitioning={"start_date": "2012-03-01", "end_date": "2012-08-01", "rebase_to_yesterday": False},
        training=FAST_TRAINING,
        **{"promotion": {"min_improvement_over_baseline": 0.0}, **overrides},
    )


@dataclass
class Trained:
    defs: dg.Definitions
    instance: dg.DagsterInstance
    features_run: dg.ExecuteInProcessResult
    model_run: dg.ExecuteInProcessResult

    def resource(self, key: str) -> object:
        return (self.defs.resources or {})[key]

    @property
    def store(self) -> PartitionedParquetIOManager:
        store = self.resource("io_manager")
        assert isinstance(store, PartitionedParquetIOManager)
        return store

    @property
    def tracking(self) -> MlflowTracking:
        tracking = self.resource("mlflow")
        assert isinstance(tracking, MlflowTracking)
        return tracking


def train(make_defs: PipelineFactory, document: dict[str, object], first: str, last: str) -> Trained:
    defs = make_defs(document)
    instance = dg.DagsterInstance.ephemeral()
    name = str(document["name"])
    features_run = run_range(defs, ["raw", "features"], name, (first, last), instance)
    assert features_run.success
    model_run = run_range(defs, ["model", "champion"], name, (last, last), instance)
    return Trained(defs, instance, features_run, model_run)


@pytest.fixture(scope="module")
def bike(ray_address: str, platform_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Sixty days of raw and features in one range run, then a model and champion for the last day."""
    from conftest import TODAY

    from kernel.settings import Settings
    from platform_assets.definitions import build_definitions

    specs = tmp_path_factory.mktemp("specs")
    import yaml

    (specs / "bike_e2e.yaml").write_text(yaml.safe_dump(small_spec("bike_e2e")))
    settings = Settings(
        env="local", root=BIKE_CSV.parents[2], home=platform_home, specs_dir=specs, mlflow_ui_url="http://x"
    )
    defs = build_definitions(settings, today=TODAY)
    instance = dg.DagsterInstance.ephemeral()
    features_run = run_range(defs, ["raw", "features"], "bike_e2e", (FIRST, LAST), instance)
    assert features_run.success
    model_run = run_range(defs, ["model", "champion"], "bike_e2e", (LAST, LAST), instance)
    assert model_run.success
    return Trained(defs, instance, features_run, model_run)


def materializations(result: dg.ExecuteInProcessResult, stage: str) -> list[dg.AssetMaterialization]:
    return [
        event.event_specific_data.materialization  # type: ignore[union-attr]
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None and event.asset_key.path[-1] == stage
    ]


def test_a_range_run_materialises_every_day_in_one_run(bike: Trained) -> None:
    days = pd.date_range(FIRST, LAST).strftime("%Y-%m-%d").tolist()
    for stage in ("raw", "features"):
        assert sorted(str(m.partition) for m in materializations(bike.features_run, stage)) == days
    stored = bike.store.read_many(dg.AssetKey(["bike_e2e", "features"]), days, allow_missing=False)
    # The first week has no raw history before it (April was never loaded): its rows are dropped, and counted.
    assert all(len(stored[day]) == 0 for day in days[:7])
    assert all(len(stored[day]) > 0 for day in days[7:])
    metadata = materializations(bike.features_run, "features")[0].metadata
    assert metadata["rows_without_history"].value == 7 * 24
    checks = check_results(bike.features_run)
    assert checks["passes_expectations"].passed
    assert checks["finite_values"].passed
    assert checks["schema_stable"].passed


def test_features_and_training_ran_as_ray_tasks_in_worker_processes(bike: Trained) -> None:
    features = materializations(bike.features_run, "features")[0].metadata
    model = materializations(bike.model_run, "model")[0].metadata
    assert features["ray_tasks"].value == len(pd.date_range(FIRST, LAST))
    assert model["ray_tasks"].value == len(FAST_TRAINING["candidates"])  # type: ignore[arg-type]
    pids = {*features["ray_worker_pids"].value, *model["ray_worker_pids"].value}  # type: ignore[misc]
    assert pids
    assert os.getpid() not in pids


def test_model_partition_is_logged_registered_and_promoted(bike: Trained) -> None:
    record = bike.store.read(dg.AssetKey(["bike_e2e", "model"]), LAST)
    client = bike.tracking.client()
    run = client.get_run(record["mlflow_run_id"])
    assert {"mae", "rmse", "smape", "baseline_mae", "baseline_rmse", "baseline_smape"} <= set(run.data.metrics)
    assert run.data.metrics["mae"] == pytest.approx(record["metrics"]["mae"])
    assert run.data.params["family"] == record["family"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/forecast_vs_actual.png", "plots/residuals.png", "plots/feature_importance.png"}
    version = client.get_model_version("bike_e2e", record["version"])
    assert version.tags["partition"] == LAST
    assert version.tags["dagster_run_id"] == bike.model_run.run_id
    assert version.tags["training_window"] == f"{record['train_days'][0]}..{LAST}"
    assert bike.tracking.alias_version("bike_e2e", CHAMPION) == record["version"]
    gates = check_results(bike.model_run)
    assert {"beats_seasonal_naive", "not_worse_than_champion", "finite_predictions"} <= set(gates)
    assert all(gates[name].passed for name in gates)
    assert record["metrics"]["mae"] < record["baseline"]["mae"]


def test_predictions_carry_the_exact_model_version_and_run(bike: Trained) -> None:
    result = run_range(bike.defs, ["predictions"], "bike_e2e", (LAST, LAST), bike.instance)
    assert result.success
    predictions = bike.store.read(dg.AssetKey(["bike_e2e", "predictions"]), LAST)
    features = bike.store.read(dg.AssetKey(["bike_e2e", "features"]), LAST)
    champion = bike.store.read(dg.AssetKey(["bike_e2e", "champion"]), None)
    assert len(predictions) == len(features) > 0
    assert set(predictions["model_version"]) == {champion["version"]}
    assert set(predictions["mlflow_run_id"]) == {champion["mlflow_run_id"]}
    assert (predictions["prediction"] >= 0).all()
    checks = check_results(result)
    assert checks["complete"].passed
    assert checks["finite_non_negative"].passed
    model = bike.tracking.load_model(champion["model_uri"])
    assert model is not None


def test_a_corrupted_partition_blocks_promotion_and_the_champion_stays(
    make_defs: PipelineFactory, tmp_path: Path, ray_address: str
) -> None:
    source = tmp_path / "landing" / "hour.csv"
    source.parent.mkdir()
    shutil.copy(BIKE_CSV, source)
    trained = train(make_defs, small_spec("bike_corrupt", source), "2012-04-25", "2012-06-26")
    assert trained.model_run.success
    champion_before = trained.tracking.alias_version("bike_corrupt", CHAMPION)
    assert champion_before is not None

    corrupt_day(BIKE_CSV, source, "2012-06-27")
    stages = ["raw", "features", "model", "champion"]
    result = run_range(trained.defs, stages, "bike_corrupt", ("2012-06-27", "2012-06-27"), trained.instance)
    checks = check_results(result)
    assert not checks["passes_expectations"].passed
    failed = checks["passes_expectations"].metadata["failed_expectations"].value
    assert {item["column"] for item in failed} >= {"cnt", "temp"}  # type: ignore[union-attr]
    assert materialized_keys(result) == {"bike_corrupt/raw"}
    champion_after = trained.tracking.alias_version("bike_corrupt", CHAMPION)
    assert champion_after == champion_before


def test_a_failing_gate_never_promotes_even_when_champion_is_run_alone(
    make_defs: PipelineFactory, ray_address: str
) -> None:
    trained = train(make_defs, small_spec("bike_gate"), "2012-04-25", "2012-06-26")
    assert trained.model_run.success
    champion_before = trained.tracking.alias_version("bike_gate", CHAMPION)
    assert champion_before is not None

    strict = make_defs(small_spec("bike_gate", promotion={"min_improvement_over_baseline": 0.99}))
    result = run_range(strict, ["model", "champion"], "bike_gate", ("2012-06-27", "2012-06-27"), trained.instance)
    gate = check_results(result)["beats_seasonal_naive"]
    assert not gate.passed
    assert gate.metadata["threshold"].value == 0.99
    assert materialized_keys(result) == {"bike_gate/model"}

    alone = run_unpartitioned(strict, ["champion"], "bike_gate", trained.instance)
    assert not alone.success
    failure = next(e for e in alone.all_events if e.event_type_value == "STEP_FAILURE")
    assert "has not passed ['beats_seasonal_naive']" in str(failure.event_specific_data)
    assert trained.tracking.alias_version("bike_gate", CHAMPION) == champion_before


def test_rollback_restores_the_previous_champion_in_one_action(make_defs: PipelineFactory, ray_address: str) -> None:
    trained = train(make_defs, small_spec("bike_rollback"), "2012-04-25", "2012-06-26")
    first = trained.tracking.alias_version("bike_rollback", CHAMPION)
    assert first is not None
    with pytest.raises(dg.Failure, match="nothing to roll back"):
        trained.tracking.rollback("bike_rollback")

    lenient = make_defs(small_spec("bike_rollback", promotion={"max_regression_vs_champion": 10.0}))
    second_run = run_range(
        lenient, ["model", "champion"], "bike_rollback", ("2012-06-27", "2012-06-27"), trained.instance
    )
    assert second_run.success
    second = trained.tracking.alias_version("bike_rollback", CHAMPION)
    assert second is not None
    assert second != first
    assert trained.tracking.alias_version("bike_rollback", PREVIOUS_CHAMPION) == first

    trained.tracking.rollback("bike_rollback")
    assert trained.tracking.alias_version("bike_rollback", CHAMPION) == first
    assert trained.tracking.alias_version("bike_rollback", PREVIOUS_CHAMPION) == second
