"""Messy files made from the shipped datasets, as real exports write them (issue 16's table).

Beijing PM2.5 is hourly Beijing time, a zone without DST, so its rows are one continuous hourly series of instants:
re-written as Berlin wall-clock time they are what a European logger exports (the spring day has 23 rows and no
02:00, the autumn day writes 02:00 twice, in order). The UCI bike file is already such an export, in New York time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from conftest import AIR_CSV, AIR_SPEC, BIKE_CSV, BIKE_SPEC

from kernel.spec import PipelineSpec

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
# 2012 in Berlin: clocks jump 02:00 -> 03:00 on 25 March and fall back 03:00 -> 02:00 on 28 October.
SPRING, AUTUMN = "2012-03-25", "2012-10-28"
# The bike file (New York time): hour 2 is missing on 13 March 2011; 6 November 2011 writes hour 1 once.
BIKE_SPRING, BIKE_AUTUMN = "2011-03-13", "2011-11-06"
# Washington D.C. holidays the UCI file flags (holiday = 1), by name: how a real export marks them as text.
HOLIDAYS = {
    "1/17/11": "Martin Luther King Jr. Day",
    "2/21/11": "Washington's Birthday",
    "4/15/11": "Emancipation Day",
    "5/30/11": "Memorial Day",
    "7/4/11": "Independence Day",
    "9/5/11": "Labor Day",
    "10/10/11": "Columbus Day",
    "11/11/11": "Veterans Day",
    "11/24/11": "Thanksgiving Day",
    "12/26/11": "Christmas Day (observed)",
    "1/2/12": "New Year's Day (observed)",
    "1/16/12": "Martin Luther King Jr. Day",
    "2/20/12": "Washington's Birthday",
    "4/16/12": "Emancipation Day (observed)",
    "5/28/12": "Memorial Day",
    "7/4/12": "Independence Day",
    "9/3/12": "Labor Day",
    "10/8/12": "Columbus Day",
    "11/12/12": "Veterans Day (observed)",
    "11/22/12": "Thanksgiving Day",
    "12/25/12": "Christmas Day",
}


def air_document(**source: Any) -> dict[str, Any]:
    """The shipped air-quality spec as a dict, its `source` section updated."""
    document = yaml.safe_load(AIR_SPEC.read_text())
    document["source"] = {**document["source"], **source}
    return document


def bike_document(**source: Any) -> dict[str, Any]:
    """The shipped bike spec as a dict, its `source` section updated."""
    document = yaml.safe_load(BIKE_SPEC.read_text())
    document["source"] = {**document["source"], **source}
    return document


def beijing_instants(air: pd.DataFrame) -> pd.Series:
    """The Beijing file's rows as UTC instants."""
    local = pd.to_datetime(air[["year", "month", "day", "hour"]])
    return local.dt.tz_localize("Asia/Shanghai").dt.tz_convert("UTC")


def berlin_export(first: str = "2012-03-20", last: str = "2012-11-02") -> pd.DataFrame:
    """Beijing rows whose Berlin local day is in [first, last], timestamped in Berlin wall-clock time without an
    offset (`time`), plus each row's true instant (`instant`, not a source column) to check readers against."""
    air = pd.read_csv(AIR_CSV)
    instants = beijing_instants(air)
    local = instants.dt.tz_convert(BERLIN)
    days = local.dt.strftime("%Y-%m-%d")
    keep = (days >= first) & (days <= last)
    out = air[keep].drop(columns=["No", "year", "month", "day", "hour"]).reset_index(drop=True)
    out.insert(0, "time", local[keep].dt.strftime("%Y-%m-%d %H:%M").to_numpy())
    out["instant"] = instants[keep].to_numpy()
    return out


def berlin_spec(partition_zone: str = BERLIN, **source: Any) -> PipelineSpec:
    """The air spec reading `berlin_export` files: naive Berlin times, partitions in `partition_zone`."""
    naive = {"timestamp": {"column": "time", "format": "%Y-%m-%d %H:%M"}, "timezone": BERLIN}
    document = air_document(**{**naive, **source})
    document["partitioning"] = {**document["partitioning"], "timezone": partition_zone}
    return PipelineSpec.model_validate(document)


def write_csv(frame: pd.DataFrame, path: Path) -> str:
    """Write a frame as a CSV source file (the checking column `instant` left out); return its path."""
    frame.drop(columns=["instant"], errors="ignore").to_csv(path, index=False)
    return str(path)


def bike_source() -> pd.DataFrame:
    """The UCI bike file as written."""
    return pd.read_csv(BIKE_CSV, dtype={"dteday": "str"})


def stations(folder: Path) -> tuple[Path, PipelineSpec]:
    """Four days of the Beijing file as two stations (the second a copy), with blank station cells on the third
    day and a spaces-only one on the fourth."""
    air = pd.read_csv(AIR_CSV, nrows=96)
    two = pd.concat([air.assign(station="US Embassy"), air.assign(station="Dongsi")], ignore_index=True)
    two.loc[[50, 51, 60], "station"] = ""
    two.loc[80, "station"] = "   "
    path = folder / "stations.csv"
    two.to_csv(path, index=False)
    return path, PipelineSpec.model_validate(air_document(entity_columns=["station"]))


def infinities(folder: Path) -> Path:
    """Three days of the Beijing file with `inf` and `Infinity` in Iws (a column with only a lower bound) on the
    second day and `-inf` in TEMP on the third."""
    lines = AIR_CSV.read_text().splitlines()[: 72 + 1]
    header = lines[0].split(",")
    for row, column, value in [(30, "Iws", "inf"), (31, "Iws", "Infinity"), (60, "TEMP", "-inf")]:
        cells = lines[row].split(",")
        cells[header.index(column)] = value
        lines[row] = ",".join(cells)
    path = folder / "inf.csv"
    path.write_text("\n".join(lines) + "\n")
    return path
