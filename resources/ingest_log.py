"""The ingest log in the asset store: one JSON file per manifest entry and one immutable parquet copy per landed
content, under `<store>/<pipeline>/_ingest/` on any pyarrow filesystem.

Every file is written once, to a temp name then renamed (as the asset store writes), and never rewritten: two writers
(a landing run and a first untagged run, say) only ever add files, so neither can lose the other's entry. Entry names
carry the landing time in nanoseconds, the path key and the content hash, so two writers never pick the same name.

Landing a file (`land`) reads it only if it is still what the caller saw (size and mtime), hashes the bytes, parses
them with the spec (`ml.ingest.parse_source_bytes` + `normalise`) and checks again that the file did not change while
it was read; a file that changed, is gone, or holds the same bytes as a live entry is not landed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from kernel.pipeline import Pipeline
from kernel.schema import TIMESTAMP
from resources.storage import PartitionedParquetIOManager
from resources.store import unfinished_dir, write_atomically

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.fs as pafs

    from ml import ingest
    from ml import ingest_log as log

INGEST_DIR = "_ingest"
ROW_GROUP_ROWS = 24 * 64  # a run reads the row groups of its days only (parquet statistics), not a whole copy


@dataclass
class Reads:
    """What a log has read since it was opened: entries and copies opened, and their bytes."""

    names_listed: int = 0
    entries_read: int = 0
    copies_read: int = 0
    bytes_read: int = 0


@dataclass(frozen=True)
class Landed:
    """The outcome of landing one file: the entry written, or why none was (`entry` None)."""

    source: str
    entry: log.LogEntry | None
    note: str
    superseded: log.EntryName | None = None


@dataclass
class IngestLog:
    """One pipeline's ingest log: its manifest entries and content copies in the asset store."""

    filesystem: pafs.FileSystem
    root: str
    pipeline: str
    unfinished: str  # the store's folder every write goes through first (`resources.store.write_atomically`)
    reads: Reads = field(default_factory=Reads)

    @classmethod
    def of(cls, store: PartitionedParquetIOManager, pipeline: str) -> IngestLog:
        """The log of `pipeline` in the store (the store's URI may still be an unresolved `EnvVar`, as wired)."""
        filesystem, root = store.store.filesystem()
        return cls(filesystem, f"{root.rstrip('/')}/{pipeline}/{INGEST_DIR}", pipeline, unfinished_dir(root))

    @property
    def manifest_dir(self) -> str:
        return f"{self.root}/manifest"

    @property
    def content_dir(self) -> str:
        return f"{self.root}/content"

    def names(self) -> list[log.EntryName]:
        """Every manifest entry's name, in landing order (one listing; no entry is read)."""
        import pyarrow.fs as pafs

        from ml import ingest_log as log

        selector = pafs.FileSelector(self.manifest_dir, allow_not_found=True)
        infos = self.filesystem.get_file_info(selector)
        self.reads.names_listed += len(infos)
        names = (log.EntryName.parse(info.base_name) for info in infos if info.type == pafs.FileType.File)
        return sorted(name for name in names if name is not None)

    def read_entry(self, name: log.EntryName) -> log.LogEntry:
        from ml import ingest_log as log

        with self.filesystem.open_input_file(f"{self.manifest_dir}/{name.file_name}") as handle:
            payload = handle.read()
        self.reads.entries_read += 1
        self.reads.bytes_read += len(payload)
        return log.LogEntry.from_json(payload, name.file_name)

    def append(self, entry: log.LogEntry) -> None:
        """Add one entry (a new file: entries are never rewritten)."""
        path = f"{self.manifest_dir}/{entry.name.file_name}"
        write_atomically(self.filesystem, self.unfinished, path, entry.to_json())

    def write_copy(self, entry: log.LogEntry, frame: pd.DataFrame) -> None:
        """Store the entry's normalised rows, unless the same bytes parsed by the same spec are stored already."""
        import pyarrow as pa
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        path = f"{self.content_dir}/{entry.content}"
        if self.filesystem.get_file_info(path).type == pafs.FileType.File:
            return
        rows = frame.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)  # stable: source order kept per hour
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), sink, row_group_size=ROW_GROUP_ROWS)
        write_atomically(self.filesystem, self.unfinished, path, sink.getvalue().to_pybytes())

    def read_rows(self, entry: log.LogEntry, days: Sequence[date]) -> pd.DataFrame:
        """The entry's stored rows of `days` (the data's own dates); only the row groups that hold them are read."""
        import pandas as pd
        import pyarrow.parquet as pq

        from ml import ingest_log as log

        path = f"{self.content_dir}/{entry.content}"
        try:
            handle = self.filesystem.open_input_file(path)
        except FileNotFoundError as exc:
            raise log.IngestLogError(
                f"ingest log entry {entry.name.id} ({entry.source}): its stored copy {path} is missing"
            ) from exc
        with handle:
            # Row groups are chosen by instants a day wider on each side (a local day is not a UTC day), in the copy's
            # own time zone (naive for UTC partitions, the partitions' zone otherwise); the exact days are kept below.
            zone = pq.ParquetFile(handle).schema_arrow.field(TIMESTAMP).type.tz
            start = pd.Timestamp(min(days), tz="UTC") - pd.Timedelta(days=1)
            end = pd.Timestamp(max(days), tz="UTC") + pd.Timedelta(days=2)
            start, end = (t.tz_convert(zone) if zone else t.tz_localize(None) for t in (start, end))
            table = pq.read_table(handle, filters=[(TIMESTAMP, ">=", start), (TIMESTAMP, "<", end)])
            self.reads.copies_read += 1
            self.reads.bytes_read += handle.size()
        frame = table.to_pandas()
        wanted = frame[TIMESTAMP].dt.date.isin(set(days))
        return frame[wanted].reset_index(drop=True)

    def covering(self, days: Sequence[date]) -> list[log.LogEntry]:
        """The live entries covering any of `days` (the data's own dates), in landing order, read."""
        from ml import ingest_log as log

        return [self.read_entry(name) for name in log.covering(self.names(), days)]

    def land(self, pipeline: Pipeline, seen: ingest.SourceFile) -> Landed:
        """Land one landing file as it was seen (size and mtime): see `land_all`."""
        return next(self.land_all(pipeline, [seen]))

    def land_all(self, pipeline: Pipeline, files: Sequence[ingest.SourceFile]) -> Iterator[Landed]:
        """Land each file as it was seen (size and mtime), in order: read, hash, parse, store a copy, add an entry.

        The manifest is listed once for all of them (each landing adds its own entry to what later ones compare with).
        Nothing is landed when a file is gone, differs from what was seen (still being written, or changed since),
        changes while it is read, or holds the same bytes as a live entry. A file whose contents contradict the spec
        raises `ingest.SourceFormatError`, as parsing does.
        """
        from ml import ingest_log as log

        live = log.live_by_path(self.names())
        for seen in files:
            landed = self._land(pipeline, seen, live)
            if landed.entry is not None:
                live[landed.entry.name.path_key] = landed.entry.name
            yield landed

    def _land(self, pipeline: Pipeline, seen: ingest.SourceFile, live: dict[str, log.EntryName]) -> Landed:
        from ml import ingest
        from ml import ingest_log as log

        spec, path = pipeline.spec, seen.path
        landing_fs, _ = ingest.resolve_source(spec.source.uri, pipeline.root)
        before = ingest.stat_source_file(path, spec.source.uri, pipeline.root)
        if before is None:
            return Landed(path, None, "gone from the landing zone; not read")
        if before != seen:
            return Landed(
                path, None, f"changed since it was seen ({seen.fingerprint} -> {before.fingerprint}); not read"
            )
        if seen.size == 0:
            return Landed(path, None, "empty (0 bytes); not read")
        ingest.check_size(path, seen.size, spec)
        with landing_fs.open_input_file(path) as handle:
            data = handle.read()
        sha256 = log.sha256_hex(data)  # the bytes hashed are the bytes parsed: one read
        normalised = ingest.normalise(ingest.parse_source_bytes(path, data, spec), spec, path)
        after = ingest.stat_source_file(path, spec.source.uri, pipeline.root)
        if after != seen:
            return Landed(path, None, "changed while it was read; not landed (landed once it is stable)")
        key = log.parse_key(spec)
        for same in (name for name in live.values() if name.sha256 == sha256):
            if self.read_entry(same).parse_key == key:
                return Landed(path, None, f"same bytes as live entry {same.id}; not landed again")
        superseded = live.get(log.path_key(path))
        entry = log.entry_for(seen, sha256, normalised, spec, time.time_ns())
        self.write_copy(entry, normalised.frame)
        self.append(entry)
        return Landed(path, entry, f"landed as {entry.name.id} ({entry.rows} rows, {len(entry.days)} days)", superseded)

    def retire(self, source: str, reason: str, requested_by: str) -> log.LogEntry:
        """Retire the live entry of `source` with a tombstone that says who and why; its days lose its rows."""
        from ml import ingest_log as log

        names = self.names()
        current = log.live_by_path(names).get(log.path_key(source))
        if current is None:
            sources = sorted({self.read_entry(name).source for name in log.live(names)})
            raise log.IngestLogError(
                f"{self.pipeline}: nothing to retire for source {source!r}: no live ingest log entry has that path; "
                f"live sources: {sources}"
            )
        tombstone = log.tombstone_for(source, [self.read_entry(current)], reason, requested_by, time.time_ns())
        self.append(tombstone)
        return tombstone
