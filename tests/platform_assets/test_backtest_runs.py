"""The walk-forward backtest on real runs: Ray, an MLflow store, GX and a Dagster instance, as in production."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from conftest import BIKE_CSV, PipelineFactory
from support import corrupt_day, run_range, run_unpartitioned
from test_pipeline_runs import materializations, small_spec

from kernel.names import CHAMPION
from kernel.records import ModelRecord, Rejected
from ml.features import feature_columns
from platform_assets.stages import training as training_stage
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

NAME = "bike_oos"
# Its raw day fails GX: features 06-16..06-24 (their look-back holds it) are rejected, and so are the model partitions
# 06-22..06-24, whose 7-day hold-outs have no passing day left.
BAD_DAY = "2012-06-16"
NO_TARGET = ("2012-06-30", 10)  # an hour without a count (after every model window): left out of the scores, counted
MODELS = ("2012-06-21", "2012-06-28")
SCORED = ("2012-06-20", "2012-06-30")


def spec(source: Path, **promotion: object) -> dict[str, object]:
    document = small_spec(NAME, source, promotion={"min_improvement_over_baseline": 0.0, **promotion})
    document["expectations"]["columns"]["cnt"]["not_null"] = False  # type: ignore[index]
    return document


@dataclass
class Backtested:
    defs: dg.Definitions
    instance: dg.DagsterInstance
    source: Path
    run: dg.ExecuteInProcessResult

    @property
    def store(self) -> PartitionedParquetIOManager:
        store = (self.defs.resources or {})["io_manager"]
        assert isinstance(store, PartitionedParquetIOManager)
        return store

    @property
    def tracking(self) -> MlflowTracking:
        tracking = (self.defs.resources or {})["mlflow"]
        assert isinstance(tracking, MlflowTracking)
        return tracking

    def read(self, stage: str, day: str | None) -> object:
        return self.store.read(dg.AssetKey([NAME, stage]), day)


@pytest.fixture(scope="module")
def scored(ray_address: str, platform_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Backtested:
    """Features with one rejected stretch and one hour without a count, eight model partitions, then the backtest."""
    import yaml
    from conftest import TODAY

    from kernel.settings import Settings
    from platform_assets.definitions import build_definitions

    base = tmp_path_factory.mktemp("oos")
    source = base / "hour.csv"
    corrupt_day(BIKE_CSV, source, BAD_DAY)
    frame = pd.read_csv(source)
    day, hour = NO_TARGET
    month, dom, year = (int(p) for p in pd.Timestamp(day).strftime("%m %d %y").split())
    frame.loc[(frame["dteday"] == f"{month}/{dom}/{year}") & (frame["hr"] == hour), "cnt"] = np.nan
    frame.to_csv(source, index=False)
    (base / "specs").mkdir()
    (base / "specs" / f"{NAME}.yaml").write_text(yaml.safe_dump(spec(source)))
    settings = Settings(
        env="local", root=BIKE_CSV.parents[2], home=platform_home, specs_dir=base / "specs", mlflow_ui_url="http://x"
    )
    defs = build_definitions(settings, today=TODAY)
    instance = dg.DagsterInstance.ephemeral()
    assert run_range(defs, ["raw", "features"], NAME, ("2012-04-25", "2012-06-30"), instance).success
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training_stage, "DAYS_PER_ROUND", 2)  # the 8 model days go through Ray in 4 rounds
        assert run_range(defs, ["model", "champion"], NAME, MODELS, instance).success
    run = run_range(defs, ["backtest"], NAME, SCORED, instance)
    assert run.success
    return Backtested(defs, instance, source, run)


def days(first: str, last: str) -> list[str]:
    return pd.date_range(first, last).strftime("%Y-%m-%d").tolist()


def test_each_day_is_scored_only_by_models_trained_before_it(scored: Backtested) -> None:
    for day in days("2012-06-26", "2012-06-30"):
        frame = scored.read("backtest", day)
        assert isinstance(frame, pd.DataFrame) and len(frame), day
        for row in frame.itertuples():
            record = ModelRecord.model_validate(scored.read("model", str(row.partition)))
            window = record.train_days + record.holdout_days
            assert max(window) < day, f"{day} scored by {row.partition}, whose window reaches it"
            assert row.horizon_days == (date.fromisoformat(day) - date.fromisoformat(str(row.partition))).days
    # The score is the registered model's forecast of the day's actuals, recomputed here by hand.
    frame = scored.read("backtest", "2012-06-28")
    assert isinstance(frame, pd.DataFrame)
    row = frame[frame["partition"] == "2012-06-27"].iloc[0]
    assert row["horizon_days"] == 1
    record = ModelRecord.model_validate(scored.read("model", "2012-06-27"))
    features = scored.read("features", "2012-06-28")
    assert isinstance(features, pd.DataFrame)
    model = scored.tracking.load_verified(record)
    predicted = np.clip(model.predict(features[feature_columns_of(spec(scored.source))]), 0, None)
    assert row["mae"] == pytest.approx(float(np.mean(np.abs(predicted - features["cnt"]))))
    assert row["baseline_mae"] == pytest.approx(float(np.mean(np.abs(features["lag_168h"] - features["cnt"]))))


def feature_columns_of(document: dict[str, object]) -> list[str]:
    from kernel.spec import PipelineSpec

    return feature_columns(PipelineSpec.model_validate(document))


def test_the_champion_is_scored_on_days_after_its_window_and_challengers_beside_it(scored: Backtested) -> None:
    champion = scored.tracking.champion_record(NAME)
    assert champion is not None and "2012-06-25" <= champion.partition <= MODELS[1]
    for day in days("2012-06-26", "2012-06-30"):
        frame = scored.read("backtest", day)
        assert isinstance(frame, pd.DataFrame)
        assert (frame["champion"] == (frame["version"] == champion.version)).all()
        assert frame["champion"].any() == (champion.partition < day), day
        challengers = frame[~frame["champion"]]
        assert (challengers["horizon_days"] == 1).all(), "challengers: the partitions the horizon covers"
    # No model of 06-29 exists: the day after is scored by the champion alone, days after its window.
    on_30 = scored.read("backtest", "2012-06-30")
    assert isinstance(on_30, pd.DataFrame)
    horizon = (date(2012, 6, 30) - date.fromisoformat(champion.partition)).days
    assert on_30[["partition", "version", "horizon_days"]].values.tolist() == [
        [champion.partition, champion.version, horizon]
    ]


def test_rejected_actuals_and_days_without_a_model_are_not_scored_and_are_counted(scored: Backtested) -> None:
    for day in days("2012-06-20", "2012-06-24"):
        value = scored.read("backtest", day)
        assert isinstance(value, Rejected), day
        assert value.reason.startswith("not scored: actuals rejected"), value.reason
        assert f"{NAME}/features {day}: finite_values failed" in value.reason, "the features day's gate says why"
    # Its actuals passed, but the one model partition that forecasts it (06-24) was rejected: said so.
    no_model = scored.read("backtest", "2012-06-25")
    assert isinstance(no_model, Rejected)
    assert no_model.reason.startswith("not scored: no model partition covers it (model partition(s) rejected:")
    rejected_model = scored.read("model", "2012-06-24")
    assert isinstance(rejected_model, Rejected)
    # The Ray task that split its window says why, named as the model asset.
    assert rejected_model.reason == f"{NAME}/model: window ending 2012-06-24: no hold-out rows in the last 7 days"
    metadata = materializations(scored.run, "backtest")[0].metadata
    assert metadata["days_scored"].value == 5
    assert metadata["days_not_scored"].value == 6
    assert set(metadata["not_scored_days"].value) == set(days("2012-06-20", "2012-06-25"))  # type: ignore[arg-type]
    # Each model was loaded once for the whole range, and only for days it scored: 06-25..06-28 (the champion is
    # 06-28's, scoring 06-29 and 06-30).
    assert metadata["models_loaded"].value == len(days("2012-06-25", MODELS[1]))
    assert float(metadata["model_load_s"].value) > 0  # type: ignore[arg-type]


def test_hours_without_a_count_are_left_out_of_the_scores_and_counted(scored: Backtested) -> None:
    frame = scored.read("backtest", NO_TARGET[0])
    features = scored.read("features", NO_TARGET[0])
    assert isinstance(frame, pd.DataFrame) and isinstance(features, pd.DataFrame)
    assert features["cnt"].isna().sum() == 1
    assert set(frame["excluded_rows"]) == {1}, "for every model scored on the day"
    assert set(frame["rows"]) == {len(features) - 1}
    metadata = materializations(scored.run, "backtest")[0].metadata
    assert metadata["excluded_rows"].value == 1


def test_the_report_shows_the_out_of_sample_improvement_and_the_in_window_figures(scored: Backtested) -> None:
    result = run_unpartitioned(scored.defs, ["backtest_report"], NAME, scored.instance)
    assert result.success
    metadata = materializations(result, "backtest_report")[0].metadata
    assert metadata["days_scored"].value == 5 and metadata["days_not_scored"].value == 6
    assert metadata["excluded_rows"].value == 1
    table = scored.read("backtest_report", None)
    assert isinstance(table, pd.DataFrame)
    oos = table.dropna(subset=["model_mae"])
    assert len(oos) == 5
    expected = 1 - (oos["model_mae"] * oos["rows"]).sum() / (oos["baseline_mae"] * oos["rows"]).sum()
    assert metadata["out_of_sample_improvement"].value == pytest.approx(expected)
    trained = [d for d in days(*MODELS) if not isinstance(scored.read("model", d), Rejected)]
    assert trained == ["2012-06-21", *days("2012-06-25", MODELS[1])]
    assert table["in_window_improvement"].notna().sum() == len(trained), "the secondary, in-window column"
    client = scored.tracking.client()
    experiment = client.get_experiment_by_name(f"{NAME}-backtest")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.dagster_run_id = '{result.run_id}'")
    assert run.data.metrics["out_of_sample_improvement"] == pytest.approx(expected)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "reports")} == {
        "reports/backtest.png",
        "reports/backtest.csv",
    }
    url = f"http://x/get-artifact?path=reports%2Fbacktest.png&run_uuid={run.info.run_id}"
    assert metadata["backtest"].value == f"![walk-forward backtest]({url})"


def test_the_track_record_gate_refuses_a_short_record_and_follows_a_long_enough_one(
    scored: Backtested, make_defs: PipelineFactory
) -> None:
    newest = scored.tracking.champion_record(NAME)  # the newest partition whose gates passed
    assert newest is not None
    # The champion a while ago: an older trained partition holds the alias, so promoting would move it.
    older = ModelRecord.model_validate(scored.read("model", "2012-06-25"))
    assert older.version != newest.version
    scored.tracking.client().set_registered_model_alias(NAME, CHAMPION, older.version)
    until = [d for d in days("2012-06-20", newest.partition) if isinstance(scored.read("backtest", d), pd.DataFrame)]
    assert until, "days scored on or before the candidate's partition"

    strict = make_defs(spec(scored.source, track_record_days=30))
    refused = run_unpartitioned(strict, ["champion"], NAME, scored.instance)
    assert refused.success, "a refusal is a decision, not an error: the champion stays"
    champion = materializations(refused, "champion")[0].metadata
    assert f"track record too short: {len(until)} of promotion.track_record_days=30" in str(champion["refused"].value)
    assert champion["alias_moved"].value is False
    assert scored.tracking.alias_version(NAME, CHAMPION) == older.version

    enough = make_defs(spec(scored.source, track_record_days=len(until)))
    decided = run_unpartitioned(enough, ["champion"], NAME, scored.instance)
    assert decided.success
    champion = materializations(decided, "champion")[0].metadata
    assert champion["track_record_scored_days"].value == len(until)
    rows = pd.concat([scored.read("backtest", d) for d in until])  # type: ignore[list-item]
    daily = rows.sort_values("horizon_days").drop_duplicates("day")
    improvement = 1 - (daily["mae"] * daily["rows"]).sum() / (daily["baseline_mae"] * daily["rows"]).sum()
    assert float(champion["track_record_improvement"].value) == pytest.approx(improvement)  # type: ignore[arg-type]
    if improvement >= 0:  # promotion.min_improvement_over_baseline is 0 here
        assert "refused" not in champion
        assert scored.tracking.alias_version(NAME, CHAMPION) == newest.version
    else:
        assert "below the baseline" in str(champion["refused"].value)
        assert scored.tracking.alias_version(NAME, CHAMPION) == older.version


def test_a_model_run_in_rounds_registers_each_trained_day_once(scored: Backtested) -> None:
    trained = [d for d in days(*MODELS) if not isinstance(scored.read("model", d), Rejected)]
    records = [ModelRecord.model_validate(scored.read("model", d)) for d in trained]
    assert len(trained) == 5
    assert len({r.version for r in records}) == len({r.mlflow_run_id for r in records}) == 5
    assert [r.partition for r in records] == trained
