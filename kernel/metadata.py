"""Dagster metadata helpers shared by assets and checks."""

from __future__ import annotations

import base64
from typing import Any

import dagster as dg
import pandas as pd

from kernel.schema import TIMESTAMP


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


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    """An inline PNG, rendered by the Dagster UI's markdown viewer."""
    encoded = base64.b64encode(png).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")
