"""The model the registry's champion alias serves, loaded only through the record our pipeline kept of that version.

Every version the `model` asset logs also gets an immutable record keyed by version (`version_key`), written beside
the day's record: a later retraining of the same day replaces the day's record, not the version's, so a rollback to
it still finds its lineage. A version registered any other way has none.
"""

from typing import Any

import dagster as dg

from kernel.pipeline import Pipeline
from kernel.records import ChampionRecord, ModelRecord
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking


def version_key(pipeline: Pipeline) -> dg.AssetKey:
    """Where the record of each logged version is kept (one JSON per version; not an asset of its own)."""
    return dg.AssetKey([pipeline.name, "model_versions"])


def keep_version_record(store: PartitionedParquetIOManager, pipeline: Pipeline, record: ModelRecord) -> None:
    """Keep the record of a version just logged, under its version number."""
    store.write(version_key(pipeline), record.version, record)


def champion_model(
    pipeline: Pipeline, store: PartitionedParquetIOManager, mlflow: MlflowTracking
) -> tuple[ChampionRecord, ModelRecord, Any] | None:
    """The champion alias, the record of the version it points at, and that model; None before any promotion.

    An alias is a pointer anyone with registry access can move, so what it points at is served only if it is the
    version the last promotion decision recorded (the `champion` asset's stored value: what promotion, rollback and
    manual promotion write once the gates or the user decided), our pipeline kept a record of that version, and the
    registry and artifact still match that record (`MlflowTracking.load_verified`). Otherwise the run fails naming
    the version and the mismatch.
    """
    serving = mlflow.champion_record(pipeline.name)
    if serving is None:
        return None
    where = f"refusing to serve {pipeline.name} v{serving.version} (the champion alias)"
    if not store.exists(pipeline.key("champion"), None):
        raise dg.Failure(f"{where}: no promotion decision is recorded ({pipeline.key('champion').to_user_string()})")
    decided = ChampionRecord.model_validate(store.read(pipeline.key("champion"), None))
    if decided.version != serving.version:
        raise dg.Failure(f"{where}: the last promotion decision recorded v{decided.version}")
    if not store.exists(version_key(pipeline), serving.version):
        raise dg.Failure(f"{where}: the pipeline kept no record of v{serving.version} (its model asset did not log it)")
    record = ModelRecord.model_validate(store.read(version_key(pipeline), serving.version))
    return serving, record, mlflow.load_verified(record)
