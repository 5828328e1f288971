"""Read a pipeline's source files and normalise them into the platform's raw schema."""

from __future__ import annotations

import datetime as dt
import fnmatch
import io
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
from pandas.api.types import is_numeric_dtype

from kernel import series
from kernel.schema import TIMESTAMP, UTC, raw_dtypes, timestamp_dtype
from kernel.spec import ISO8601, EventSpec, PipelineSpec, TimestampParts, TimestampSpec

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
# Kinds of per-day notes `normalise` keeps (see `Normalised.notes`).
BLANK_ENTITIES = "blank_entities"
NON_FINITE = "non_finite"
DST_NONEXISTENT = "dst_nonexistent"
DST_AMBIGUOUS = "dst_ambiguous"
EVENT_MARKERS = "event_markers"


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
    """Rows in the raw schema plus what type coercion could not keep, so nothing is lost silently, and per day
    (`YYYY-MM-DD`) what is kept but worth knowing: `{kind: count}` or `{kind: {column: count or marker texts}}`."""

    frame: pd.DataFrame
    coercion_errors: dict[str, dict[str, object]] = field(default_factory=dict)
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Collapsed:
    """Rows left after applying the spec's duplicates policy, and how many rows it merged away per day (and, with
    entity columns, per day per series: day -> series label -> rows)."""

    frame: pd.DataFrame
    rows_collapsed: dict[str, int]
    rows_collapsed_per_series: dict[str, dict[str, int]] = field(default_factory=dict)


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
    """An empty file, or one over the spec's cap, is refused before anything reads it (files are parsed whole, in
    memory)."""
    if size == 0:
        raise SourceFormatError(f"{path}: file is empty (0 bytes): no header, no rows")
    cap = spec.source.max_file_bytes
    if size > cap:
        raise SourceFormatError(f"{path}: file is {size} bytes, over the cap of {cap} (source.max_file_bytes)")


def _matches(path: str, pattern: str) -> bool:
    """Glob match segment by segment: `*` never crosses a `/` (archives in sub-folders stay out)."""
    parts, wanted = path.split("/"), pattern.split("/")
    return len(parts) == len(wanted) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted, strict=True))


def read_source_file(path: str, spec: PipelineSpec, project_root: Path) -> pd.DataFrame:
    """Read one source file as strings/numbers exactly as written (see `parse_source_bytes`).

    Raises `SourceFormatError` when the file is over the size cap or not readable as its format; I/O errors
    (`OSError`) pass through as they are.
    """
    filesystem, _ = resolve_source(spec.source.uri, project_root)
    with filesystem.open_input_file(path) as handle:
        check_size(path, handle.size(), spec)
        data = handle.read()
    return parse_source_bytes(path, data, spec)


def parse_source_bytes(path: str, data: bytes, spec: PipelineSpec) -> pd.DataFrame:
    """One source file's bytes (read from `path`) as strings/numbers exactly as written.

    Raises `SourceFormatError` when the bytes are empty or not readable as the spec's format (a CSV that does not
    tokenise or decode, a parquet file that is not one).
    """
    try:
        if spec.source.format == "csv":
            # Identifiers, categories and event markers stay text even when a blank cell would make pandas read
            # floats, and keep "NA"/"None"/"null" as written: only an empty cell is missing there (an event
            # column's `no_event` list says which words mean "no event").
            text_columns = [*spec.source.entity_columns, *spec.features.categorical, *_event_columns(spec)]
            na_values = {c: [""] if c in text_columns else list(DEFAULT_NA_STRINGS) for c in _named(spec)}
            return pd.read_csv(
                io.BytesIO(data), dtype=dict.fromkeys(text_columns, "str"), keep_default_na=False, na_values=na_values
            )
        return pd.read_parquet(io.BytesIO(data))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, pa.ArrowInvalid) as exc:
        raise SourceFormatError(f"{path}: not a readable {spec.source.format} file: {exc}") from exc


def _named(spec: PipelineSpec) -> list[str]:
    """Every source column the spec reads."""
    return [*spec.source.timestamp.columns, *spec.source.entity_columns, *spec.source_columns]


def _event_columns(spec: PipelineSpec) -> list[str]:
    return [event.column for event in spec.features.events]


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
    return parsed


