"""Model gates on `<p>/model`, a verdict per model partition: one that fails any gate never becomes champion.

The verdicts themselves come from the promotion decision's module (`ml.promotion.judge_gates`); this adds what
each check shows (threshold, observed values).
"""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from checks.emit import emit, multi_check, run_chunks
from kernel.names import BEATS_SEASONAL_NAIVE, FINITE_PREDICTIONS, NOT_WORSE_THAN_CHAMPION
from kernel.pipeline import Pipeline
from kernel.records import ModelRecord, Rejected
from kernel.spec import PromotionSpec
from ml.promotion import compared_mae, judge_gates
from ml.quality import Verdict, judge_days
from resources.storage import PartitionedParquetIOManager


def _candidate(record: ModelRecord) -> dict[str, Any]:
    return {"candidate_partition": record.partition, "candidate_version": record.version}


def beats_seasonal_naive(candidate: ModelRecord, promotion: PromotionSpec) -> Verdict:
    gate = judge_gates(candidate, promotion)[BEATS_SEASONAL_NAIVE]
    return Verdict(
        gate.passed,
        gate.reason,
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
    gate = judge_gates(candidate, promotion)[NOT_WORSE_THAN_CHAMPION]
    return Verdict(
        gate.passed,
        gate.reason,
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


def finite_predictions(candidate: ModelRecord, promotion: PromotionSpec) -> Verdict:
    gate = judge_gates(candidate, promotion)[FINITE_PREDICTIONS]
    return Verdict(
        gate.passed,
        gate.reason,
        {
            **_candidate(candidate),
            "non_finite_predictions": candidate.non_finite_predictions,
            "holdout_rows": candidate.holdout_rows,
        },
    )


def stored_models(values: Mapping[str, Any]) -> dict[str, ModelRecord | Rejected]:
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

    @multi_check(f"{pipeline.name}_model_gates", specs, pipeline.pool("model"))
    def model_gates(
        context: dg.AssetCheckExecutionContext, io_manager: dg.ResourceParam[PartitionedParquetIOManager]
    ) -> Iterator[Any]:
        """Promotion gates on each model partition of this run."""
        gates = {
            BEATS_SEASONAL_NAIVE: beats_seasonal_naive,
            NOT_WORSE_THAN_CHAMPION: not_worse_than_champion,
            FINITE_PREDICTIONS: finite_predictions,
        }
        yield from emit(
            context,
            specs,
            run_chunks(context, io_manager, key, typed=stored_models),
            {
                name: lambda days, gate=gate: judge_days(days, lambda _, m: gate(m, promotion))
                for name, gate in gates.items()
            },
        )

    return model_gates
