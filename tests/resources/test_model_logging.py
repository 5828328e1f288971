"""Logging a model partition to a real (SQLite) MLflow: the model gets a signature, and MLflow does not try to load it
back to check an input example (which the pickle-off setting refuses, printing "Deserializing this model is
disallowed" for every model logged); a model holding a type outside `SKOPS_TRUSTED_TYPES` is refused before any
version is registered; CPython's AST race while saving is retried."""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow.models
import numpy as np
import pytest
import skops.io
import yaml
from conftest import BIKE_CSV, bike_spec_document
from mlflow import MlflowClient
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from kernel.paths import PROJECT_ROOT
from kernel.spec import PipelineSpec, load_spec
from ml import evaluation, features, ingest
from resources.tracking import AST_RACE, SAVE_ATTEMPTS, MlflowTracking

DAY = date(2012, 6, 30)
REFUSED = "Deserializing this model is disallowed"


@dataclass(frozen=True)
class Trained:
    """A real model partition of bike, trained and evaluated, and an MLflow of its own to log it to."""

    spec: PipelineSpec
    window: evaluation.TrainedWindow
    tracking: MlflowTracking


@pytest.fixture
def trained(tmp_path: Path) -> Trained:
    path = tmp_path / "bike_demand.yaml"
    path.write_text(yaml.safe_dump(bike_spec_document(training={"window_days": 21})))
    spec = load_spec(path)
    raw = ingest.normalise(ingest.read_source_file(str(BIKE_CSV), spec, PROJECT_ROOT), spec, str(BIKE_CSV)).frame
    days = [DAY - timedelta(days=k) for k in range(spec.training.window_days)]
    frames = {str(day): features.build_features(raw, day, spec).frame for day in days}
    window = evaluation.train_window(frames, DAY, spec)
    tracking = MlflowTracking(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "artifacts").as_uri()
    )
    tracking.setup_for_execution(dg.build_init_resource_context())
    return Trained(spec, window, tracking)


def log(trained: Trained, model: Any) -> Any:
    return trained.tracking.log_model_partition(
        trained.spec,
        day=DAY,
        trained=replace(trained.window, model=model),
        run_id="a-dagster-run",
        features_fingerprints={},
    )


def test_a_logged_model_partition_has_a_signature_and_mlflow_does_not_try_to_load_it(
    trained: Trained, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    spec, sample, model = trained.spec, trained.window.split.sample, trained.window.model
    with caplog.at_level(logging.DEBUG):
        record = log(trained, model)

    printed = capfd.readouterr()
    assert REFUSED not in caplog.text + printed.out + printed.err
    signature = mlflow.models.get_model_info(record.model_uri).signature
    assert signature is not None
    assert signature.inputs.input_names() == features.feature_columns(spec)
    rows = sample[features.feature_columns(spec)]
    assert signature.outputs == mlflow.models.infer_signature(rows, model.predict(rows)).outputs


def test_a_model_needing_another_type_is_refused_before_a_version_is_registered(trained: Trained) -> None:
    odd = make_pipeline(FunctionTransformer(operator.neg)).fit(np.ones((4, 1)))
    with pytest.raises(dg.Failure, match=r"holds types outside SKOPS_TRUSTED_TYPES.*_operator\.neg"):
        log(trained, odd)
    log(trained, trained.window.model)  # the same partition's real model is logged and registered
    versions = MlflowClient(trained.tracking.tracking_uri).search_model_versions(f"name='{trained.spec.name}'")
    assert [str(v.version) for v in versions] == ["1"]


@pytest.mark.parametrize("races", [SAVE_ATTEMPTS - 1, SAVE_ATTEMPTS])
def test_cpython_s_ast_race_while_saving_is_retried_and_registers_one_version(
    trained: Trained, monkeypatch: pytest.MonkeyPatch, races: int
) -> None:
    """CPython 3.11's shared AST counter (python/cpython#106905) can fail a save while another thread parses; the
    race is injected at skops' dump, where MLflow saves the model, the first `races` times."""
    dump = skops.io.dump
    left = [races]

    def racing_dump(*args: Any, **kwargs: Any) -> Any:
        if left[0]:
            left[0] -= 1
            raise SystemError(f"{AST_RACE} (before=135, after=200)")
        return dump(*args, **kwargs)

    monkeypatch.setattr(skops.io, "dump", racing_dump)
    client = MlflowClient(trained.tracking.tracking_uri)
    if races == SAVE_ATTEMPTS:
        with pytest.raises(Exception, match="could not be serialized"):
            log(trained, trained.window.model)
        assert client.search_model_versions(f"name='{trained.spec.name}'") == []
        return
    record = log(trained, trained.window.model)
    assert [str(v.version) for v in client.search_model_versions(f"name='{trained.spec.name}'")] == [record.version]
