"""Model gates on `<p>/model`, all blocking: a candidate that fails any of them never becomes champion.

Each gate judges the promotion candidate (the newest day of the run) and lists every day in metadata.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from checks.emit import Judgement, emit, multi_check, run_values
from kernel.names import BEATS_SEASONAL_NAIVE, FINITE_PREDICTIONS, NOT_WORSE_THAN_CHAMPION
from kernel.pipeline import Pipeline
from kernel.records import ModelRecord
from kernel.spec import PromotionSpec
from resources.storage import PartitionedParquetIOManager


def beats_baseline(record: ModelRecord, min_improvement: float) -> bool:
    return record.metrics.mae <= (1 - min_improvement) * record.baseline.mae


def within_champion(record: ModelRecord, max_regression: float) -> bool:
    champion = record.champion
    if champion is None or not champion.comparable or champion.mae is None:
        return True
    return record.metrics.mae <= (1 + max_regression) * champion.mae


def _candidate(record: ModelRecord) -> dict[str, Any]:
    return {"candidate_partition": record.partition, "candidate_version": record.version}


def beats_seasonal_naive(models: dict[str, ModelRecord], candidate: ModelRecord, promotion: PromotionSpec) -> Judgement:
    by_day = {d: beats_baseline(r, promotion.min_improvement_over_baseline) for d, r in models.items()}
    return by_day[candidate.partition], {
        **_candidate(candidate),
        "threshold": promotion.min_improvement_over_baseline,
        "observed_improvement": candidate.improvement_over_baseline,
        "mae": candidate.metrics.mae,
        "baseline_mae": candidate.baseline.mae,
        "days_passing": sum(by_day.values()),
        "days": len(by_day),
    }


def not_worse_than_champion(candidate: ModelRecord, promotion: PromotionSpec) -> Judgement:
    champion = candidate.champion
    return within_champion(candidate, promotion.max_regression_vs_champion), {
        **_candidate(candidate),
        "threshold": promotion.max_regression_vs_champion,
        "mae": candidate.metrics.mae,
        "champion_version": champion.version if champion else "none",
        "champion_mae": champion.mae if champion and champion.mae is not None else "n/a",
        "champion_comparable": champion.comparable if champion else "no champion yet",
        "note": (champion.reason if champion else None) or "",
    }


def finite_predictions(candidate: ModelRecord) -> Judgement:
    return candidate.non_finite_predictions == 0, {
        **_candidate(candidate),
        "non_finite_predictions": candidate.non_finite_predictions,
        "holdout_rows": candidate.holdout_rows,
    }


def build(pipeline: Pipeline) -> dg.AssetChecksDefinition:
    promotion = pipeline.spec.promotion
    key = pipeline.key("model")
    specs = [
        dg.AssetCheckSpec(
            BEATS_SEASONAL_NAIVE,
            asset=key,
            blocking=True,
            description=f"Hold-out MAE {promotion.min_improvement_over_baseline:.0%}+ below seasonal naive.",
        ),
        dg.AssetCheckSpec(
            NOT_WORSE_THAN_CHAMPION,
            asset=key,
            blocking=True,
            description=f"MAE within {promotion.max_regression_vs_champion:.0%} of the champion's, same window.",
        ),
        dg.AssetCheckSpec(
            FINITE_PREDICTIONS, asset=key, blocking=True, description="Every hold-out prediction is finite."
        ),
    ]

    @multi_check(f"{pipeline.name}_model_gates", specs)
    def model_gates(
        context: dg.AssetCheckExecutionContext, io_manager: dg.ResourceParam[PartitionedParquetIOManager]
    ) -> Iterator[dg.AssetCheckResult]:
        """Promotion gates on the newest candidate of this run."""
        models = ModelRecord.many(run_values(context, io_manager, key))
        candidate = models[max(models)]
        yield from emit(
            context,
            specs,
            {
                BEATS_SEASONAL_NAIVE: lambda: beats_seasonal_naive(models, candidate, promotion),
                NOT_WORSE_THAN_CHAMPION: lambda: not_worse_than_champion(candidate, promotion),
                FINITE_PREDICTIONS: lambda: finite_predictions(candidate),
            },
        )

    return model_gates
