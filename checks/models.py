"""Model gates on `<p>/model`, all blocking: a candidate that fails any of them never becomes champion.

Each gate judges the promotion candidate (the newest day of the run) and lists every day in metadata.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from platform_assets.pipeline import Pipeline, run_values
from resources.storage import PartitionedParquetIOManager

BEATS_SEASONAL_NAIVE = "beats_seasonal_naive"
NOT_WORSE_THAN_CHAMPION = "not_worse_than_champion"
FINITE_PREDICTIONS = "finite_predictions"


def beats_baseline(record: dict[str, Any], min_improvement: float) -> bool:
    return record["metrics"]["mae"] <= (1 - min_improvement) * record["baseline"]["mae"]


def within_champion(record: dict[str, Any], max_regression: float) -> bool:
    champion = record.get("champion")
    if not champion or not champion.get("comparable"):
        return True
    return record["metrics"]["mae"] <= (1 + max_regression) * champion["mae"]


def build(pipeline: Pipeline) -> dg.AssetChecksDefinition:
    promotion = pipeline.spec.promotion
    key = pipeline.key("model")

    @dg.multi_asset_check(
        name=f"{pipeline.name}_model_gates",
        specs=[
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
        ],
        can_subset=True,
    )
    def model_gates(
        context: dg.AssetCheckExecutionContext, io_manager: dg.ResourceParam[PartitionedParquetIOManager]
    ) -> Iterator[dg.AssetCheckResult]:
        """Promotion gates on the newest candidate of this run."""
        model: dict[str, dict[str, Any]] = run_values(context, io_manager, key)
        selected = {k.name for k in context.selected_asset_check_keys}
        candidate = model[max(model)]
        base = {"candidate_partition": candidate["partition"], "candidate_version": candidate["version"]}
        if BEATS_SEASONAL_NAIVE in selected:
            by_day = {d: beats_baseline(r, promotion.min_improvement_over_baseline) for d, r in model.items()}
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=BEATS_SEASONAL_NAIVE,
                passed=by_day[candidate["partition"]],
                metadata={
                    **base,
                    "threshold": promotion.min_improvement_over_baseline,
                    "observed_improvement": 1 - candidate["metrics"]["mae"] / candidate["baseline"]["mae"],
                    "mae": candidate["metrics"]["mae"],
                    "baseline_mae": candidate["baseline"]["mae"],
                    "days_passing": sum(by_day.values()),
                    "days": len(by_day),
                },
            )
        if NOT_WORSE_THAN_CHAMPION in selected:
            champion = candidate.get("champion") or {}
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=NOT_WORSE_THAN_CHAMPION,
                passed=within_champion(candidate, promotion.max_regression_vs_champion),
                metadata={
                    **base,
                    "threshold": promotion.max_regression_vs_champion,
                    "mae": candidate["metrics"]["mae"],
                    "champion_version": champion.get("version", "none"),
                    "champion_mae": champion.get("mae", "n/a"),
                    "champion_comparable": champion.get("comparable", "no champion yet"),
                    "note": champion.get("reason", ""),
                },
            )
        if FINITE_PREDICTIONS in selected:
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=FINITE_PREDICTIONS,
                passed=candidate["non_finite_predictions"] == 0,
                metadata={
                    **base,
                    "non_finite_predictions": candidate["non_finite_predictions"],
                    "holdout_rows": candidate["holdout_rows"],
                },
            )

    return model_gates
