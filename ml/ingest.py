"""Read a pipeline's source files and normalise them into the platform's raw schema."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from kernel.schema import TIMESTAMP, raw_dtypes
from kernel.spec import PipelineSpec, TimestampParts

MAX_ERROR_EXAMPLES = 5
# pandas' default missing-value strings (read_csv's `na_values` docs). Numbers keep them; text columns do not,
# since "NA", "None" or "null" can be a real category (an empty cell stays missing everywhere).
DEFAULT_NA_STRINGS = (
    *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>"),
    *("N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"),
)
# Malformed landing files go to `<landing base>/_quarantine/<pipeline>/` unless a quarantine URI is configured;
# no landing glob ever matches a path with this folder in it.
QUARANTINE_DIR = "_quarantine"
REASON_SUFFIX = ".reason.txt"


class SourceFormatError(ValueError):
    """A source file whose contents contradict its spec: not parseable as its format, missing columns,
    unparseable timestamps, or over the spec's size cap. This, and only this, is a reason to quarantine it."""


@dataclass(frozen=True)
class SourceFile:
    """One file in a landing zone, identified by path, size and modification time."""

    path: str
    size: int
    mtime_ns: int

    @property
    def fingerprint(self) -> str:
        return f"{self.size}:{self.mtime_ns}"


@dataclass
class Normalised:
    """Rows in the raw schema plus what type coercion could not keep, so nothing is lost silently."""

    frame: pd.DataFrame
    coercion_errors: dict[str, dict[str, object]] = field(default_factory=dict)


@dataclass
class Collapsed:
    """Rows left after applying the spec's duplicates policy, and how many rows it merged away per day."""

    frame: pd.DataFrame
    rows_collapsed: dict[str, int]


def resolve_source(uri: str, project_root: Path) -> tuple[pafs.FileSystem, str]:
    """Turn a spec's source URI (relative path, absolute path or `scheme://`) into a filesystem and a glob."""
    if "://" in uri:
        filesystem, path = pafs.FileSystem.from_uri(uri)
        return filesystem, path
    path = Path(uri)
    if not path.is_absolute():
        path = project_root / path
    return pafs.LocalFileSystem(), str(path)


def landing_base(pattern: str) -> str:
    """The folder a source glob (or single file) lives in: where listing starts and quarantine goes by default."""
    return pattern.split("*", 1)[0].rsplit("/", 1)[0] if "*" in pattern else pattern.rsplit("/", 1)[0]


def list_source_files(uri: str, project_root: Path) -> list[SourceFile]:
    """Every file matching the spec's source glob, sorted by path; nothing under a `_quarantine` folder."""
    filesystem, pattern = resolve_source(uri, project_root)
    base = landing_base(pattern)
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    files = [
        SourceFile(info.path, info.size or 0, info.mtime_ns or 0)
        for info in filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File
        and _matches(info.path, pattern)
        and QUARANTINE_DIR not in info.path[len(base) :].split("/")
    ]
    return sorted(files, key=lambda f: f.path)


def stat_source_file(path: str, uri: str, project_root: Path) -> SourceFile | None:
    """One landing file as it is now (None if it is gone): to tell whether it changed while it was read."""
    filesystem, _ = resolve_source(uri, project_root)
    info = filesystem.get_file_info(path)
    if info.type != pafs.FileType.File:
        return None
    return SourceFile(info.path, info.size or 0, info.mtime_ns or 0)


def quarantine_location(
    spec: PipelineSpec, project_root: Path, quarantine_uri: str | None
) -> tuple[pafs.FileSystem, str]:
    """Where a pipeline's malformed files go: `<quarantine_uri>/<pipeline>` if one is configured, else
    `<landing base>/_quarantine/<pipeline>` on the landing zone's own filesystem (a rename away, and as durable
    as the landing zone itself)."""
    if quarantine_uri:
        filesystem, base = resolve_source(quarantine_uri, project_root)
        return filesystem, f"{base.rstrip('/')}/{spec.name}"
    filesystem, pattern = resolve_source(spec.source.uri, project_root)
    return filesystem, f"{landing_base(pattern)}/{QUARANTINE_DIR}/{spec.name}"


def check_size(path: str, size: int, spec: PipelineSpec) -> None:
    """A file over the spec's cap is refused before anything reads it (files are parsed whole, in memory)."""
    cap = spec.source.max_file_bytes
    if size > cap:
        raise SourceFormatError(f"{path}: file is {size} bytes, over the cap of {cap} (source.max_file_bytes)")


