"""MLflow tracking and registry, as a thin resource (MLflow is imported only when a step uses it)."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import dagster as dg
from pydantic import Field

from kernel.names import CHAMPION, PREVIOUS_CHAMPION
from kernel.records import CandidateScore, ChampionRecord, ModelRecord
from kernel.spec import PipelineSpec
from ml.promotion import ROLLBACK_TAGS, Aliases, Move, Rollback, parse_rollback

if TYPE_CHECKING:
    import pandas as pd

    from ml.evaluation import TrainedWindow

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

# The only types a model of ours may hold beyond skops' defaults: the model families of `ml.training` need these
# (tests/resources/test_model_lineage.py fits each family on real features and checks). Fixed here, never read from
# the artifact: MLflow's skops loader trusts the list the artifact's own MLmodel file names, so a crafted artifact
# could trust anything. A model holding another type is refused when logged and when loaded.
SKOPS_TRUSTED_TYPES = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
)
# CPython 3.11 keeps one AST recursion counter per interpreter, not per thread (python/cpython#106905): a thread
# building Python AST objects (numpy reading an array header while skops saves and reloads a model, a traceback
# locating its carets) while another one does too can fail with this SystemError. A model is logged in the
# background while the next round trains, so its save is tried again: it only writes a local temp directory that
# MLflow removes on failure; nothing is uploaded or registered before the save succeeds.
AST_RACE = "AST constructor recursion depth mismatch"
SAVE_ATTEMPTS = 3
MODEL_FILE = "model.skops"  # mlflow.sklearn's file name for a model saved in the skops format


class MlflowTracking(dg.ConfigurableResource):
    """Logs runs and models to MLflow and moves registry aliases (champion, previous_champion)."""

    tracking_uri: str = Field(
        description="MLflow tracking URI: `sqlite:///...` locally, `http(s)://...` in production."
    )
    artifact_root: str | None = Field(
        default=None, description="Artifact location for new experiments; None lets the server decide."
    )
    ui_url: str | None = Field(default=None, description="Base URL of the MLflow UI, for links in Dagster metadata.")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)

    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def end_runs_of(self, dagster_run_id: str) -> list[str]:
        """End FAILED the MLflow runs a Dagster run left RUNNING (its process was killed); their ids."""
        client = self.client()
        experiments = [e.experiment_id for e in client.search_experiments()]
        if not experiments:
            return []
        query = f"tags.dagster_run_id = '{dagster_run_id}' and attributes.status = 'RUNNING'"
        ended = [run.info.run_id for run in client.search_runs(experiments, filter_string=query)]
        for run_id in ended:
            client.set_terminated(run_id, status="FAILED")
        return ended

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created on first use (under `artifact_root` when set)."""
        client = self.client()
        existing = client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        location = f"{self.artifact_root.rstrip('/')}/{name}" if self.artifact_root else None
        return client.create_experiment(name, artifact_location=location)

    def load_verified(self, record: ModelRecord) -> Any:
        """The model of a gated record, loaded only if the registry and the artifact's bytes still match the record.

        Checked before any byte is deserialised: the record's `model_uri` names its own version; the registry
        version's tags name the same pipeline, partition, Dagster run and artifact hash; the artifact is in the skops
        format and its bytes hash to the record's `artifact_sha256`. Then skops loads it trusting only
        `SKOPS_TRUSTED_TYPES`. MLflow's own loaders are never used (and `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`
        turns them off in every environment). Any mismatch fails the run naming the version and what differs.
        """
        import skops.io
        from skops.io.exceptions import UntrustedTypesFoundException

        where = f"{record.model_name} v{record.version} ({record.partition})"
        expected_uri = f"models:/{record.model_name}/{record.version}"
        if record.model_uri != expected_uri:
            raise dg.Failure(f"refusing to load {where}: its record points at {record.model_uri}, not {expected_uri}")
        if record.artifact_sha256 is None:
            raise dg.Failure(f"refusing to load {where}: its record has no artifact fingerprint (logged before them)")
        tags = self.version_tags(record.model_name, record.version)
        expected = {
            "pipeline": record.pipeline,
            "partition": record.partition,
            "dagster_run_id": record.dagster_run_id,
            "artifact_sha256": record.artifact_sha256,
        }
        differing = {
            k: f"registry {tags.get(k, '<missing>')!r} != record {v!r}" for k, v in expected.items() if tags.get(k) != v
        }
        if differing:
            raise dg.Failure(f"refusing to load {where}: registry tags do not match its gated record: {differing}")
        with tempfile.TemporaryDirectory() as directory:
            flavor, data = _model_file(record.model_name, record.version, Path(directory))
        if flavor.get("serialization_format") != "skops" or flavor.get("pickled_model") != MODEL_FILE:
            raise dg.Failure(
                f"refusing to load {where}: its artifact is not a skops {MODEL_FILE} "
                f"(format {flavor.get('serialization_format')!r}, file {flavor.get('pickled_model')!r})"
            )
        found = hashlib.sha256(data).hexdigest()
        if found != record.artifact_sha256:
            raise dg.Failure(
                f"refusing to load {where}: artifact sha256 {found} != gated record {record.artifact_sha256}"
            )
        try:
            return skops.io.loads(data, trusted=list(SKOPS_TRUSTED_TYPES))
        except UntrustedTypesFoundException as exc:
            raise dg.Failure(f"refusing to load {where}: {exc}") from exc

    def champion_record(self, model_name: str) -> ChampionRecord | None:
        """What the registry's `champion` alias serves now (the source of truth for gating, serving and rollback)."""
        version = self.version_by_alias(model_name, CHAMPION)
        if version is None:
            return None
        return ChampionRecord(
            model_name=model_name,
            version=str(version.version),
            mlflow_run_id=str(version.run_id),
            model_uri=f"models:/{model_name}/{version.version}",
            partition=str((version.tags or {}).get("partition", "")),
            previous_champion=self.alias_version(model_name, PREVIOUS_CHAMPION),
        )

    def log_model_partition(
        self,
        spec: PipelineSpec,
        *,
        day: date,
        trained: TrainedWindow,
        run_id: str,
        features_fingerprints: Mapping[str, str | None],
    ) -> ModelRecord:
        """One MLflow run per model partition (params, metrics, plots, `trained.model`: the best candidate refitted on
        the whole window) and its registered version; the record keeps the fingerprints of the feature days it read."""
        import mlflow

        window = trained.split.window
        tags = {
            "pipeline": spec.name,
            "partition": str(day),
            "dagster_run_id": run_id,
            "training_window": f"{window.train_days[0]}..{window.holdout_days[-1]}",
        }
        experiment_id = self.experiment_id(spec.name)
        version: str | None = None
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{spec.name}-{day}", tags=tags) as run:
            _log_run_contents(spec, trained)
            version, model_id = _log_sklearn_model(spec, trained.model, trained.split.sample)
            # After the model, linked to it in one batch: MLflow links the metrics a run already holds to a model it
            # logs one metric history read at a time (200 series: 1,200 metrics, 1.5 s of each model's logging).
            mlflow.log_metrics(_run_metrics(trained), model_id=model_id)
        if version is None:
            raise dg.Failure(f"{spec.name} {day}: the MLflow run {run.info.run_id} ended before a model was registered")
        artifact_sha256 = self.artifact_sha256(spec.name, version)
        client = self.client()
        for key, value in {**tags, "artifact_sha256": artifact_sha256}.items():
            client.set_model_version_tag(spec.name, version, key, value)
        return _model_record(
            spec,
            day=day,
            trained=trained,
            ids={"version": version, "mlflow_run_id": run.info.run_id, "experiment_id": experiment_id},
            run_id=run_id,
            artifact_sha256=artifact_sha256,
            features_fingerprints=features_fingerprints,
        )

    def artifact_sha256(self, model_name: str, version: str) -> str:
        """The sha256 of a registered version's model file, as stored (read back, not the bytes meant to be sent)."""
        with tempfile.TemporaryDirectory() as directory:
            return hashlib.sha256(_model_file(model_name, version, Path(directory))[1]).hexdigest()

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        if self.ui_url is None:
            return None
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def artifact_url(self, run_id: str, path: str) -> str | None:
        """Where a browser fetches a run's artifact: the MLflow UI's own artifact endpoint (what its artifact viewer
        uses, so it works for every artifact store the UI can show), or None without a UI URL."""
        if self.ui_url is None:
            return None
        return f"{self.ui_url.rstrip('/')}/get-artifact?{urlencode({'path': path, 'run_uuid': run_id})}"

    def log_report(
        self,
        experiment: str,
        run_name: str,
        *,
        files: dict[str, bytes],
        metrics: dict[str, float],
        tags: dict[str, str],
    ) -> tuple[str, str]:
        """A run holding a report's files (under `reports/`) and headline metrics; returns (experiment id, run id)."""
        import mlflow

        experiment_id = self.experiment_id(experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            mlflow.log_metrics(metrics)
            with tempfile.TemporaryDirectory() as directory:
                for name, content in files.items():
                    (Path(directory) / name).write_bytes(content)
                mlflow.log_artifacts(directory, "reports")
        return experiment_id, run.info.run_id

    def version_by_alias(self, model_name: str, alias: str) -> ModelVersion | None:
        """The version an alias points at, or None if the model or alias does not exist yet."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(model_name, alias)
        except MlflowException as exc:
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                return None
            raise

    def version_tags(self, model_name: str, version: str) -> dict[str, str]:
        """A registered version's tags (pipeline, partition, training window, Dagster run id)."""
        return dict(self.client().get_model_version(model_name, version).tags or {})

    def registered_version_tags(self, model_name: str, version: str) -> dict[str, str] | None:
        """A version's tags, or None if the model has no such version."""
        from mlflow.exceptions import MlflowException

        try:
            return self.version_tags(model_name, version)
        except MlflowException as exc:
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                return None
            raise

    def alias_version(self, model_name: str, alias: str) -> str | None:
        """The version number an alias points at, as a string (stores disagree on int vs str)."""
        version = self.version_by_alias(model_name, alias)
        return None if version is None else str(version.version)

    def aliases(self, model_name: str) -> Aliases:
        """The champion and previous_champion aliases as they are now, with their versions' partitions."""
        found = {alias: self.version_by_alias(model_name, alias) for alias in (CHAMPION, PREVIOUS_CHAMPION)}
        versions = {alias: None if v is None else str(v.version) for alias, v in found.items()}
        partitions = {
            alias: "" if v is None else str((v.tags or {}).get("partition", "")) for alias, v in found.items()
        }
        return Aliases(
            champion=versions[CHAMPION],
            previous=versions[PREVIOUS_CHAMPION],
            champion_partition=partitions[CHAMPION],
            previous_partition=partitions[PREVIOUS_CHAMPION],
        )

    def rollbacks(self, model_name: str) -> dict[str, Rollback]:
        """The recorded rollbacks still in force (version tags on each refused version), by version."""
        marker = ROLLBACK_TAGS["at"]
        versions = self.client().search_model_versions(f"name = '{model_name}' and tags.{marker} != ''")
        parsed = (parse_rollback(str(v.version), dict(v.tags or {})) for v in versions)
        return {r.version: r for r in parsed if r is not None}

    def tag_version(self, model_name: str, version: str, tags: Mapping[str, str]) -> None:
        """Record a decision on a registered version (where it survives: the registry, beside the model)."""
        client = self.client()
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, value)

    def move_aliases(self, model_name: str, moves: Sequence[Move]) -> None:
        """Carry out a decision's alias moves, each a compare-and-set: every alias must still be where the decision
        found it (checked before the first write, and again right before each write), or nothing more is written.

        MLflow has no conditional alias update, so a writer outside the promotion pool could still slip in between
        the last read and its write; the pool makes champion, rollback and manual promotion take turns."""
        client = self.client()
        self.check_aliases(model_name, moves)
        for move in moves:
            self._expect(model_name, move)
            client.set_registered_model_alias(model_name, move.alias, move.to)

    def check_aliases(self, model_name: str, moves: Sequence[Move]) -> None:
        """Refuse (`AliasMovedError`) unless every alias the moves touch is still where the decision found it."""
        for alias in {move.alias for move in moves}:
            self._expect(model_name, next(move for move in moves if move.alias == alias))

    def _expect(self, model_name: str, move: Move) -> None:
        found = self.alias_version(model_name, move.alias)
        if found != move.expected:
            raise AliasMovedError(
                f"{model_name}: the {move.alias!r} alias moved since the decision was made (expected "
                f"{_shown(move.expected)}, found {_shown(found)}); not moving it to v{move.to}. Another writer got "
                "there first: re-run to decide again on what the registry holds now"
            )


