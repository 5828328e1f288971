"""Small plots for MLflow artifacts and Dagster metadata: PNGs drawn with matplotlib, and a tiny SVG sparkline."""

from __future__ import annotations

import io

import numpy as np
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


def backtest(table: pd.DataFrame, overall: float | None, rolling_days: int) -> bytes:
    """Out-of-sample improvement over the baseline per forecast day (daily and rolling) and overall, with the
    in-window hold-out improvement of the model partitions as a secondary, dotted line."""

    def draw(axes) -> None:  # type: ignore[no-untyped-def]
        percent = 100 * table
        if "in_window_improvement" in table:
            axes.plot(
                table.index,
                percent["in_window_improvement"],
                linestyle=":",
                marker="o",
                markersize=4,
                color="grey",
                label="in-window",
            )
        if "improvement" in table and table["improvement"].notna().any():
            axes.plot(table.index, percent["improvement"], ".", markersize=3, alpha=0.4, label="out-of-sample, daily")
            rolling = f"improvement_{rolling_days}d"
            axes.plot(table.index, percent[rolling], linewidth=1.4, label=f"out-of-sample, {rolling_days}-day")
        if overall is not None:
            axes.axhline(100 * overall, linestyle="--", linewidth=0.8, label=f"out-of-sample overall {overall:.0%}")
        axes.axhline(0, color="black", linewidth=0.5)
        if len(table.index) == 1:  # a lone day: matplotlib's default date range would span years
            axes.set_xlim(table.index[0] - pd.Timedelta(days=3), table.index[0] + pd.Timedelta(days=3))
        axes.set_ylabel("% lower MAE than seasonal naive", fontsize=7)
        axes.legend(loc="lower left", fontsize=7)
        axes.tick_params(labelsize=7)

    return _render(draw, "Walk-forward backtest: improvement over the baseline")


ACTUAL_COLOR, FORECAST_COLOR = "#1f77b4", "#ff7f0e"  # matplotlib's first two, as in the PNG plots


def forecast_vs_actual_svg(day: pd.DataFrame, *, width: int = 320, height: int = 80, max_points: int = 24) -> str:
    """A tiny SVG of one day's actual (blue) and forecast (orange), summed over entities: small enough to sit inline
    in Dagster's metadata table. More than `max_points` timestamps are averaged into that many buckets."""
    series = day.groupby("timestamp")[["actual", "prediction"]].sum(min_count=1).sort_index()
    if len(series) > max_points:
        series = series.groupby(np.arange(len(series)) * max_points // len(series)).mean()
    values = series.to_numpy(dtype="float64")
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span, top, steps = (high - low) or 1.0, 12, max(len(series) - 1, 1)

    def polyline(column: int, color: str) -> str:
        points = " ".join(
            f"{round(i * (width - 1) / steps)},{round(top + (height - top - 1) * (high - v) / span)}"
            for i, v in enumerate(values[:, column])
            if np.isfinite(v)
        )
        return f'<polyline fill="none" stroke="{color}" points="{points}"/>' if points else ""

    legend = (
        f'<text x="0" y="9" font-size="9" fill="{ACTUAL_COLOR}">actual</text>'
        f'<text x="36" y="9" font-size="9" fill="{FORECAST_COLOR}">forecast</text>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">'
        f"{legend}{polyline(0, ACTUAL_COLOR)}{polyline(1, FORECAST_COLOR)}</svg>"
    )