def _matches(path: str, pattern: str) -> bool:
    """Glob match segment by segment: `*` never crosses a `/` (archives in sub-folders stay out)."""
    parts, wanted = path.split("/"), pattern.split("/")
    return len(parts) == len(wanted) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted, strict=True))


def read_source_file(path: str, spec: PipelineSpec, project_root: Path) -> pd.DataFrame:
    """Read one source file as strings/numbers exactly as written.

    Raises `SourceFormatError` when the file is over the size cap or is not readable as its format (a CSV that
    does not tokenise or decode, a parquet file that is not one); I/O errors (`OSError`) pass through as they are.
    """
    filesystem, _ = resolve_source(spec.source.uri, project_root)
    with filesystem.open_input_file(path) as handle:
        check_size(path, handle.size(), spec)
        try:
            if spec.source.format == "csv":
                # Identifiers and categories stay text even when a blank cell would make pandas read floats, and
                # keep "NA"/"None"/"null" as written: only an empty cell is missing there.
                text_columns = [*spec.source.entity_columns, *spec.features.categorical]
                na_values = {c: [""] if c in text_columns else list(DEFAULT_NA_STRINGS) for c in _named(spec)}
                return pd.read_csv(
                    handle, dtype=dict.fromkeys(text_columns, "str"), keep_default_na=False, na_values=na_values
                )
            return pd.read_parquet(handle)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, pa.ArrowInvalid) as exc:
            raise SourceFormatError(f"{path}: not a readable {spec.source.format} file: {exc}") from exc


def _named(spec: PipelineSpec) -> list[str]:
    """Every source column the spec reads."""
    return [*spec.source.timestamp.columns, *spec.source.entity_columns, *spec.source_columns]


def _parse_parts(frame: pd.DataFrame, parts: TimestampParts, origin: str) -> pd.Series:
    """A timestamp from year, month, day and hour columns; a part that is not a whole number in its range (month
    13, hour 24, 30 February) is a `SourceFormatError` naming the rows' values."""
    named = {"year": parts.year, "month": parts.month, "day": parts.day, "hour": parts.hour}
    numbers = pd.DataFrame({part: pd.to_numeric(frame[column], errors="coerce") for part, column in named.items()})
    # pandas rolls hour 24 over to the next day; a source that writes it has its own convention, not ours.
    whole = numbers.notna().all(axis=1) & (numbers % 1 == 0).all(axis=1) & numbers["hour"].between(0, 23)
    parsed = pd.to_datetime(numbers.where(whole), errors="coerce")
    bad = parsed.isna()
    if bad.any():
        examples = frame.loc[bad, list(named.values())].head(MAX_ERROR_EXAMPLES).astype("str").to_dict("records")
        raise SourceFormatError(
            f"{origin}: {int(bad.sum())} row(s) whose timestamp parts {named} are not a valid date and hour 0-23, "
            f"e.g. {examples}"
        )
    return parsed.astype("datetime64[ns]")


def _parse_timestamps(frame: pd.DataFrame, spec: PipelineSpec, origin: str) -> pd.Series:
    ts_spec = spec.source.timestamp
    if ts_spec.parts is not None:
        return _parse_parts(frame, ts_spec.parts, origin)
    assert ts_spec.column is not None and ts_spec.format is not None, "the spec validates one timestamp shape"
    raw = frame[ts_spec.column].astype("str")
    parsed = pd.to_datetime(raw, format=ts_spec.format, errors="coerce")
    bad = parsed.isna()
    if bad.any():
        examples = raw[bad].head(MAX_ERROR_EXAMPLES).tolist()
        raise SourceFormatError(
            f"{origin}: {int(bad.sum())} value(s) in timestamp column {ts_spec.column!r} do not match "
            f"format {ts_spec.format!r}, e.g. {examples}"
        )
    if ts_spec.hour_column is not None:
        hours = pd.to_numeric(frame[ts_spec.hour_column], errors="coerce")
        bad_hours = hours.isna() | (hours < 0) | (hours > 23) | (hours % 1 != 0)
        if bad_hours.any():
            examples = frame.loc[bad_hours, ts_spec.hour_column].head(MAX_ERROR_EXAMPLES).tolist()
            raise SourceFormatError(
                f"{origin}: {int(bad_hours.sum())} value(s) in hour column {ts_spec.hour_column!r} "
                f"are not whole hours 0-23, e.g. {examples}"
            )
        parsed = parsed + pd.to_timedelta(hours, unit="h")
    return parsed.astype("datetime64[ns]")


