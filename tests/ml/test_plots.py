"""The predictions' small picture: a valid SVG that stays short enough for the Dagster UI to draw it in place."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kernel.metadata import INLINE_MARKDOWN_LIMIT, picture, svg_markdown
from ml import backtest, plots

SVG = "{http://www.w3.org/2000/svg}"


def day(periods: int, freq: str, entities: int = 1, actual: float | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    stamps = pd.date_range("2012-06-30", periods=periods, freq=freq)
    frames = [
        pd.DataFrame(
            {
                "timestamp": stamps,
                "actual": rng.uniform(0, 1000, periods) if actual is None else actual,
                "prediction": rng.uniform(0, 1000, periods),
            }
        )
        for _ in range(entities)
    ]
    return pd.concat(frames, ignore_index=True)


def lines(svg: str) -> dict[str, list[tuple[int, int]]]:
    """Stroke colour -> the polyline's points, from the parsed SVG."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return {
        line.attrib["stroke"]: [tuple(map(int, p.split(","))) for p in line.attrib["points"].split()]  # type: ignore[misc]
        for line in root.iter(f"{SVG}polyline")
    }


@pytest.mark.parametrize(("periods", "freq", "entities"), [(24, "h", 1), (23, "h", 3), (96, "15min", 5)])
def test_a_day_is_two_lines_short_enough_to_sit_inline(periods: int, freq: str, entities: int) -> None:
    svg = plots.forecast_vs_actual_svg(day(periods, freq, entities))
    drawn = lines(svg)
    assert set(drawn) == {plots.ACTUAL_COLOR, plots.FORECAST_COLOR}
    assert all(len(points) == min(periods, 24) for points in drawn.values())
    assert all(0 <= x < 320 and 0 <= y < 80 for points in drawn.values() for x, y in points)
    markdown = str(svg_markdown(svg, "forecast vs actual, 2012-06-30", "2012-06-30, hourly").value)
    assert len(markdown) < INLINE_MARKDOWN_LIMIT
    encoded = markdown.split("base64,", 1)[1].split(")", 1)[0]
    assert base64.b64decode(encoded).decode() == svg


def test_the_lines_follow_the_values() -> None:
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2012-06-30", periods=3, freq="h"),
            "actual": [0.0, 10, 5],
            "prediction": [10.0, 0, 5],
        }
    )
    drawn = lines(plots.forecast_vs_actual_svg(frame))
    actual, forecast = drawn[plots.ACTUAL_COLOR], drawn[plots.FORECAST_COLOR]
    assert [x for x, _ in actual] == [0, 160, 319]
    assert actual[0][1] == forecast[1][1] == 79  # the lowest value at the bottom
    assert actual[1][1] == forecast[0][1] == 12  # the highest just under the legend
    assert actual[2][1] == forecast[2][1]


def test_unknown_actuals_leave_only_the_forecast() -> None:
    drawn = lines(plots.forecast_vs_actual_svg(day(24, "h", actual=float("nan"))))
    assert set(drawn) == {plots.FORECAST_COLOR}


def test_a_picture_is_its_url_when_there_is_one_else_the_png_itself() -> None:
    png = b"\x89PNG not really"
    assert (
        picture("residuals", png, "http://mlflow/get-artifact?x=1").value
        == "![residuals](http://mlflow/get-artifact?x=1)"
    )
    inline = str(picture("residuals", png, None).value)
    assert inline == f"![residuals](data:image/png;base64,{base64.b64encode(png).decode()})"


def test_the_backtest_plot_draws_with_and_without_out_of_sample_days() -> None:
    rows = [
        {"day": str(date(2024, 1, 1) + timedelta(days=k)), "partition": "p", "version": "1", "horizon_days": 1}
        | {"champion": False, "passed_gates": True, "rows": 24, "excluded_rows": 0, "mae": 5.0 + k % 3}
        | {"baseline_mae": 10.0}
        for k in range(40)
    ]
    table = backtest.summary(pd.DataFrame(rows, columns=backtest.SCORE_COLUMNS))
    table["in_window_improvement"] = 0.3
    png = plots.backtest(table, 0.4, backtest.ROLLING_DAYS)
    assert png.startswith(b"\x89PNG")
    in_window_only = table[["in_window_improvement"]]
    assert plots.backtest(in_window_only, None, backtest.ROLLING_DAYS).startswith(b"\x89PNG")


def test_a_lone_in_window_day_is_drawn_on_a_days_wide_axis(monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.dates import num2date
    from matplotlib.figure import Figure

    drawn: list[tuple[float, float]] = []
    save = Figure.savefig

    def recording_savefig(figure: Figure, *args: Any, **kwargs: Any) -> None:
        drawn.append(figure.axes[0].get_xlim())
        save(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    lone = pd.DataFrame({"in_window_improvement": [0.25]}, index=pd.to_datetime(["2024-03-10"]))
    assert plots.backtest(lone, None, backtest.ROLLING_DAYS).startswith(b"\x89PNG")
    low, high = (num2date(x).date() for x in drawn[0])
    assert (low, high) == (date(2024, 3, 7), date(2024, 3, 13))
