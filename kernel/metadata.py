"""Dagster metadata helpers shared by assets and checks."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import dagster as dg

from kernel.schema import TIMESTAMP

if TYPE_CHECKING:
    import pandas as pd


def table_schema(frame: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(str(name), str(dtype)) for name, dtype in frame.dtypes.items()])


def frame_metadata(frame: pd.DataFrame) -> dict[str, Any]:
    """Row count, schema and time range of a frame."""
    metadata: dict[str, Any] = {
        "dagster/row_count": len(frame),
        "dagster/column_schema": table_schema(frame),
    }
    if TIMESTAMP in frame.columns and len(frame):
        metadata["time_range"] = f"{frame[TIMESTAMP].min()} .. {frame[TIMESTAMP].max()}"
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
