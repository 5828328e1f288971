"""The ingest log's pure logic: what an entry says, how its file is named, which entries are live, which cover a day,
and how a raw day is built from them. No I/O here (`resources/ingest_log.py` stores it).

The log is append-only. Landing a file once makes an *entry*: its source path, the sha256 of its bytes, size, when it
landed, rows, the days it covers and what parsing could not keep, next to an immutable copy of its rows normalised
with the spec. A *tombstone* retires every earlier entry of one source path, with a reason. Of each source path only
the newest entry is live (a re-landed file supersedes the one before it), unless a later tombstone retired it.

Every entry is one small JSON file whose name says what selection needs: landing time, kind, a key of the source
path, the content hash and the first and last day covered. Listing the names is enough to pick the entries of a
day; only those are read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

import pandas as pd

from kernel.schema import TIMESTAMP, raw_dtypes
from kernel.spec import PipelineSpec
from ml import ingest

Kind = Literal["entry", "retire"]
NO_CONTENT = "-"


class IngestLogError(ValueError):
    """An ingest-log file or request that cannot be used as it is: which one, and why."""


def sha256_hex(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def path_key(path: str) -> str:
    """A short, name-safe key of a source path: entries of one path share it."""
    return sha256_hex(path.encode())[:16]


def parse_key(spec: PipelineSpec) -> str:
    """What normalising depends on (how the source is parsed and the raw schema), hashed: a stored copy made under
    another key was parsed by another spec."""
    source = spec.source.model_dump(mode="json", exclude={"uri", "max_file_bytes", "duplicates"})
    events = [event.model_dump(mode="json") for event in spec.features.events]
    partitioning_tz = getattr(spec.partitioning, "timezone", None)
    document = {"source": source, "schema": raw_dtypes(spec), "events": events, "partitioning_tz": partitioning_tz}
    return sha256_hex(json.dumps(document, sort_keys=True, default=str).encode())[:16]


@dataclass(frozen=True, order=True)
class EntryName:
    """What an entry's file name says (sorting by it is landing order)."""

    landed_ns: int
    kind: Kind
    path_key: str
    sha256: str
    first: str
    last: str

    @property
    def file_name(self) -> str:
        return f"{self.landed_ns:020d}.{self.kind}.{self.path_key}.{self.sha256}.{self.first}.{self.last}.json"

    @property
    def id(self) -> str:
        return self.file_name.removesuffix(".json")

    @classmethod
    def parse(cls, file_name: str) -> EntryName | None:
        """The name's fields; None for a file that is not an entry (a temp file of a write in progress)."""
        parts = file_name.split(".")
        if len(parts) != 7 or parts[6] != "json" or parts[1] not in ("entry", "retire") or not parts[0].isdigit():
            return None
        kind: Kind = "entry" if parts[1] == "entry" else "retire"
        return cls(int(parts[0]), kind, parts[2], parts[3], parts[4], parts[5])

    def covers_any(self, days: Sequence[date]) -> bool:
        """Whether the entry's span (first..last day) reaches any of `days`; its exact days are in the entry."""
        return any(self.first <= str(day) <= self.last for day in days)


@dataclass(frozen=True)
class LogEntry:
    """One manifest entry: a landed file (kind 'entry') or a tombstone that retired entries (kind 'retire')."""

    name: EntryName
    source: str
    landed_at: str
    days: list[str]
    size: int = 0
    mtime_ns: int = 0
    rows: int = 0
    content: str = ""  # the stored copy's file name
    parse_key: str = ""
    parse_warnings: dict[str, dict[str, object]] = field(default_factory=dict)
    # Per day (the data's own dates): blank entities, infinite numbers, DST-touched times, event marker texts.
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    retired: list[str] = field(default_factory=list)  # a tombstone: the ids of the entries it retired
    reason: str = ""
    requested_by: str = ""

    @property
    def sha256(self) -> str:
        return self.name.sha256

    def to_json(self) -> bytes:
        document = asdict(self)
        document["name"] = self.name.file_name
        return json.dumps(document, indent=1, sort_keys=True, default=str).encode()

    @classmethod
    def from_json(cls, payload: bytes, file_name: str) -> LogEntry:
        name = EntryName.parse(file_name)
        try:
            document: dict[str, Any] = json.loads(payload)
            if name is None or document.pop("name") != file_name:
                raise ValueError("the entry's name does not match its file name")
            return cls(name=name, **document)
        except (ValueError, TypeError, KeyError) as exc:
            raise IngestLogError(f"ingest log entry {file_name}: unreadable ({exc})") from exc


def entry_for(
    source: ingest.SourceFile, sha256: str, normalised: ingest.Normalised, spec: PipelineSpec, landed_ns: int
) -> LogEntry:
    """The manifest entry of a landed file, from its parsed rows (days in the data's own dates)."""
    days = [str(day) for day in ingest.days_in(normalised.frame)] if len(normalised.frame) else []
    key = parse_key(spec)
    first, last = (days[0], days[-1]) if days else (NO_CONTENT, NO_CONTENT)
    name = EntryName(landed_ns, "entry", path_key(source.path), sha256, first, last)
    return LogEntry(
        name=name,
        source=source.path,
        landed_at=pd.Timestamp(landed_ns, unit="ns", tz="UTC").isoformat(),
        days=days,
        size=source.size,
        mtime_ns=source.mtime_ns,
        rows=len(normalised.frame),
        content=content_name(sha256, key),
        parse_key=key,
        parse_warnings=normalised.coercion_errors,
        notes=normalised.notes,
    )


