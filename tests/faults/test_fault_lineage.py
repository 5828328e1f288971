"""Whoever can move an alias, edit a stored record or write the artifact store tries to make every run process load
their model: a champion alias moved to a pickled version whose loading runs code, a model record whose `model_uri`
points at another version, and a registered artifact overwritten with other bytes. Each run that would load it
fails naming the version and the mismatch; nothing the forged model would compute is stored; its code never runs.

Real stores: models trained in-process on a real Ray head into a SQLite MLflow store (file artifacts) and a Dagster
instance on disk, once per session (conftest's `trained_template`), each test forging on its own copy; the forged
version is registered with MLflow's own cloudpickle flavour, as an attacker would.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg
import pytest
from support import run_range, run_unpartitioned

from kernel.names import CHAMPION
from kernel.records import ModelRecord
from resources.tracking import MODEL_FILE

from .conftest import BEFORE, DAY, LATER, TRAINED, FaultRow, TrainedHome, copy_state

NAME = TRAINED
NEXT = LATER


class Payload:
    """What a forged model runs when it is unpickled: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


class Trained(TrainedHome):
    """A copy of the trained home after a `champion` run: two gated model partitions (BEFORE, DAY), the DAY one the
    champion, and features up to NEXT."""

    def record(self, day: str) -> ModelRecord:
        return ModelRecord.model_validate(self.store.read(dg.AssetKey([NAME, "model"]), day))

    def stored(self, stage: str, day: str) -> bool:
        return self.store.exists(dg.AssetKey([NAME, stage]), day)


