"""What the per-day checks of features and predictions decide about one day's frame, without Dagster.

The same functions judge a day wherever its frame is: in the Ray task that builds and writes it (the writer's
verdicts, which the run's check step records), and in a check step that reads the stored bytes back (a check run
alone, or a day no writer judged). A verdict's metadata holds plain values (numbers, strings, lists, dicts), so it
travels back from a Ray task and into a Dagster record unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kernel.names import COMPLETE, FINITE_NON_NEGATIVE, FINITE_VALUES, NO_DRIFT, PLAUSIBLE_RANGE, SCHEMA_STABLE
from kernel.records import Rejected
from kernel.spec import PipelineSpec

if TYPE_CHECKING:
    import pandas as pd

    from ml.features import ReferenceBins

# A feature's population stability index above which its day is flagged as drifted.
PSI_WARN = 0.25
# Predictions above this multiple of the largest known actual (no spec max) are implausible.
PLAUSIBLE_FACTOR = 3.0


@dataclass(frozen=True)
class Verdict:
    """A check's judgement of one day: whether it passed, why not, and what it observed (threshold, values); a passing
    day may still reject some of its series (label -> reason), which the day gate leaves out downstream."""

    passed: bool
    reason: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    rejected_series: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The verdict as plain JSON (a writer's verdicts travel in its materialisation's metadata)."""
        return {
            "passed": self.passed,
            "reason": self.reason,
            "metadata": self.metadata,
            "rejected_series": self.rejected_series,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Verdict:
        return cls(
            passed=bool(document["passed"]),
            reason=str(document.get("reason", "")),
            metadata=dict(document.get("metadata", {})),
            rejected_series={str(k): str(v) for k, v in dict(document.get("rejected_series", {})).items()},
        )


# How a check judges one day's value (day, value).
Judge = Callable[[str, Any], Verdict]


def judge_days(values: Mapping[str, Any], judge: Judge) -> dict[str, Verdict]:
    """One verdict per day; a day that was not built (`Rejected`) fails with the reason it was not built."""
    return {
        day: Verdict(False, value.reason) if isinstance(value, Rejected) else judge(day, value)
        for day, value in values.items()
    }


def finite_values(frame: pd.DataFrame, spec: PipelineSpec) -> Verdict:
    """Every numeric feature of the day is finite (no NaN or infinity)."""
    from ml import features as feature_fns

    counts = {c: n for c, n in feature_fns.non_finite_counts(frame, spec).items() if n}
    reason = f"non-finite values in {sorted(counts)}" if counts else ""
    return Verdict(not counts, reason, {"rows": len(frame), "non_finite_by_column": counts})


def schema_stable(frame: pd.DataFrame, expected: Mapping[str, str]) -> Verdict:
    """The day's columns and dtypes are the spec's schema (`expected`: column -> dtype)."""
    actual = {c: str(t) for c, t in frame.dtypes.items()}
    differs = {c: [actual.get(c), t] for c, t in expected.items() if actual.get(c) != t}
    differs |= {c: [t, None] for c, t in actual.items() if c not in expected}
    reason = f"columns/dtypes differ from the spec's schema: {differs}" if differs else ""
    return Verdict(not differs, reason, {"columns": len(actual), "differs": differs})


def no_drift(frame: pd.DataFrame, reference: Mapping[str, ReferenceBins] | None) -> Verdict:
    """The day's population stability per feature against the reference window, binned once per run (column ->
    bins, `reference_window`)."""
    from ml import features as feature_fns

    if reference is None or frame.empty:
        return Verdict(True, metadata={"note": "no reference window before this run"})
    psi = {c: feature_fns.population_stability(bins, frame[c]) for c, bins in reference.items()}
    drifted = sorted(c for c, v in psi.items() if v > PSI_WARN)
    return Verdict(
        not drifted,
        f"PSI above {PSI_WARN} for {drifted}" if drifted else "",
        {"threshold": PSI_WARN, "psi": {c: round(v, 4) for c, v in psi.items()}},
    )


def reference_window(frame: pd.DataFrame | None, spec: PipelineSpec) -> dict[str, ReferenceBins] | None:
    """Each numeric feature of the reference window binned for `no_drift` (None: no window before the run)."""
    from ml import features as feature_fns

    if frame is None:
        return None
    return {c: feature_fns.reference_bins(frame[c]) for c in feature_fns.numeric_feature_columns(spec)}


def judge_features(
    frame: pd.DataFrame, spec: PipelineSpec, reference: Mapping[str, ReferenceBins] | None
) -> dict[str, Verdict]:
    """Every features check's verdict on one day's frame (check name -> verdict)."""
    from ml.features import feature_schema

    return {
        FINITE_VALUES: finite_values(frame, spec),
        SCHEMA_STABLE: schema_stable(frame, feature_schema(spec)),
        NO_DRIFT: no_drift(frame, reference),
    }


def complete(predictions: pd.DataFrame, feature_rows: int | None) -> Verdict:
    """One prediction per feature row (`feature_rows`: the day's feature rows; None: no frame stored)."""
    expected = feature_rows or 0
    passed = len(predictions) == expected
    reason = "" if passed else f"{len(predictions)} predictions for {expected} feature rows"
    return Verdict(passed, reason, {"rows": len(predictions), "feature_rows": expected})


def finite_non_negative(predictions: pd.DataFrame) -> Verdict:
    """Every prediction is finite and not negative."""
    import numpy as np

    values = predictions["prediction"].to_numpy(dtype="float64")
    bad = int((~np.isfinite(values) | (values < 0)).sum())
    return Verdict(bad == 0, f"{bad} predictions are negative or not finite" if bad else "", {"bad_values": bad})


def plausible_range(predictions: pd.DataFrame, ceiling: float | None) -> Verdict:
    """No prediction above `ceiling` (the spec's max of the target) or, without one, `PLAUSIBLE_FACTOR` times the
    largest known actual."""
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


def prediction_ceiling(spec: PipelineSpec) -> float | None:
    """The spec's max of the target, if its expectations set one (`plausible_range`'s ceiling)."""
    rule = spec.expectations.columns.get(spec.target)
    return rule.max if rule is not None and rule.max is not None else None


def judge_predictions(predictions: pd.DataFrame, feature_rows: int | None, spec: PipelineSpec) -> dict[str, Verdict]:
    """Every predictions check's verdict on one day's forecasts (check name -> verdict)."""
    return {
        COMPLETE: complete(predictions, feature_rows),
        FINITE_NON_NEGATIVE: finite_non_negative(predictions),
        PLAUSIBLE_RANGE: plausible_range(predictions, prediction_ceiling(spec)),
    }