def content_name(sha256: str, key: str) -> str:
    """The stored copy of some bytes parsed under one spec: the same bytes and spec always name the same copy."""
    return f"{sha256}.{key}.parquet"


def tombstone_for(source: str, retired: Sequence[LogEntry], reason: str, requested_by: str, landed_ns: int) -> LogEntry:
    """A tombstone that retires `retired` (the live entries of `source`) and says who and why."""
    days = sorted({day for entry in retired for day in entry.days})
    first, last = (days[0], days[-1]) if days else (NO_CONTENT, NO_CONTENT)
    name = EntryName(landed_ns, "retire", path_key(source), NO_CONTENT, first, last)
    return LogEntry(
        name=name,
        source=source,
        landed_at=pd.Timestamp(landed_ns, unit="ns", tz="UTC").isoformat(),
        days=days,
        retired=[entry.name.id for entry in retired],
        reason=reason,
        requested_by=requested_by,
    )


def live_by_path(names: Iterable[EntryName]) -> dict[str, EntryName]:
    """The live entry of each source path (by `path_key`): its newest entry, unless a tombstone of that path came
    after it."""
    newest: dict[str, EntryName] = {}
    for name in sorted(names):
        newest[name.path_key] = name
    return {key: name for key, name in newest.items() if name.kind == "entry"}


def live(names: Iterable[EntryName]) -> list[EntryName]:
    """The entries that make raw, in landing order: the live entry of each source path."""
    return sorted(live_by_path(names).values())


def covering(names: Iterable[EntryName], days: Sequence[date]) -> list[EntryName]:
    """The live entries whose span reaches any of `days` (the data's own dates), in landing order."""
    return [name for name in live(names) if name.covers_any(days)]


def source_days(days: Sequence[date], shift_days: int) -> list[date]:
    """The data's own dates of partition days (the sample's rebase moves every timestamp by `shift_days`)."""
    return [day - timedelta(days=shift_days) for day in days]


def partition_days(days: Iterable[str], shift_days: int) -> list[date]:
    """Partition days of an entry's days (its data's own dates)."""
    return [date.fromisoformat(day) + timedelta(days=shift_days) for day in days]


@dataclass
class RawDays:
    """Raw partitions built from the log: frames, rows the duplicates policy merged, each day's lineage and notes."""

    frames: dict[str, pd.DataFrame]
    rows_collapsed: dict[str, int]
    rows_collapsed_per_series: dict[str, dict[str, int]]
    lineage: dict[str, list[dict[str, str]]]
    notes: dict[str, dict[str, Any]]


def build_raw_days(
    parts: Sequence[tuple[LogEntry, pd.DataFrame]], days: Sequence[date], spec: PipelineSpec, shift_days: int
) -> RawDays:
    """Raw day D = the duplicates policy applied to the rows of the entries covering D, in landing order (`parts`
    as read, each the entry's rows of the days asked for, in the data's own dates); days without rows are empty."""
    dtypes = raw_dtypes(spec)
    frames = []
    lineage: dict[str, list[dict[str, str]]] = {str(day): [] for day in days}
    for entry, stored in sorted(parts, key=lambda part: part[0].name):
        if missing := [column for column in dtypes if column not in stored.columns]:
            raise IngestLogError(
                f"ingest log entry {entry.name.id} ({entry.source}) has no column(s) {missing}: it was parsed by an "
                "earlier spec; land the file again, or retire it"
            )
        frame = ingest.rebase(stored[list(dtypes)], shift_days)
        frames.append(frame)
        for day in sorted(set(frame[TIMESTAMP].dt.date.astype("str")) & set(lineage)):
            lineage[day].append({"source": entry.source, "sha256": entry.sha256, "entry": entry.name.id})
    rows = pd.concat(frames, ignore_index=True) if frames else ingest.empty_raw(spec)
    rows = rows.astype({column: dtype for column, dtype in dtypes.items() if column != TIMESTAMP})
    collapsed = ingest.collapse_duplicates(rows, spec)
    wanted = {str(day) for day in days}
    by_day = ingest.split_days(collapsed.frame, list(days), spec)
    notes = ingest.rebase_notes(ingest.merge_notes(*(entry.notes for entry, _ in parts)), shift_days)
    return RawDays(
        frames=by_day,
        rows_collapsed={day: n for day, n in collapsed.rows_collapsed.items() if day in wanted},
        rows_collapsed_per_series={d: n for d, n in collapsed.rows_collapsed_per_series.items() if d in wanted},
        lineage=lineage,
        notes={day: entry for day, entry in notes.items() if day in wanted},
    )