class AliasMovedError(dg.Failure):
    """An alias is no longer where the promotion decision found it: the decision is stale, nothing more is written."""


def _shown(version: str | None) -> str:
    return "no version" if version is None else f"v{version}"


def _model_file(model_name: str, version: str, directory: Path) -> tuple[dict[str, Any], bytes]:
    """A registered version's sklearn flavour settings (from its MLmodel) and the bytes of its model file, if any."""
    import mlflow.artifacts
    import yaml

    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}", dst_path=str(directory))
    )
    flavor = (yaml.safe_load((local / "MLmodel").read_text()).get("flavors") or {}).get("sklearn") or {}
    model_file = local / str(flavor.get("pickled_model", MODEL_FILE))
    return flavor, model_file.read_bytes() if model_file.is_file() else b""


def _model_record(
    spec: PipelineSpec,
    *,
    day: date,
    trained: TrainedWindow,
    ids: dict[str, str],
    run_id: str,
    artifact_sha256: str,
    features_fingerprints: Mapping[str, str | None],
) -> ModelRecord:
    """The typed record of a logged model partition: registry ids, metrics, candidates and lineage."""
    split, results, evaluation = trained.split, trained.results, trained.evaluation
    best, window = evaluation.best, split.window
    return ModelRecord(
        pipeline=spec.name,
        partition=str(day),
        model_name=spec.name,
        model_uri=f"models:/{spec.name}/{ids['version']}",
        version=ids["version"],
        mlflow_run_id=ids["mlflow_run_id"],
        experiment_id=ids["experiment_id"],
        family=best.candidate.family,
        params=dict(best.candidate.params),
        metrics=best.metrics,
        baseline=evaluation.baseline,
        candidates=[CandidateScore(family=r.candidate.family, mae=r.metrics.mae) for r in results],
        non_finite_predictions=evaluation.non_finite_predictions,
        train_days=window.train_days,
        holdout_days=window.holdout_days,
        missing_days=window.missing_days,
        rejected_days=window.rejected_days,
        missing_target_rows=window.missing_target_rows,
        train_rows=split.train_rows,
        holdout_rows=split.holdout_rows,
        dagster_run_id=run_id,
        artifact_sha256=artifact_sha256,
        ray_worker_pids=sorted({r.worker_pid for r in results}),
        champion=evaluation.champion,
        features_fingerprints=dict(features_fingerprints),
        metrics_per_series=evaluation.per_series,
        series_left_out=window.series_left_out,
    )


