"""`<p>/champion` (the promoted model) and what the promotion jobs share with it: gathering the evidence for
`ml.promotion.decide`, carrying out its decision (rollback record, compare-and-set alias moves, audit tags) and
recording it. Every writer of the aliases runs in the `promotion` pool, one at a time."""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dagster as dg

from kernel import automation
from kernel.names import MODEL_GATES, PROMOTION_POOL
from kernel.pipeline import Pipeline
from kernel.records import ChampionRecord, ModelRecord, Rejected
from ml.promotion import (
    ROLLBACK_LIFTED_AT,
    Automatic,
    Candidate,
    Check,
    Decision,
    Evidence,
    decide,
    eligible,
    inputs_current,
    rollback_tags,
)
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking
from resources.verdicts import materialising_run, rejected_days

if TYPE_CHECKING:
    import pandas as pd


def now() -> str:
    """When a decision is recorded (microseconds: a rollback and its lifting may fall in one second)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def lineage(record: ModelRecord, run_id: str | None, mlflow: MlflowTracking) -> Check:
    """Whether a stored model record matches the run whose gates judged it and the registry version's tags."""
    tags = mlflow.version_tags(record.model_name, record.version)
    expected = {"dagster_run_id": run_id, "partition": record.partition, "pipeline": record.pipeline}
    found = {"dagster_run_id": record.dagster_run_id} | {k: tags.get(k, "<missing>") for k in expected}
    if record.dagster_run_id != run_id or any(tags.get(k) != v for k, v in expected.items()):
        return Check(
            False,
            f"its stored record or registry tags do not match the run {run_id} whose gates passed (found {found})",
        )
    return Check(True)


def recent_scores(pipeline: Pipeline, store: PartitionedParquetIOManager, until: str, days: int) -> "pd.DataFrame":
    """The backtest rows of the last `days` scored days on or before `until` (days not scored are skipped)."""
    import pandas as pd

    from ml import backtest

    keys = [key for key in pipeline.partitions_def.get_partition_keys() if key <= until]
    scored: list[pd.DataFrame] = []
    for key in reversed(keys):
        if len(scored) == days:
            break
        if store.exists(pipeline.key("backtest"), key) and isinstance(
            value := store.read(pipeline.key("backtest"), key), pd.DataFrame
        ):
            scored.append(value)
    return pd.concat(scored, ignore_index=True) if scored else pd.DataFrame(columns=backtest.SCORE_COLUMNS)


def judge_track_record(
    pipeline: Pipeline, store: PartitionedParquetIOManager, partition: str
) -> tuple[Check, dict[str, Any]]:
    """`promotion.track_record_days`: whether the out-of-sample record up to a candidate's day allows promoting it."""
    from ml import backtest

    days = pipeline.spec.promotion.track_record_days
    record = backtest.track_record(recent_scores(pipeline, store, partition, days), days)
    passed, reason = backtest.judge_track_record(record, days, pipeline.spec.promotion)
    scored = len(record.days) if record else 0
    observed: dict[str, Any] = {"track_record_days": days, "track_record_scored_days": scored}
    if record is not None:
        observed |= {
            "track_record_improvement": record.improvement,
            "track_record_mae": record.model_mae,
            "track_record_baseline_mae": record.baseline_mae,
            "track_record_champion_mae": record.champion_mae if record.champion_mae is not None else "not scored",
        }
    return Check(passed, reason), observed


def judge_inputs(pipeline: Pipeline, store: PartitionedParquetIOManager, record: ModelRecord) -> Check:
    """Whether the feature days a model trained on still hold the bytes it read (footers only)."""
    stored = store.fingerprints(pipeline.key("features"), list(record.features_fingerprints))
    return inputs_current(record.features_fingerprints, stored, pipeline.key("features").to_user_string())


def newest_candidates(
    instance: dg.DagsterInstance, pipeline: Pipeline, store: PartitionedParquetIOManager, mlflow: MlflowTracking
) -> tuple[Evidence, dict[str, Any]]:
    """The evidence for automatic promotion: model partitions newest first, down to the first one the decision
    considers (gates passed, never rolled back); that one's lineage and track record judged. Older partitions
    cannot matter: the decision takes the first eligible one or none."""
    key = pipeline.key("model")
    rollbacks = mlflow.rollbacks(pipeline.name)
    days = sorted(instance.get_materialized_partitions(key), reverse=True)
    rejected = rejected_days(instance, key, MODEL_GATES, store.fingerprints(key, days))
    gated = pipeline.spec.promotion.track_record_days > 0
    candidates: list[Candidate] = []
    observed: dict[str, Any] = {}
    for day in days:
        value = store.read(key, day)
        if isinstance(value, Rejected):
            candidates.append(Candidate("", day, Check(False, value.reason)))
            continue
        record = ModelRecord.model_validate(value)
        run_id = materialising_run(instance, key, day) if day not in rejected else None
        gates = Check(False, rejected.get(day, f"{key.to_user_string()} {day}: no materialisation on record"))
        candidate = Candidate(record.version, day, Check(True) if run_id is not None else gates)
        if eligible(candidate, rollbacks):
            track, observed = judge_track_record(pipeline, store, day) if gated else (None, {})
            candidates.append(
                Candidate(
                    record.version,
                    day,
                    candidate.gates,
                    lineage(record, run_id, mlflow),
                    track,
                    judge_inputs(pipeline, store, record),
                )
            )
            break
        candidates.append(candidate)
    evidence = Evidence(
        model_name=pipeline.name,
        aliases=mlflow.aliases(pipeline.name),
        candidates=candidates,
        rollbacks=rollbacks,
        track_record_required=gated,
    )
    return evidence, observed