def normalise(frame: pd.DataFrame, spec: PipelineSpec, origin: str = "source") -> Normalised:
    """Select the spec's columns and give them the raw schema's types.

    Timestamps and missing columns are structural: a violation raises `SourceFormatError`.
    Values that do not fit a numeric column become NaN and are reported in `coercion_errors`
    (the not-null expectation then blocks the partition), so a bad cell never passes unnoticed.
    """
    needed = _named(spec)
    if missing := [column for column in needed if column not in frame.columns]:
        raise SourceFormatError(f"{origin}: missing column(s) {missing}; found {list(frame.columns)}")

    out = pd.DataFrame({TIMESTAMP: _parse_timestamps(frame, spec, origin)})
    errors: dict[str, dict[str, object]] = {}
    for column, dtype in raw_dtypes(spec).items():
        if column == TIMESTAMP:
            continue
        if dtype == "float64":
            values = pd.to_numeric(frame[column], errors="coerce").astype("float64")
            lost = values.isna() & frame[column].notna()
            if lost.any():
                errors[column] = {
                    "count": int(lost.sum()),
                    "examples": frame.loc[lost, column].astype("str").head(MAX_ERROR_EXAMPLES).tolist(),
                }
            out[column] = values
        else:
            out[column] = frame[column].astype("str").where(frame[column].notna(), None).astype("str")
    out = out.sort_values([*spec.source.entity_columns, TIMESTAMP], kind="stable").reset_index(drop=True)
    return Normalised(out, errors)


def collapse_duplicates(frame: pd.DataFrame, spec: PipelineSpec) -> Collapsed:
    """Apply `source.duplicates` to rows sharing an (entity, timestamp): 'error' keeps them all (the
    unique-timestamp expectation then rejects their day); 'first'/'last' keep that row in source order; 'mean'
    averages numbers (missing values skipped) and keeps the first non-missing text. Counts merged rows per day."""
    keys = [*spec.source.entity_columns, TIMESTAMP]
    duplicated = frame.duplicated(keys, keep="first")
    if spec.source.duplicates == "error" or not duplicated.any():
        return Collapsed(frame, {})
    per_day = frame.loc[duplicated, TIMESTAMP].dt.strftime("%Y-%m-%d").value_counts().sort_index()
    if spec.source.duplicates == "mean":
        dtypes = raw_dtypes(spec)
        aggregations = {c: "mean" if t == "float64" else "first" for c, t in dtypes.items() if c not in keys}
        collapsed = frame.groupby(keys, sort=False, as_index=False, dropna=False).agg(aggregations)[list(dtypes)]
    else:
        collapsed = frame.drop_duplicates(keys, keep=spec.source.duplicates)
    collapsed = collapsed.sort_values(keys, kind="stable").reset_index(drop=True)
    return Collapsed(collapsed, {str(day): int(n) for day, n in per_day.items()})


def empty_raw(spec: PipelineSpec) -> pd.DataFrame:
    """A zero-row frame with the raw schema (a day the source has no rows for)."""
    return pd.DataFrame({column: pd.Series([], dtype=dtype) for column, dtype in raw_dtypes(spec).items()})


def rebase(frame: pd.DataFrame, shift_days: int) -> pd.DataFrame:
    """Move every timestamp forward by `shift_days` (whole weeks keep weekday patterns intact)."""
    if shift_days == 0:
        return frame
    shifted = frame.copy()
    shifted[TIMESTAMP] = shifted[TIMESTAMP] + pd.Timedelta(days=shift_days)
    return shifted


def split_days(frame: pd.DataFrame, days: list[date], spec: PipelineSpec) -> dict[str, pd.DataFrame]:
    """One frame per requested day (`YYYY-MM-DD`); days without rows get an empty frame with the schema."""
    by_day = {
        str(day): group.reset_index(drop=True) for day, group in frame.groupby(frame[TIMESTAMP].dt.date, sort=True)
    }
    return {str(day): by_day.get(str(day), empty_raw(spec)) for day in days}


def days_in(frame: pd.DataFrame) -> list[date]:
    """Distinct calendar days present in a normalised frame."""
    return sorted(set(frame[TIMESTAMP].dt.date))
