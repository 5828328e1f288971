"""Small PNG plots for MLflow artifacts and Dagster metadata."""

from __future__ import annotations

import io

import pandas as pd


def _render(draw, title: str) -> bytes:  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3), dpi=80)
    try:
        draw(axes)
        axes.set_title(title)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)


def forecast_vs_actual(holdout: pd.DataFrame) -> bytes:
    """Actual, forecast and baseline over the hold-out (summed over entities)."""
    series = holdout.groupby("timestamp")[["actual", "forecast", "baseline"]].sum()

    def draw(axes) -> None:  # type: ignore[no-untyped-def]
        axes.plot(series.index, series["actual"], label="actual", linewidth=1.2)
        axes.plot(series.index, series["forecast"], label="forecast", linewidth=1.0)
        axes.plot(series.index, series["baseline"], label="seasonal naive", linewidth=0.8, linestyle=":")
        axes.legend(loc="upper left", fontsize=7)
        axes.tick_params(labelsize=7)

    return _render(draw, "Forecast vs actual (hold-out)")


def residuals(holdout: pd.DataFrame) -> bytes:
    """Histogram of forecast errors."""
    errors = holdout["forecast"] - holdout["actual"]
    return _render(lambda axes: axes.hist(errors, bins=30), "Residuals (forecast - actual)")


def importance(importances: dict[str, float], top: int = 15) -> bytes:
    """Horizontal bars of the largest permutation importances."""
    ranked = sorted(importances.items(), key=lambda item: item[1])[-top:]

    def draw(axes) -> None:  # type: ignore[no-untyped-def]
        axes.barh([name for name, _ in ranked], [value for _, value in ranked])
        axes.tick_params(labelsize=7)

    return _render(draw, "Permutation importance (MAE increase)")


def backtest(table: pd.DataFrame) -> bytes:
    """Hold-out MAE per model partition against the seasonal-naive baseline."""

    def draw(axes) -> None:  # type: ignore[no-untyped-def]
        axes.plot(table.index, table["mae"], marker=".", label="model")
        axes.plot(table.index, table["baseline_mae"], marker=".", linestyle=":", label="seasonal naive")
        axes.legend(loc="upper left", fontsize=7)
        axes.tick_params(labelsize=7)

    return _render(draw, "Walk-forward hold-out MAE")