def _run_metrics(trained: TrainedWindow) -> dict[str, float]:
    """The run's metrics: the model's and the baseline's, pooled and per series, and every candidate's MAE."""
    evaluation = trained.evaluation
    metrics = evaluation.best.metrics.as_dict() | evaluation.baseline.as_dict("baseline_")
    for index, result in enumerate(trained.results):
        metrics[f"candidate_{index}_{result.candidate.family}_mae"] = result.metrics.mae
    for label, score in evaluation.per_series.items():
        metrics |= score.metrics.as_dict(f"series/{label}/") | score.baseline.as_dict(f"series/{label}/baseline_")
    return metrics


def _log_run_contents(spec: PipelineSpec, trained: TrainedWindow) -> None:
    """Params, the window, importances and plots (the metrics follow the model, `_run_metrics`)."""
    import mlflow

    split, evaluation = trained.split, trained.evaluation
    best, window = evaluation.best, split.window
    mlflow.log_params(
        {
            "family": best.candidate.family,
            **best.candidate.params,
            "window_days": spec.training.window_days,
            "holdout_days": spec.evaluation.holdout_days,
            "train_rows": split.train_rows,
            "holdout_rows": split.holdout_rows,
            "refit_rows": split.train_rows + split.holdout_rows,
        }
    )
    mlflow.log_dict(
        {
            "train_days": window.train_days,
            "holdout_days": window.holdout_days,
            "missing_days": window.missing_days,
            "rejected_days": window.rejected_days,
            "missing_target_rows": window.missing_target_rows,
            "series_left_out": window.series_left_out,
        },
        "training_window.json",
    )
    mlflow.log_dict(evaluation.importances, "feature_importance.json")
    with tempfile.TemporaryDirectory() as directory:
        for name, png in evaluation.images.items():
            (Path(directory) / name).write_bytes(png)
        mlflow.log_artifacts(directory, "plots")


