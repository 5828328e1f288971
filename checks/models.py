"""Model gates on `<p>/model`, a verdict per model partition: one that fails any gate never becomes champion."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from checks.emit import Verdict, emit, judge_days, multi_check, run_values
from kernel.names import BEATS_SEASONAL_NAIVE, FINITE_PREDICTIONS, NOT_WORSE_THAN_CHAMPION
from kernel.pipeline import Pipeline
from kernel.records import ModelRecord, Rejected
from kernel.spec import PromotionSpec
from resources.storage import PartitionedParquetIOManager


def beats_baseline(record: ModelRecord, min_improvement: float) -> bool:
    return record.metrics.mae <= (1 - min_improvement) * record.baseline.mae


def compared_mae(record: ModelRecord) -> float:
    """The candidate's MAE on the hours its champion was scored on (records written before champions were scored
    on part of the hold-out only carry the whole hold-out's)."""
    champion = record.champion
    return champion.candidate_mae if champion and champion.candidate_mae is not None else record.metrics.mae


def within_champion(record: ModelRecord, max_regression: float) -> bool:
    champion = record.champion
    if champion is None or not champion.comparable or champion.mae is None:
        return True
    return compared_mae(record) <= (1 + max_regression) * champion.mae


def _candidate(record: ModelRecord) -> dict[str, Any]:
    return {"candidate_partition": record.partition, "candidate_version": record.version}


def beats_seasonal_naive(candidate: ModelRecord, promotion: PromotionSpec) -> Verdict:
    passed = beats_baseline(candidate, promotion.min_improvement_over_baseline)
    reason = (
        ""
        if passed
        else f"hold-out MAE {candidate.metrics.mae:.3f} is not {promotion.min_improvement_over_baseline:.0%} "
        f"below seasonal naive's {candidate.baseline.mae:.3f}"
    )
    return Verdict(
        passed,
        reason,
        {
            **_candidate(candidate),
            "threshold": promotion.min_improvement_over_baseline,
            "observed_improvement": candidate.improvement_over_baseline,
            "mae": candidate.metrics.mae,
            "baseline_mae": candidate.baseline.mae,
        },
    )


def not_worse_than_champion(candidate: ModelRecord, promotion: PromotionSpec) -> Verdict:
    champion = candidate.champion
    passed = within_champion(candidate, promotion.max_regression_vs_champion)
    reason = (
        ""
        if passed
        else f"MAE {compared_mae(candidate):.3f} is more than {promotion.max_regression_vs_champion:.0%} worse than "
        f"champion v{champion.version if champion else '?'}'s {champion.mae if champion else '?'} on the same "
        f"{champion.hours if champion else '?'} hold-out hours"
    )
    return Verdict(
        passed,
        reason,
        {
            **_candidate(candidate),
            "threshold": promotion.max_regression_vs_champion,
            "mae": compared_mae(candidate),
            "compared_hours": champion.hours if champion and champion.hours is not None else "n/a",
            "champion_version": champion.version if champion else "none",
            "champion_mae": champion.mae if champion and champion.mae is not None else "n/a",
            "champion_comparable": champion.comparable if champion else "no champion yet",
            "note": (champion.reason if champion else None) or "",
        },
    )


def finite_predictions(candidate: ModelRecord) -> Verdict:
    passed = candidate.non_finite_predictions == 0
    return Verdict(
        passed,
        "" if passed else f"{candidate.non_finite_predictions} non-finite hold-out predictions",
        {
            **_candidate(candidate),
            "non_finite_predictions": candidate.non_finite_predictions,
            "holdout_rows": candidate.holdout_rows,
        },
    )


def stored_models(values: dict[str, Any]) -> dict[str, ModelRecord | Rejected]:
    """Stored model partitions as typed records (a rejected partition stays `Rejected`)."""
    return {day: v if isinstance(v, Rejected) else ModelRecord.model_validate(v) for day, v in values.items()}


def build(pipeline: Pipeline) -> dg.AssetChecksDefinition:
    promotion = pipeline.spec.promotion
    key = pipeline.key("model")
    specs = [
        pipeline.check_spec(
            "model",
            BEATS_SEASONAL_NAIVE,
            f"Per partition: hold-out MAE {promotion.min_improvement_over_baseline:.0%}+ below seasonal naive.",
        ),
        pipeline.check_spec(
            "model",
            NOT_WORSE_THAN_CHAMPION,
            f"Per partition: MAE within {promotion.max_regression_vs_champion:.0%} of the champion's, same window.",
        ),
        pipeline.check_spec("model", FINITE_PREDICTIONS, "Per partition: every hold-out prediction is finite."),
    ]

    @multi_check(f"{pipeline.name}_model_gates", specs)
    def model_gates(
        context: dg.AssetCheckExecutionContext, io_manager: dg.ResourceParam[PartitionedParquetIOManager]
    ) -> Iterator[Any]:
        """Promotion gates on each model partition of this run."""
        read = run_values(context, io_manager, key)
        models = stored_models(read.values)
        yield from emit(
            context,
            specs,
            {
                BEATS_SEASONAL_NAIVE: lambda: judge_days(models, lambda _, m: beats_seasonal_naive(m, promotion)),
                NOT_WORSE_THAN_CHAMPION: lambda: judge_days(models, lambda _, m: not_worse_than_champion(m, promotion)),
                FINITE_PREDICTIONS: lambda: judge_days(models, lambda _, m: finite_predictions(m)),
            },
            read.fingerprints,
        )

    return model_gates
