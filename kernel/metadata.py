"""Dagster metadata helpers shared by assets and checks."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import dagster as dg

from kernel.frames import FrameShape

if TYPE_CHECKING:
    import pandas as pd


# Days a run's summary lists at most. Dagster copies a range output's metadata onto every partition's materialisation,
# so a map of all the run's days there would grow each of its events with the range; each day's own event carries its
# entry instead (`per_day`).
MAX_LISTED_DAYS = 50


def listed_days(by_day: Mapping[str, Any]) -> dg.MetadataValue:
    """The first `MAX_LISTED_DAYS` days of a per-day map, oldest first, for a run's summary."""
    return dg.MetadataValue.json(dict(sorted(by_day.items())[:MAX_LISTED_DAYS]))


def per_day(context: dg.AssetExecutionContext, name: str, by_day: Mapping[str, Any]) -> None:
    """Each day's entry of a per-day map as `name` (`<what>_this_day`) on that day's own materialisation."""
    for day, value in by_day.items():
        context.add_asset_metadata({name: value}, partition_key=day)


def frame_metadata(frame: pd.DataFrame) -> dict[str, Any]:
    """Row count, schema and time range of a frame."""
    return shape_metadata(FrameShape.of(frame))


def shape_metadata(shape: FrameShape) -> dict[str, Any]:
    """Row count, schema and time range of frames known by their shape (written by Ray tasks, not held here)."""
    columns = [dg.TableColumn(name, dtype) for name, dtype in shape.columns]
    metadata: dict[str, Any] = {
        "dagster/row_count": shape.rows,
        "dagster/column_schema": dg.TableSchema(columns=columns),
    }
    if shape.first is not None:
        metadata["time_range"] = f"{shape.first} .. {shape.last}"
    return metadata


# The Dagster UI draws a markdown metadata value in place on the asset's Overview and Events when it is shorter than
# this, and behind a "[Show Markdown]" link (a dialog) otherwise (ui-core's MetadataEntry.tsx, `expandSmallValues`).
INLINE_MARKDOWN_LIMIT = 1000


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG carried in the metadata itself: the UI shows it in a dialog, one click away (too long to sit inline)."""
    encoded = base64.b64encode(png).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")


def picture(alt: str, png: bytes, url: str | None) -> dg.MetadataValue:
    """A plot the UI shows in place: the image at `url` (short markdown), or the PNG itself when there is no URL."""
    return dg.MetadataValue.md(f"![{alt}]({url})") if url else png_markdown(png, alt)


def svg_markdown(svg: str, alt: str, caption: str = "") -> dg.MetadataValue:
    """A small SVG carried in the metadata, short enough (see `INLINE_MARKDOWN_LIMIT`) to be drawn in place."""
    encoded = base64.b64encode(svg.encode()).decode()
    image = f"![{alt}](data:image/svg+xml;base64,{encoded})"
    return dg.MetadataValue.md(f"{image}\n\n{caption}" if caption else image)
