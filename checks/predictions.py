"""Checks on `<p>/predictions`: complete, finite and non-negative, and in a plausible range."""

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import dagster as dg

from checks.emit import Verdict, emit, judge_days, multi_check, run_chunks
from kernel.names import COMPLETE, FINITE_NON_NEGATIVE, PLAUSIBLE_RANGE
from kernel.pipeline import Pipeline
from resources.storage import PartitionedParquetIOManager

if TYPE_CHECKING:
    import pandas as pd

PLAUSIBLE_FACTOR = 3.0


def complete(predictions: "pd.DataFrame", feature_rows: int | None) -> Verdict:
    """One prediction per feature row (`feature_rows`: the day's stored feature rows; None: no frame stored)."""
    expected = feature_rows or 0
    passed = len(predictions) == expected
    reason = "" if passed else f"{len(predictions)} predictions for {expected} feature rows"
    return Verdict(passed, reason, {"rows": len(predictions), "feature_rows": expected})


def finite_non_negative(predictions: "pd.DataFrame") -> Verdict:
    import numpy as np

    values = predictions["prediction"].to_numpy(dtype="float64")
    bad = int((~np.isfinite(values) | (values < 0)).sum())
    return Verdict(bad == 0, f"{bad} predictions are negative or not finite" if bad else "", {"bad_values": bad})


def plausible_range(predictions: "pd.DataFrame", ceiling: float | None) -> Verdict:
    import numpy as np

    values = predictions["prediction"].to_numpy(dtype="float64")
    actual = predictions["actual"].to_numpy(dtype="float64")
    known = actual[~np.isnan(actual)]  # hours the source left empty say nothing about the range
    if ceiling is None and len(values) and not len(known):
        return Verdict(True, metadata={"note": "no known actuals and no spec max to compare with"})
    limit = ceiling if ceiling is not None else PLAUSIBLE_FACTOR * (float(known.max()) if len(known) else 0.0)
    observed = float(values.max()) if len(values) else 0.0
    passed = observed <= limit
    return Verdict(
        passed,
        "" if passed else f"largest prediction {observed:.1f} > {limit:.1f}",
        {"limit": limit, "max_prediction": observed},
    )


def build(pipeline: Pipeline) -> dg.AssetChecksDefinition:
    spec = pipeline.spec
    key = pipeline.key("predictions")
    target_rule = spec.expectations.columns.get(spec.target)
    ceiling = target_rule.max if target_rule and target_rule.max is not None else None
    specs = [
        pipeline.check_spec(
            "predictions",
            COMPLETE,
            "Per day: one prediction per feature row.",
            additional_deps=[pipeline.key("features")],
        ),
        pipeline.check_spec(
            "predictions", FINITE_NON_NEGATIVE, "Per day: every prediction is finite and not negative."
        ),
        pipeline.check_spec(
            "predictions",
            PLAUSIBLE_RANGE,
            f"Per day: predictions stay below {PLAUSIBLE_FACTOR}x the largest actual (or the spec's max).",
        ),
    ]

    @multi_check(f"{pipeline.name}_predictions_checks", specs, pipeline.pool("predictions"))
    def predictions_checks(
        context: dg.AssetCheckExecutionContext,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> Iterator[Any]:
        """Completeness, finiteness and range of each day of this run."""

        def completeness(days: Mapping[str, Any]) -> dict[str, Verdict]:
            feature_rows = io_manager.row_counts(pipeline.key("features"), list(days))
            return judge_days(days, lambda day, frame: complete(frame, feature_rows.get(day)))

        yield from emit(
            context,
            specs,
            run_chunks(context, io_manager, key),
            {
                COMPLETE: completeness,
                FINITE_NON_NEGATIVE: lambda days: judge_days(days, lambda _, frame: finite_non_negative(frame)),
                PLAUSIBLE_RANGE: lambda days: judge_days(days, lambda _, frame: plausible_range(frame, ceiling)),
            },
        )

    return predictions_checks