# A UTC offset (or `Z`) right after a time of day: a date alone ends in digits that look like one ("-10").
_OFFSET_AFTER_TIME = r"\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[Zz]|[+-]\d\S*)$"


def _parse_column(frame: pd.DataFrame, ts_spec: TimestampSpec, origin: str) -> pd.Series:
    """The timestamp column (+ hour column): naive local times, or UTC instants when the values carry offsets."""
    assert ts_spec.column is not None and ts_spec.format is not None, "the spec validates one timestamp shape"
    raw = frame[ts_spec.column].astype("str")
    with_offset = ts_spec.has_offset
    if ts_spec.format == ISO8601:
        marked = raw.str.strip().str.contains(_OFFSET_AFTER_TIME, na=False)
        if marked.any() and not marked[raw.notna()].all():
            examples = [*raw[marked].head(2), *raw[raw.notna() & ~marked].head(2)]
            raise SourceFormatError(
                f"{origin}: timestamp column {ts_spec.column!r} mixes values with a UTC offset and without one, "
                f"e.g. {examples}: a file's times are either all local (source.timezone) or all with an offset"
            )
        with_offset = bool(marked.any())
    parsed = pd.to_datetime(raw, format=ts_spec.format, errors="coerce", utc=with_offset)
    bad = parsed.isna()
    if bad.any():
        examples = raw[bad].head(MAX_ERROR_EXAMPLES).tolist()
        offset = " (with a UTC offset such as '-05:00' or 'Z')" if with_offset else ""
        raise SourceFormatError(
            f"{origin}: {int(bad.sum())} value(s) in timestamp column {ts_spec.column!r} do not match "
            f"format {ts_spec.format!r}{offset}, e.g. {examples}"
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
    return parsed


@dataclass(frozen=True)
class _Instants:
    """UTC instants of a file's rows and the rows a DST change touched in the source's time zone."""

    utc: pd.Series
    nonexistent: pd.Series
    ambiguous: pd.Series


def _localise(local: pd.Series, frame: pd.DataFrame, spec: PipelineSpec) -> _Instants:
    """Naive local times in `source.timezone` as UTC instants.

    A local time the clock skipped (02:30 when clocks jump from 02:00 to 03:00) is read with the offset in force
    before the change, as if the clock had not moved yet (PEP 495's fold=0). A local time that happens twice
    (01:30 when clocks fall back) is the earlier instant on its first row per entity, in file order, and the later
    instant on every row after: a real export writes the repeated hour twice, in order.
    """
    none = pd.Series(False, index=local.index)
    zone = spec.source.timezone
    if zone == UTC:
        return _Instants(local.dt.tz_localize(UTC), none, none)
    earlier = local.dt.tz_localize(zone, ambiguous=np.ones(len(local), dtype=bool), nonexistent="NaT")
    later = local.dt.tz_localize(zone, ambiguous=np.zeros(len(local), dtype=bool), nonexistent="NaT")
    nonexistent = earlier.isna()
    ambiguous = ~nonexistent & (earlier != later)
    utc = earlier.dt.tz_convert(UTC)
    if ambiguous.any():
        keys = frame.loc[ambiguous, spec.source.entity_columns].assign(_local=local[ambiguous])
        occurrence = keys.groupby(list(keys.columns), sort=False, dropna=False).cumcount()
        again = occurrence.index[occurrence > 0]
        utc[again] = later[again].dt.tz_convert(UTC)
    if nonexistent.any():
        tz = ZoneInfo(zone)
        utc[nonexistent] = [
            pd.Timestamp(t.to_pydatetime().replace(tzinfo=tz, fold=0).astimezone(dt.UTC)) for t in local[nonexistent]
        ]
    return _Instants(utc, nonexistent, ambiguous)


def _parse_timestamps(frame: pd.DataFrame, spec: PipelineSpec, origin: str) -> _Instants:
    """Every row's timestamp as a UTC instant: offsets as written, naive times in `source.timezone`."""
    ts_spec = spec.source.timestamp
    parsed = (
        _parse_parts(frame, ts_spec.parts, origin)
        if ts_spec.parts is not None
        else _parse_column(frame, ts_spec, origin)
    )
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        none = pd.Series(False, index=parsed.index)
        return _Instants(parsed, none, none)
    return _localise(parsed, frame, spec)


def _in_partition_zone(utc: pd.Series, spec: PipelineSpec) -> pd.Series:
    """UTC instants as the raw schema's timestamps: wall time of `partitioning.timezone` (naive for UTC)."""
    zone = spec.partitioning.timezone
    local = utc.dt.tz_localize(None) if zone == UTC else utc.dt.tz_convert(zone)
    return local.astype(timestamp_dtype(spec))


def _numbers(values: pd.Series, column: str, origin: str, errors: dict[str, dict[str, object]]) -> pd.Series:
    """A number column as float64; cells that are not numbers become NaN and are reported in `errors`. A column
    none of whose written cells is a number is a `SourceFormatError` (a wrong delimiter, decimal mark or column)."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    written = values.notna()
    lost = numbers.isna() & written
    if lost.any():
        examples = values[lost].astype("str").head(MAX_ERROR_EXAMPLES).tolist()
        if lost.sum() == written.sum():
            raise SourceFormatError(
                f"{origin}: column {column!r} has no number in any of its {int(written.sum())} value(s), "
                f"e.g. {examples}"
            )
        errors[column] = {"count": int(lost.sum()), "examples": examples}
    return numbers


def _event_marks(values: pd.Series, event: EventSpec) -> tuple[pd.Series, pd.Series]:
    """An event column as float64 marks plus the marker text: a number is kept as written (non-zero marks the
    day), text in `no_event` (any case; an empty cell is the text "") is 0, any other text is 1 and kept as the
    marker."""
    if is_numeric_dtype(values.dtype):
        return values.astype("float64"), pd.Series(np.nan, index=values.index, dtype="str")
    text = values.astype("str")
    quiet = text.fillna("").str.strip().str.lower().isin(event.no_event_keys)
    numbers = pd.to_numeric(text.where(~quiet), errors="coerce").astype("float64")
    marker = text.notna() & ~quiet & numbers.isna()
    return numbers.mask(quiet, 0.0).mask(marker, 1.0), text.where(marker)


def _blank(values: pd.Series) -> pd.Series:
    """Cells that are missing, empty or spaces only."""
    return values.isna() | values.astype("str").str.strip().eq("")


def _text(values: pd.Series) -> pd.Series:
    return values.astype("str").where(values.notna(), None).astype("str")


def normalise(frame: pd.DataFrame, spec: PipelineSpec, origin: str = "source") -> Normalised:
    """Select the spec's columns and give them the raw schema's types, timestamps in `partitioning.timezone`.

    Timestamps, missing columns and a number column with no number in it are structural: a violation raises
    `SourceFormatError`. Other values that do not fit a number column become NaN and are reported in
    `coercion_errors` (the not-null expectation then blocks the partition), so a bad cell never passes unnoticed.
    What is kept but worth knowing (blank entities, infinite numbers, DST-touched times, event marker text) is
    counted per day in `notes`.
    """
    needed = _named(spec)
    if missing := [column for column in needed if column not in frame.columns]:
        raise SourceFormatError(f"{origin}: missing column(s) {missing}; found {list(frame.columns)}")
    if len(frame) and (blank := [c for c in spec.source.entity_columns if _blank(frame[c]).all()]):
        raise SourceFormatError(f"{origin}: series column(s) {blank} blank in every row: no row names its series")

    instants = _parse_timestamps(frame, spec, origin)
    out = pd.DataFrame({TIMESTAMP: _in_partition_zone(instants.utc, spec)})
    errors: dict[str, dict[str, object]] = {}
    events = {event.column: event for event in spec.features.events}
    markers: dict[str, pd.Series] = {}
    for column, dtype in raw_dtypes(spec).items():
        if column == TIMESTAMP:
            continue
        if column in events:
            out[column], markers[column] = _event_marks(frame[column], events[column])
        elif dtype == "float64":
            out[column] = _numbers(frame[column], column, origin, errors)
        elif column in spec.source.entity_columns:
            text = _text(frame[column])
            out[column] = text.where(text.str.strip() != "", None)  # a blank or spaces-only id is no id
        else:
            out[column] = _text(frame[column])
    notes = _day_notes(out, spec, instants, markers)
    out = out.sort_values([*spec.source.entity_columns, TIMESTAMP], kind="stable").reset_index(drop=True)
    return Normalised(out, errors, notes)


def _day_notes(
    out: pd.DataFrame, spec: PipelineSpec, instants: _Instants, markers: dict[str, pd.Series]
) -> dict[str, dict[str, Any]]:
    """Per day (`YYYY-MM-DD`): rows with a blank entity and infinite numbers per column, rows a DST change made
    nonexistent or ambiguous, and the distinct event marker texts per column; days with nothing to note left out."""
    day = out[TIMESTAMP].dt.strftime("%Y-%m-%d")
    notes: dict[str, dict[str, Any]] = {}

    def count(kind: str, mask: pd.Series, column: str | None = None) -> None:
        for key, n in day[mask].value_counts().items():
            entry = notes.setdefault(str(key), {})
            if column is None:
                entry[kind] = int(n)
            else:
                entry.setdefault(kind, {})[column] = int(n)

    for column in spec.source.entity_columns:
        count(BLANK_ENTITIES, out[column].isna(), column)
    for column in spec.number_columns:
        count(NON_FINITE, pd.Series(np.isinf(out[column].to_numpy()), index=out.index), column)
    count(DST_NONEXISTENT, instants.nonexistent)
    count(DST_AMBIGUOUS, instants.ambiguous)
    for column, text in markers.items():
        found = text.notna()
        for key, group in text[found].groupby(day[found]):
            notes.setdefault(str(key), {}).setdefault(EVENT_MARKERS, {})[column] = sorted(set(group))
    return dict(sorted(notes.items()))


def merge_notes(*parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Day notes of several files as one: counts add up, marker texts are united."""
    merged: dict[str, dict[str, Any]] = {}
    for notes in parts:
        for day, entry in notes.items():
            into = merged.setdefault(day, {})
            for kind, value in entry.items():
                if isinstance(value, int):
                    into[kind] = into.get(kind, 0) + value
                    continue
                columns = into.setdefault(kind, {})
                for column, found in value.items():
                    if isinstance(found, int):
                        columns[column] = columns.get(column, 0) + found
                    else:
                        columns[column] = sorted({*columns.get(column, []), *found})
    return dict(sorted(merged.items()))


def rebase_notes(notes: dict[str, dict[str, Any]], shift_days: int) -> dict[str, dict[str, Any]]:
    """Day notes keyed by the days their rows land on after `rebase`."""
    return {str(date.fromisoformat(day) + timedelta(days=shift_days)): entry for day, entry in notes.items()}


def collapse_duplicates(frame: pd.DataFrame, spec: PipelineSpec) -> Collapsed:
    """Apply `source.duplicates` to rows sharing an (entity, timestamp): 'error' keeps them all (the
    unique-timestamp expectation then rejects their day); 'first'/'last' keep that row in source order; 'mean'
    averages numbers (missing values skipped) and keeps the first non-missing text. Counts merged rows per day."""
    keys = [*spec.source.entity_columns, TIMESTAMP]
    duplicated = frame.duplicated(keys, keep="first")
    if spec.source.duplicates == "error" or not duplicated.any():
        return Collapsed(frame, {})
    per_day = frame.loc[duplicated, TIMESTAMP].dt.strftime("%Y-%m-%d").value_counts().sort_index()
    per_series: dict[str, dict[str, int]] = {}
    if spec.source.entity_columns:
        merged = frame[duplicated]
        days = merged[TIMESTAMP].dt.strftime("%Y-%m-%d")
        for (day, label), n in days.groupby([days, series.labels(merged, spec.source.entity_columns)]).size().items():
            per_series.setdefault(str(day), {})[str(label)] = int(n)
    if spec.source.duplicates == "mean":
        dtypes = raw_dtypes(spec)
        aggregations = {c: "mean" if t == "float64" else "first" for c, t in dtypes.items() if c not in keys}
        collapsed = frame.groupby(keys, sort=False, as_index=False, dropna=False).agg(aggregations)[list(dtypes)]
    else:
        collapsed = frame.drop_duplicates(keys, keep=spec.source.duplicates)
    collapsed = collapsed.sort_values(keys, kind="stable").reset_index(drop=True)
    return Collapsed(collapsed, {str(day): int(n) for day, n in per_day.items()}, dict(sorted(per_series.items())))


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