@pytest.fixture(scope="module")
def champion_template(trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained home once its DAY model is promoted; every test forges on its own copy (`trained`)."""
    root = copy_state(trained_template, tmp_path_factory.mktemp("lineage") / "trained")
    home = Trained.at(root)
    with home.instance() as instance:
        assert run_unpartitioned(home.defs, ["champion"], NAME, instance).success
    assert home.tracking.alias_version(NAME, CHAMPION) == home.record(DAY).version
    return root


@pytest.fixture
def trained(champion_template: Path, tmp_path: Path) -> Trained:
    return Trained.at(copy_state(champion_template, tmp_path / "trained"))


def forge_pickled_version(trained: Trained, marker: Path, tags: dict[str, str]) -> str:
    """Register, under the pipeline's model name, a cloudpickle model whose loading writes `marker`."""
    import mlflow
    import mlflow.sklearn

    mlflow.set_tracking_uri(trained.tracking.tracking_uri)
    mlflow.set_registry_uri(trained.tracking.tracking_uri)  # not whichever store the process's last run registered to
    mlflow.start_run(experiment_id=trained.tracking.experiment_id("forgeries"))  # artifacts under the test's home
    try:
        info = mlflow.sklearn.log_model(
            Payload(marker), name="model", registered_model_name=NAME, serialization_format="cloudpickle"
        )
    finally:
        mlflow.end_run()
    version = str(info.registered_model_version)
    for key, value in tags.items():
        trained.tracking.client().set_model_version_tag(NAME, version, key, value)
    return version


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    failures = [event.step_failure_data for event in result.all_events if event.is_step_failure]
    return " ".join(str(failure.error) for failure in failures if failure is not None)


@pytest.mark.faults
@pytest.mark.timeout(600)
def test_a_champion_alias_moved_to_a_pickled_version_is_never_loaded(
    trained: Trained, tmp_path: Path, fault: FaultRow
) -> None:
    fault.scenario = "champion alias moved to a forged version"
    fault.injected = "a cloudpickle model registered with copied tags, the champion alias pointed at it"
    gated = trained.record(DAY)
    marker = tmp_path / "code-ran"
    copied = {"pipeline": NAME, "partition": DAY, "dagster_run_id": gated.dagster_run_id}
    forged = forge_pickled_version(trained, marker, {**copied, "artifact_sha256": str(gated.artifact_sha256)})
    client = trained.tracking.client()
    client.set_registered_model_alias(NAME, CHAMPION, forged)
    try:
        with trained.instance() as instance:
            predicted = run_range(trained.defs, ["predictions"], NAME, (NEXT, NEXT), instance)
            scored = run_range(trained.defs, ["backtest"], NAME, (NEXT, NEXT), instance)
    finally:
        client.set_registered_model_alias(NAME, CHAMPION, gated.version)

    fault.ungated = int(trained.stored("predictions", NEXT)) + int(trained.stored("backtest", NEXT))
    assert not marker.exists(), "the forged model's code ran"
    assert not predicted.success and not trained.stored("predictions", NEXT)
    expected = f"refusing to serve {NAME} v{forged} (the champion alias): the last promotion decision recorded v"
    assert expected in failure_messages(predicted), failure_messages(predicted)
    assert not scored.success and expected in failure_messages(scored)
    fault.result = f"predictions and backtest refused v{forged}: the last promotion decision recorded v{gated.version}"


@pytest.mark.faults
@pytest.mark.timeout(600)
def test_a_model_record_pointing_at_another_version_is_refused(
    trained: Trained, tmp_path: Path, fault: FaultRow
) -> None:
    fault.scenario = "stored model record's model_uri rewritten"
    fault.injected = "the registry version behind a gated record swapped for a forged one with the same tags"
    gated = trained.record(BEFORE)
    marker = tmp_path / "code-ran"
    tags = {"pipeline": NAME, "partition": BEFORE, "dagster_run_id": gated.dagster_run_id}
    forged = forge_pickled_version(trained, marker, {**tags, "artifact_sha256": str(gated.artifact_sha256)})
    tampered = {
        "model_uri": gated.model_copy(update={"model_uri": f"models:/{NAME}/{forged}"}),
        "forged version": gated.model_copy(update={"version": forged, "model_uri": f"models:/{NAME}/{forged}"}),
    }
    refusals: dict[str, str] = {}
    for what, record in tampered.items():
        try:
            trained.tracking.load_verified(record)
        except dg.Failure as refused:
            refusals[what] = str(refused.description)
    fault.ungated = len(tampered) - len(refusals)  # tampered records that loaded a model
    assert f"its record points at models:/{NAME}/{forged}, not models:/{NAME}/" in refusals["model_uri"]
    assert f"its artifact is not a skops {MODEL_FILE}" in refusals["forged version"]
    assert not marker.exists(), "the forged model's code ran"
    fault.result = "a record naming another version, or the forged version itself, is refused before any byte loads"


@pytest.mark.faults
@pytest.mark.timeout(600)
def test_an_overwritten_model_artifact_is_refused_by_its_hash(trained: Trained, fault: FaultRow) -> None:
    fault.scenario = "registered model artifact overwritten"
    fault.injected = "the champion's model.skops replaced with another (valid) model's bytes in the artifact store"
    champion, other = trained.record(DAY), trained.record(BEFORE)
    artifacts = trained.settings.home / "mlflow"
    files = {path.read_bytes(): path for path in artifacts.rglob(MODEL_FILE)}
    by_hash = {hashlib.sha256(data).hexdigest(): path for data, path in files.items()}
    target, source = by_hash[str(champion.artifact_sha256)], by_hash[str(other.artifact_sha256)]
    original = target.read_bytes()
    target.write_bytes(source.read_bytes())
    try:
        with trained.instance() as instance:
            predicted = run_range(trained.defs, ["predictions"], NAME, (NEXT, NEXT), instance)
    finally:
        target.write_bytes(original)
    message = failure_messages(predicted)
    fault.ungated = int(trained.stored("predictions", NEXT))  # predictions made by the overwritten bytes
    assert not predicted.success and not trained.stored("predictions", NEXT)
    assert f"refusing to load {NAME} v{champion.version} ({DAY}): artifact sha256 {other.artifact_sha256}" in message
    with trained.instance() as instance:
        assert run_range(trained.defs, ["predictions"], NAME, (NEXT, NEXT), instance).success, "restored bytes serve"
    served = trained.store.read(dg.AssetKey([NAME, "predictions"]), NEXT)
    assert set(served["model_version"]) == {champion.version}
    fault.result = f"predictions refused v{champion.version} (sha256 differs); restored bytes served again"


def test_stored_records_carry_the_artifact_fingerprint_the_registry_tags(trained: Trained) -> None:
    for day in (BEFORE, DAY):
        record = trained.record(day)
        assert record.artifact_sha256 is not None and len(record.artifact_sha256) == 64
        assert trained.tracking.version_tags(NAME, record.version)["artifact_sha256"] == record.artifact_sha256
        assert trained.tracking.artifact_sha256(NAME, record.version) == record.artifact_sha256
    assert json.dumps(trained.record(DAY).model_dump())  # still a plain JSON record