def _log_sklearn_model(spec: PipelineSpec, model: Any, rows: pd.DataFrame) -> tuple[str, str]:
    """Log the fitted pipeline with skops and register it under the pipeline's name; returns the version and the
    logged model's id."""
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    from ml.features import feature_columns

    # A signature, not an input example: MLflow validates an example by loading the model back, which the pickle-off
    # setting (MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false) refuses, logging "Deserializing this model is disallowed"
    # for every model; the signature is what serving checks inputs against. The output is the target's float64
    # array, as `predict` returns it (read from the rows, not predicted: a prediction walks every tree of the model).
    # The trusted types are fixed (SKOPS_TRUSTED_TYPES): MLflow saves the model and loads it back with them before
    # anything is uploaded or registered, so a model serving would refuse is never logged, without a check of our own
    # (a second serialisation of every model, once a third of the logging time).
    attempts_left = SAVE_ATTEMPTS
    while True:
        try:
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=spec.name,
                signature=infer_signature(rows[feature_columns(spec)], rows[spec.target].to_numpy(dtype="float64")),
                pip_requirements=_pip_requirements(),
                skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
            )
            break
        except (MlflowException, SystemError) as error:
            attempts_left -= 1
            if attempts_left and _hit_ast_race(error):
                continue
            if isinstance(error, MlflowException) and "untrusted types" in error.message:
                raise dg.Failure(
                    f"{spec.name}: the fitted model holds types outside SKOPS_TRUSTED_TYPES; add them to "
                    f"resources/tracking.py only if they are safe to load ({error.message})"
                ) from error
            raise
    if info.registered_model_version is None:
        raise dg.Failure(f"{spec.name}: MLflow logged the model but registered no version")
    return str(info.registered_model_version), info.model_id


def _hit_ast_race(error: BaseException) -> bool:
    """Whether `error`, or what caused it, is CPython 3.11's spurious AST recursion-depth SystemError."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, SystemError) and AST_RACE in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _pip_requirements() -> list[str]:
    # Explicit requirements: MLflow's inference costs ~10 s per logged model.
    import numpy as np
    import pandas as pd
    import sklearn
    import skops

    return [
        f"scikit-learn=={sklearn.__version__}",
        f"pandas=={pd.__version__}",
        f"numpy=={np.__version__}",
        f"skops=={skops.__version__}",
    ]