def named_candidate(
    instance: dg.DagsterInstance,
    pipeline: Pipeline,
    store: PartitionedParquetIOManager,
    mlflow: MlflowTracking,
    version: str,
) -> Evidence:
    """The evidence for promoting one named version by hand: its partition's gate verdicts (only if that
    partition's current model is this version), its lineage and any rollback recorded on it."""
    key = pipeline.key("model")
    tags = mlflow.registered_version_tags(pipeline.name, version)
    candidates: list[Candidate] = []
    if tags is not None:
        day = tags.get("partition", "")
        value = store.read(key, day) if day and store.exists(key, day) else None
        stored = ModelRecord.model_validate(value) if value is not None and not isinstance(value, Rejected) else None
        if stored is None or stored.version != version:
            current = f"v{stored.version}" if stored else "none"
            why = f"its partition {day or '?'} holds no gated record of it (the current model there: {current})"
            candidates.append(Candidate(version, day, Check(False, why)))
        else:
            rejected = rejected_days(instance, key, MODEL_GATES, store.fingerprints(key, [day]))
            gates = Check(day not in rejected, rejected.get(day, ""))
            candidates.append(
                Candidate(
                    version,
                    day,
                    gates,
                    lineage(stored, materialising_run(instance, key, day), mlflow),
                    inputs=judge_inputs(pipeline, store, stored),
                )
            )
    return Evidence(
        model_name=pipeline.name,
        aliases=mlflow.aliases(pipeline.name),
        candidates=candidates,
        rollbacks=mlflow.rollbacks(pipeline.name),
    )


def carry_out(
    pipeline: Pipeline, mlflow: MlflowTracking, decision: Decision, audit: Mapping[str, str] | None = None
) -> ChampionRecord:
    """Do what the decision says, in an order that converges if interrupted: the rollback record first (a re-run
    finishes what it records), then the alias moves (each a compare-and-set), then the audit tags on the version
    promoted. Refused: nothing is written and the run fails with the decision's reasons."""
    if decision.outcome == "refuse":
        raise dg.Failure("; ".join(decision.reasons))
    if decision.record is not None:
        mlflow.check_aliases(pipeline.name, decision.moves)  # a stale decision records no rollback either
        mlflow.tag_version(pipeline.name, decision.record.version, rollback_tags(decision.record))
    mlflow.move_aliases(pipeline.name, decision.moves)
    if decision.version is not None and decision.moves and audit:
        lifted = {ROLLBACK_LIFTED_AT: audit["promoted_at"]} if decision.lift == decision.version else {}
        mlflow.tag_version(pipeline.name, decision.version, {**audit, **lifted})
    serving = mlflow.champion_record(pipeline.name)
    if serving is None:
        raise dg.Failure(f"{pipeline.name}: the registry has no champion alias right after the decision")
    return serving


def decision_metadata(decision: Decision, serving: ChampionRecord) -> dict[str, Any]:
    """What the champion's materialisation shows about a decision: what serves now, what moved and why."""
    candidate = decision.candidate
    return {
        "model_version": serving.version,
        "champion_partition": serving.partition,
        "previous_champion": serving.previous_champion or "none",
        "decision": decision.outcome,
        "alias_moved": bool(decision.moves),
        "reasons": dg.MetadataValue.json(list(decision.reasons)),
        **({"newest_passing_partition": candidate.partition} if candidate is not None else {}),
    }


def build_champion(pipeline: Pipeline) -> dg.AssetsDefinition:
    gated = pipeline.spec.promotion.track_record_days > 0

    @pipeline.asset(
        "champion",
        description=f"The {pipeline.name} model that serves predictions: the MLflow 'champion' alias.",
        kinds={"mlflow"},
        partitioned=False,
        # With the track-record gate on, promotion reads the backtest too, and follows its updates.
        deps=[pipeline.key("model"), *([pipeline.key("backtest")] if gated else [])],
        automation_condition=automation.after_upstream_update(),
        pool=PROMOTION_POOL,
    )
    def champion(
        context: dg.AssetExecutionContext,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> dg.Output[ChampionRecord]:
        """Points the MLflow 'champion' alias at the newest model partition whose gates passed, never an older or a
        rolled-back one."""
        evidence, track = newest_candidates(context.instance, pipeline, io_manager, mlflow)
        decision = decide(evidence, Automatic())
        serving = carry_out(pipeline, mlflow, decision)
        context.log.info("; ".join(decision.reasons))
        candidate = decision.candidate
        metadata = decision_metadata(decision, serving) | track
        if candidate is not None and candidate.track_record is not None and not candidate.track_record.passed:
            metadata["refused"] = decision.reasons[0]
        return dg.Output(serving, metadata=metadata)

    return champion
