"""The bike pipeline end to end, in-process, on a real Ray head, a real MLflow store and real GX."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from conftest import BIKE_CSV, PipelineFactory, bike_spec_document
from support import check_results, corrupt_day, landed, run_checks_alone, run_range, run_unpartitioned

from kernel.metadata import INLINE_MARKDOWN_LIMIT
from kernel.names import CHAMPION, MODEL_GATES, PREVIOUS_CHAMPION
from kernel.records import ModelRecord, Rejected
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking
from resources.verdicts import rejected_days

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
    days = len(pd.date_range(FIRST, LAST))
    tasks = features["ray_tasks"].value
    assert isinstance(tasks, int) and 1 < tasks < days, "days go to Ray in batches, not one task per day"
    assert features["days_built"].value == days
    assert model["ray_tasks"].value == 1, "one model day: one task trains its candidates, evaluates and refits"
    assert sum(model["ray_nodes"].value.values()) == 1  # type: ignore[union-attr]
    pids = {*features["ray_worker_pids"].value, *model["ray_worker_pids"].value}  # type: ignore[misc]
    assert pids
    assert os.getpid() not in pids
    # Long work shows it is moving: about every tenth of the tasks, the run's log says how far it is.
    messages = [entry.user_message for entry in bike.instance.all_logs(bike.features_run.run_id)]
    assert f"build_feature_days: {tasks} of {tasks} Ray tasks done" in messages
    assert sum("build_feature_days:" in m and "Ray tasks done" in m for m in messages) >= min(tasks, 5)


def test_model_partition_is_logged_registered_and_promoted(bike: Trained) -> None:
    record = bike.store.read(dg.AssetKey(["bike_e2e", "model"]), LAST)
    client = bike.tracking.client()
    run = client.get_run(record["mlflow_run_id"])
    assert {"mae", "rmse", "smape", "baseline_mae", "baseline_rmse", "baseline_smape"} <= set(run.data.metrics)
    assert run.data.metrics["mae"] == pytest.approx(record["metrics"]["mae"])
    assert run.data.params["family"] == record["family"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/forecast_vs_actual.png", "plots/residuals.png", "plots/feature_importance.png"}
    # The asset's page shows those very files, fetched from the MLflow UI (tests/browser loads them in a browser).
    metadata = materializations(bike.model_run, "model")[0].metadata
    for plot in ("forecast_vs_actual", "residuals", "feature_importance"):
        url = f"http://x/get-artifact?path=plots%2F{plot}.png&run_uuid={run.info.run_id}"
        assert metadata[plot].value == f"![{plot.replace('_', ' ')}]({url})"
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
    # The run's Ray task judged the day as it wrote it; the checks run alone read the stored day back and agree.
    key = dg.AssetKey(["bike_e2e", "predictions"])
    alone = check_results(
        run_checks_alone(bike.defs, [dg.AssetCheckKey(key, n) for n in checks], (LAST, LAST), bike.instance)
    )
    assert {n: (c.passed, c.description, c.metadata) for n, c in checks.items()} == {
        n: (c.passed, c.description, c.metadata) for n, c in alone.items()
    }
    record = bike.store.read(dg.AssetKey(["bike_e2e", "model"]), champion["partition"])
    model = bike.tracking.load_verified(ModelRecord.model_validate(record))
    # The served model was refitted on the whole window: its scaler saw the hold-out rows too.
    scaler = model.named_steps["prepare"].named_transformers_["numeric"][-1]
    assert scaler.n_samples_seen_ == record["train_rows"] + record["holdout_rows"] > record["train_rows"]
    picture = str(materializations(result, "predictions")[0].metadata["forecast_vs_actual"].value)
    assert picture.startswith(f"![forecast vs actual, {LAST}](data:image/svg+xml;base64,")
    assert len(picture) < INLINE_MARKDOWN_LIMIT


def test_the_backtest_report_plot_is_an_mlflow_artifact_shown_on_the_page(bike: Trained) -> None:
    result = run_unpartitioned(bike.defs, ["backtest_report"], "bike_e2e", bike.instance)
    assert result.success
    metadata = materializations(result, "backtest_report")[0].metadata
    client = bike.tracking.client()
    experiment = client.get_experiment_by_name("bike_e2e-backtest")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.dagster_run_id = '{result.run_id}'")
    assert {a.path for a in client.list_artifacts(run.info.run_id, "reports")} == {
        "reports/backtest.png",
        "reports/backtest.csv",
    }
    url = f"http://x/get-artifact?path=reports%2Fbacktest.png&run_uuid={run.info.run_id}"
    assert metadata["backtest"].value == f"![walk-forward backtest]({url})"
    assert metadata["mlflow_run"].value == f"http://x/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
    figures = {"in_window_improvement_mean", "days_scored", "days_not_scored"}
    assert figures <= set(run.data.metrics)
    assert all(run.data.metrics[name] == pytest.approx(metadata[name].value) for name in figures)


def test_a_corrupted_day_is_kept_out_of_features_training_and_promotion(
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
    result = run_range(
        trained.defs, stages, "bike_corrupt", ("2012-06-27", "2012-06-27"), trained.instance, tags=landed(source)
    )
    assert result.success, "one bad day does not fail the run"
    checks = check_results(result)
    assert not checks["passes_expectations"].passed
    failed = checks["passes_expectations"].metadata["failed"].value
    assert {item["column"] for item in failed} >= {"cnt", "temp"}  # type: ignore[union-attr]
    features = trained.store.read(dg.AssetKey(["bike_corrupt", "features"]), "2012-06-27")
    assert isinstance(features, Rejected) and "passes_expectations failed" in features.reason
    model = trained.store.read(dg.AssetKey(["bike_corrupt", "model"]), "2012-06-27")
    assert model["rejected_days"] == ["2012-06-27"], "the model trained on the passing days and says which it skipped"
    champion_after = trained.tracking.alias_version("bike_corrupt", CHAMPION)
    serving = trained.store.read(
        dg.AssetKey(["bike_corrupt", "model"]), "2012-06-27" if champion_after == model["version"] else "2012-06-26"
    )
    assert "2012-06-27" not in serving["train_days"] + serving["holdout_days"], "the bad day never reached the champion"
    predicted = run_range(trained.defs, ["predictions"], "bike_corrupt", ("2012-06-27", "2012-06-27"), trained.instance)
    assert predicted.success
    not_made = trained.store.read(dg.AssetKey(["bike_corrupt", "predictions"]), "2012-06-27")
    assert isinstance(not_made, Rejected) and not_made.reason.startswith("not predicted: features rejected")
    assert not check_results(predicted)["complete"].passed, "the day's checks say so too"


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
    assert gate.partition == "2012-06-27"
    assert trained.tracking.alias_version("bike_gate", CHAMPION) == champion_before

    alone = run_unpartitioned(strict, ["champion"], "bike_gate", trained.instance)
    assert alone.success
    champion = materializations(alone, "champion")[0].metadata
    assert champion["newest_passing_partition"].value == "2012-06-26", "the refused 2012-06-27 model is skipped"
    assert trained.tracking.alias_version("bike_gate", CHAMPION) == champion_before


def roll_back(defs: dg.Definitions, name: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """The `<p>_rollback` job, as a user launches it."""
    config = {"reason": "over-forecasts weekends", "requested_by": "ana@example.com"}
    return defs.resolve_job_def(f"{name}_rollback").execute_in_process(
        instance=instance, run_config={"ops": {f"{name}_rollback_champion": {"config": config}}}, raise_on_error=False
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return str(failure.event_specific_data)


def test_rollback_restores_the_previous_champion_in_one_action(make_defs: PipelineFactory, ray_address: str) -> None:
    trained = train(make_defs, small_spec("bike_rollback"), "2012-04-25", "2012-06-26")
    first = trained.tracking.alias_version("bike_rollback", CHAMPION)
    assert first is not None
    nothing = roll_back(trained.defs, "bike_rollback", trained.instance)
    assert not nothing.success
    assert "nothing to roll back to" in failure_message(nothing)

    lenient = make_defs(small_spec("bike_rollback", promotion={"max_regression_vs_champion": 10.0}))
    second_run = run_range(
        lenient, ["model", "champion"], "bike_rollback", ("2012-06-27", "2012-06-27"), trained.instance
    )
    assert second_run.success
    second = trained.tracking.alias_version("bike_rollback", CHAMPION)
    assert second is not None
    assert second != first
    assert trained.tracking.alias_version("bike_rollback", PREVIOUS_CHAMPION) == first

    assert roll_back(lenient, "bike_rollback", trained.instance).success
    assert trained.tracking.alias_version("bike_rollback", CHAMPION) == first
    assert trained.tracking.alias_version("bike_rollback", PREVIOUS_CHAMPION) == second
    tags = trained.tracking.version_tags("bike_rollback", second)
    assert (tags["rolled_back_by"], tags["rollback_reason"], tags["rolled_back_to"]) == (
        "ana@example.com",
        "over-forecasts weekends",
        first,
    )


# --- Days are the unit of truth: per-day verdicts, the day gate across runs, promotion by date, rollback ---

BAD_DAY = "2012-06-10"


def check_statuses(instance: dg.DagsterInstance, name: str, stage: str, check: str) -> dict[str, str]:
    """Latest verdict per day of one check, as Dagster stores partitioned check executions."""
    key = dg.AssetCheckKey(dg.AssetKey([name, stage]), check)
    infos = instance.event_log_storage.get_asset_check_partition_info([key])
    return {str(i.partition_key): i.latest_execution_status.value for i in infos}


def rejected_after(bad_day: str, lookback_days: int, days: list[str]) -> set[str]:
    """The days whose look-back window (lookback_days before, and the day itself) contains the bad day."""
    bad = pd.Timestamp(bad_day)
    return {d for d in days if bad <= pd.Timestamp(d) <= bad + pd.Timedelta(days=lookback_days)}


def store_of(defs: dg.Definitions) -> PartitionedParquetIOManager:
    store = (defs.resources or {})["io_manager"]
    assert isinstance(store, PartitionedParquetIOManager)
    return store


@pytest.fixture
def corrupted_source(tmp_path: Path) -> Path:
    source = tmp_path / "landing" / "hour.csv"
    source.parent.mkdir()
    corrupt_day(BIKE_CSV, source, BAD_DAY)
    return source


def test_one_bad_day_in_a_range_run_is_rejected_alone_and_every_other_day_flows(
    make_defs: PipelineFactory, corrupted_source: Path, ray_address: str
) -> None:
    defs = make_defs(small_spec("bike_oneday", corrupted_source))
    instance = dg.DagsterInstance.ephemeral()
    days = pd.date_range("2012-06-01", "2012-06-30").strftime("%Y-%m-%d").tolist()
    result = run_range(defs, ["raw", "features"], "bike_oneday", (days[0], days[-1]), instance)
    assert result.success
    raw = check_statuses(instance, "bike_oneday", "raw", "passes_expectations")
    assert {d for d, status in raw.items() if status == "FAILED"} == {BAD_DAY}
    assert {d for d, status in raw.items() if status == "SUCCEEDED"} == set(days) - {BAD_DAY}
    assert check_results(result)["passes_expectations"].partition in days
    features = store_of(defs).read_many(dg.AssetKey(["bike_oneday", "features"]), days, allow_missing=False)
    expected = rejected_after(BAD_DAY, 8, days)
    assert {d for d, v in features.items() if isinstance(v, Rejected)} == expected
    assert all(isinstance(v, pd.DataFrame) for d, v in features.items() if d not in expected)
    # Days with their whole look-back loaded (from 2012-06-09) and no rejected day in it have rows.
    assert all(len(v) for d, v in features.items() if d >= "2012-06-09" and d not in expected)  # type: ignore[arg-type]
    reason = features[BAD_DAY].reason  # type: ignore[union-attr]
    assert BAD_DAY in reason and "passes_expectations failed" in reason
    verdicts = check_statuses(instance, "bike_oneday", "features", "finite_values")
    assert {d for d, status in verdicts.items() if status == "FAILED"} == expected
    failed_raw = next(
        r
        for r in instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(["bike_oneday", "raw"]), "passes_expectations"), limit=100
        )
        if r.partition == BAD_DAY
    )
    evaluation = failed_raw.evaluation
    assert evaluation is not None
    failed = evaluation.metadata["failed"].value
    assert {item["column"] for item in failed} >= {"cnt", "temp"}  # type: ignore[union-attr]
    assert all(item["examples"] for item in failed)  # type: ignore[union-attr]


def test_a_rejected_day_stays_rejected_in_a_later_run_until_it_is_fixed(
    make_defs: PipelineFactory, corrupted_source: Path, ray_address: str
) -> None:
    defs = make_defs(small_spec("bike_later", corrupted_source))
    instance = dg.DagsterInstance.ephemeral()
    first, last = "2012-06-05", "2012-06-14"
    # Raw in one run, features in a separate later one (as when a user materialises them one after the other).
    assert run_range(defs, ["raw"], "bike_later", (first, last), instance).success
    features_run = run_range(defs, ["features"], "bike_later", (first, last), instance)
    assert features_run.success
    days = pd.date_range(first, last).strftime("%Y-%m-%d").tolist()
    store = store_of(defs)
    key = dg.AssetKey(["bike_later", "features"])
    stored = store.read_many(key, days, allow_missing=False)
    assert {d for d, v in stored.items() if isinstance(v, Rejected)} == rejected_after(BAD_DAY, 8, days)

    shutil.copy(BIKE_CSV, corrupted_source)  # the source is fixed; the day passes once re-materialised
    assert run_range(defs, ["raw"], "bike_later", (BAD_DAY, BAD_DAY), instance, tags=landed(corrupted_source)).success
    assert run_range(defs, ["features"], "bike_later", (first, last), instance).success
    stored = store.read_many(key, days, allow_missing=False)
    assert not [d for d, v in stored.items() if isinstance(v, Rejected)]


def test_an_older_model_backfill_never_moves_the_champion_backwards(
    make_defs: PipelineFactory, ray_address: str
) -> None:
    trained = train(make_defs, small_spec("bike_backwards"), "2012-04-25", "2012-06-26")
    assert trained.model_run.success
    newest = trained.tracking.alias_version("bike_backwards", CHAMPION)
    assert newest is not None
    lenient = make_defs(small_spec("bike_backwards", promotion={"max_regression_vs_champion": 10.0}))
    older = run_range(lenient, ["model"], "bike_backwards", ("2012-06-20", "2012-06-20"), trained.instance)
    assert older.success
    assert all(check.passed for check in check_results(older).values()), "the older model passes every gate"
    promoted = run_unpartitioned(lenient, ["champion"], "bike_backwards", trained.instance)
    assert promoted.success
    assert trained.tracking.alias_version("bike_backwards", CHAMPION) == newest
    champion = trained.store.read(dg.AssetKey(["bike_backwards", "champion"]), None)
    assert champion["partition"] == "2012-06-26"


def test_a_tampered_stored_record_is_refused_and_the_champion_stays(
    make_defs: PipelineFactory, ray_address: str
) -> None:
    trained = train(make_defs, small_spec("bike_tamper"), "2012-04-25", "2012-06-27")
    assert trained.model_run.success
    champion = trained.tracking.alias_version("bike_tamper", CHAMPION)
    other = run_range(trained.defs, ["model"], "bike_tamper", ("2012-06-26", "2012-06-26"), trained.instance)
    assert other.success
    older_version = trained.store.read(dg.AssetKey(["bike_tamper", "model"]), "2012-06-26")["version"]
    path = Path(trained.store.path_for(dg.AssetKey(["bike_tamper", "model"]), "2012-06-27", "json"))
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "version": older_version}))  # points at a version it did not train

    # Its bytes are no longer those its gates judged: the day gate refuses it, so promotion never sees it.
    model_key = dg.AssetKey(["bike_tamper", "model"])
    stored = trained.store.fingerprints(model_key, ["2012-06-27"])
    assert "the file changed since" in rejected_days(trained.instance, model_key, MODEL_GATES, stored)["2012-06-27"]
    assert run_unpartitioned(trained.defs, ["champion"], "bike_tamper", trained.instance).success
    assert trained.tracking.alias_version("bike_tamper", CHAMPION) == champion


def test_promotion_converges_after_a_crash_between_its_alias_writes(
    make_defs: PipelineFactory, ray_address: str
) -> None:
    trained = train(make_defs, small_spec("bike_crash"), "2012-04-25", "2012-06-27")
    first = trained.tracking.alias_version("bike_crash", CHAMPION)
    assert first is not None
    lenient = make_defs(small_spec("bike_crash", promotion={"max_regression_vs_champion": 10.0}))
    newer = run_range(lenient, ["model"], "bike_crash", ("2012-06-27", "2012-06-27"), trained.instance)
    assert newer.success
    candidate = trained.store.read(dg.AssetKey(["bike_crash", "model"]), "2012-06-27")["version"]
    # The first write of a promotion landed (previous_champion moved), then the process died.
    trained.tracking.client().set_registered_model_alias("bike_crash", PREVIOUS_CHAMPION, first)
    for _ in range(2):  # re-running converges, and running again changes nothing
        assert run_unpartitioned(lenient, ["champion"], "bike_crash", trained.instance).success
        assert trained.tracking.alias_version("bike_crash", CHAMPION) == candidate
        assert trained.tracking.alias_version("bike_crash", PREVIOUS_CHAMPION) == first
        stored = trained.store.read(dg.AssetKey(["bike_crash", "champion"]), None)
        assert (stored["version"], stored["previous_champion"]) == (candidate, first)


def test_rollback_from_the_job_is_recorded_and_the_next_predictions_use_it(
    make_defs: PipelineFactory, ray_address: str
) -> None:
    trained = train(make_defs, small_spec("bike_undo"), "2012-04-25", "2012-06-27")
    first = trained.tracking.alias_version("bike_undo", CHAMPION)
    lenient = make_defs(small_spec("bike_undo", promotion={"max_regression_vs_champion": 10.0}))
    assert run_range(
        lenient, ["model", "champion"], "bike_undo", ("2012-06-27", "2012-06-27"), trained.instance
    ).success
    second = trained.tracking.alias_version("bike_undo", CHAMPION)
    assert second not in (None, first)

    job = lenient.resolve_job_def("bike_undo_rollback")
    config = {"reason": "June 27 model over-forecasts weekends", "requested_by": "ana@example.com"}
    result = job.execute_in_process(
        instance=trained.instance, run_config={"ops": {"bike_undo_rollback_champion": {"config": config}}}
    )
    assert result.success
    assert trained.tracking.alias_version("bike_undo", CHAMPION) == first
    recorded = trained.instance.get_latest_materialization_event(dg.AssetKey(["bike_undo", "champion"]))
    assert recorded is not None and recorded.asset_materialization is not None
    metadata = {k: v.value for k, v in recorded.asset_materialization.metadata.items()}
    assert metadata["reason"] == config["reason"] and metadata["requested_by"] == config["requested_by"]
    assert (metadata["from_version"], metadata["to_version"]) == (second, first)

    assert run_range(lenient, ["predictions"], "bike_undo", ("2012-06-27", "2012-06-27"), trained.instance).success
    predictions = trained.store.read(dg.AssetKey(["bike_undo", "predictions"]), "2012-06-27")
    assert set(predictions["model_version"]) == {first}


def promote_by_hand(
    defs: dg.Definitions, name: str, instance: dg.DagsterInstance, version: str, **override: bool
) -> dg.ExecuteInProcessResult:
    """The `<p>_promote` job, as a user launches it."""
    config = {"version": version, "reason": "the baseline had a holiday", "requested_by": "ana@example.com", **override}
    return defs.resolve_job_def(f"{name}_promote").execute_in_process(
        instance=instance, run_config={"ops": {f"{name}_promote_champion": {"config": config}}}, raise_on_error=False
    )


def test_a_version_that_failed_its_gates_is_promoted_by_hand_only_with_override_and_recorded(
    make_defs: PipelineFactory, ray_address: str
) -> None:
    trained = train(make_defs, small_spec("bike_manual"), "2012-04-25", "2012-06-27")
    first = trained.tracking.alias_version("bike_manual", CHAMPION)
    assert first is not None
    strict = make_defs(small_spec("bike_manual", promotion={"min_improvement_over_baseline": 0.99}))
    assert run_range(strict, ["model"], "bike_manual", ("2012-06-27", "2012-06-27"), trained.instance).success
    failed = trained.store.read(dg.AssetKey(["bike_manual", "model"]), "2012-06-27")["version"]
    assert failed != first

    refused = promote_by_hand(strict, "bike_manual", trained.instance, failed)
    assert not refused.success
    assert "failed its gates" in failure_message(refused) and "override: true" in failure_message(refused)
    assert trained.tracking.alias_version("bike_manual", CHAMPION) == first
    assert "promoted_by" not in trained.tracking.version_tags("bike_manual", failed)

    accepted = promote_by_hand(strict, "bike_manual", trained.instance, failed, override=True)
    assert accepted.success
    assert trained.tracking.alias_version("bike_manual", CHAMPION) == failed
    assert trained.tracking.alias_version("bike_manual", PREVIOUS_CHAMPION) == first
    recorded = trained.instance.get_latest_materialization_event(dg.AssetKey(["bike_manual", "champion"]))
    assert recorded is not None and recorded.asset_materialization is not None
    metadata = {k: v.value for k, v in recorded.asset_materialization.metadata.items()}
    assert (metadata["action"], metadata["override"], metadata["requested_by"]) == (
        "manual_promotion",
        True,
        "ana@example.com",
    )
    assert (metadata["from_version"], metadata["to_version"], metadata["model_version"]) == (first, failed, failed)
    reasons = metadata["reasons"]
    assert isinstance(reasons, list)
    assert any("override by ana@example.com: it failed its gates" in str(reason) for reason in reasons)
    tags = trained.tracking.version_tags("bike_manual", failed)
    assert (tags["promoted_by"], tags["promotion_override"], tags["promotion_reason"]) == (
        "ana@example.com",
        "true",
        "the baseline had a holiday",
    )
    assert trained.store.read(dg.AssetKey(["bike_manual", "champion"]), None)["version"] == failed
