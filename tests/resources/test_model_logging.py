"""Logging a model partition to a real (SQLite) MLflow: the model gets a signature, and MLflow does not try to load it
back to check an input example (which the pickle-off setting refuses, printing "Deserializing this model is
disallowed" for every model logged)."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import mlflow.models
import pytest
import yaml
from conftest import BIKE_CSV, bike_spec_document

from kernel.paths import PROJECT_ROOT
from kernel.spec import load_spec
from ml import evaluation, features, ingest, training
from resources.tracking import MlflowTracking

DAY = date(2012, 6, 30)
REFUSED = "Deserializing this model is disallowed"


def test_a_logged_model_partition_has_a_signature_and_mlflow_does_not_try_to_load_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bike_demand.yaml"
    path.write_text(yaml.safe_dump(bike_spec_document(training={"window_days": 21})))
    spec = load_spec(path)
    raw = ingest.normalise(ingest.read_source_file(str(BIKE_CSV), spec, PROJECT_ROOT), spec, str(BIKE_CSV)).frame
    days = [DAY - timedelta(days=k) for k in range(spec.training.window_days)]
    frames = {str(day): features.build_features(raw, day, spec).frame for day in days}
    split = training.split_window(frames, DAY, spec)
    results = [training.train_candidate(c, split.train, split.holdout, spec) for c in spec.training.candidates]
    scored, model = evaluation.evaluate_and_refit(results, split, spec)
    tracking = MlflowTracking(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "artifacts").as_uri()
    )
    tracking.setup_for_execution(dg.build_init_resource_context())

    with caplog.at_level(logging.DEBUG):
        record = tracking.log_model_partition(
            spec,
            day=DAY,
            split=split,
            results=results,
            evaluation=scored,
            model=model,
            run_id="a-dagster-run",
            features_fingerprints={},
        )

    printed = capfd.readouterr()
    assert REFUSED not in caplog.text + printed.out + printed.err
    signature = mlflow.models.get_model_info(record.model_uri).signature
    assert signature is not None
    assert signature.inputs.input_names() == features.feature_columns(spec)
    rows = split.holdout[features.feature_columns(spec)].head(3)
    assert signature.outputs == mlflow.models.infer_signature(rows, model.predict(rows)).outputs
