"""Landing-zone sensor: new or changed source files, once stable, request raw and features for the days they hold.

- **One run per tick.** Every file judged ready on a tick goes into one run request over the days they cover
  together (first to last), tagged with their paths and fingerprints: a dataset delivered as twelve files (one per
  station, say) is one run that reads them once, not twelve runs over the same days writing the same partitions.
- **The run lands them.** The run adds each named file to the ingest log (`resources/ingest_log.py`) if it is still
  as the sensor saw it, then builds its days from the log. A file re-landed at the same path supersedes its earlier
  entry: the run also covers the days of that entry, so a day the correction no longer holds is rebuilt too.

A file is judged on what it is, never on what happened while it was read:

- **Stable first.** A file is read only when its fingerprint (size and mtime) is the same on two ticks in a row, so
  an upload in progress is left alone. An empty file that stays empty is judged like any other: quarantined (it
  holds no header and no rows). The cursor keeps, per path, the fingerprint seen but not yet read (`pending`) and
  the one read or quarantined (`done`).
- **Torn reads are discarded.** The file is looked at again after it was read; another fingerprint means it
  changed under the reader: nothing is requested, and it is read again once stable.
- **Quarantine is for contents.** Only `ingest.SourceFormatError` (the contents contradict the spec, or the file
  is over `source.max_file_bytes`) moves a file to `<quarantine>/<pipeline>/` under a unique name, with a
  `.reason.txt` beside it; no run is requested for it.
- **Anything else keeps the file.** An `OSError` (a transient read error, a file gone since it was listed) or an
  unexpected exception is logged with the file's name; the file stays where it is, stays pending, and is read
  again on the next tick. Every other file goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import dagster as dg

from kernel.names import RANGE_END, RANGE_START, SOURCE_FILES_TAG
from kernel.pipeline import Pipeline
from resources.ingest_log import IngestLog
from resources.storage import PartitionedParquetIOManager

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from ml import ingest


@dataclass
class Cursor:
    """Per landing path: the fingerprint read or quarantined (`done`) and the one seen, not yet read (`pending`)."""

    done: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        data = json.loads(text)
        if set(data) <= {"done", "pending"} and all(isinstance(value, dict) for value in data.values()):
            return cls(dict(data.get("done", {})), dict(data.get("pending", {})))
        return cls(done=dict(data))  # the earlier cursor: {path: fingerprint} of every file read

    def dump(self) -> str:
        return json.dumps({"done": self.done, "pending": self.pending}, sort_keys=True)


@dataclass(frozen=True)
class Quarantined:
    """Where a malformed file went, and whether it could be removed from the landing zone."""

    target: str
    source_removed: bool


def _unique_name(source: ingest.SourceFile) -> str:
    """`<stem>.<UTC time>.<random><suffix>`: two files of one name never share a quarantine copy."""
    name = PurePosixPath(source.path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{name.stem}.{stamp}.{secrets.token_hex(4)}{name.suffix}"


def _move(source_fs: pafs.FileSystem, source: str, target_fs: pafs.FileSystem, target: str) -> bool:
    """Move `source` to `target` (a new name); True if the source is gone afterwards.

    On one filesystem this is a rename (atomic on a POSIX filesystem; a server-side copy and delete on an object
    store). Across filesystems, or where the rename fails (another device), the file is copied to a temp name
    beside the target, renamed to the target, then the source is deleted; a failed copy leaves no temp file.
    """
    import pyarrow.fs as pafs

    if source_fs.equals(target_fs):
        try:
            source_fs.move(source, target)
            return True
        except OSError:
            if target_fs.get_file_info(target).type == pafs.FileType.File:  # copied, not deleted (object store)
                return _delete(source_fs, source)
    folder, name = target.rsplit("/", 1)
    partial = f"{folder}/.{name}.partial"
    try:
        pafs.copy_files(source, partial, source_filesystem=source_fs, destination_filesystem=target_fs)
        target_fs.move(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            target_fs.delete_file(partial)
        raise
    return _delete(source_fs, source)


def _delete(filesystem: pafs.FileSystem, path: str) -> bool:
    try:
        filesystem.delete_file(path)
    except OSError:
        return False
    return True


def quarantine(pipeline: Pipeline, source: ingest.SourceFile, reason: str, quarantine_uri: str | None) -> Quarantined:
    """Move a malformed file out of the landing zone, never over another copy, and write why next to it."""
    from ml import ingest

    landing_fs, _ = ingest.resolve_source(pipeline.spec.source.uri, pipeline.root)
    target_fs, folder = ingest.quarantine_location(pipeline.spec, pipeline.root, quarantine_uri)
    target_fs.create_dir(folder, recursive=True)
    target = f"{folder}/{_unique_name(source)}"
    explanation = (
        f"{reason}\n\nsource: {source.path}\nsize: {source.size} bytes\nmtime_ns: {source.mtime_ns}\n"
        f"pipeline: {pipeline.name}\nquarantined_at: {datetime.now(UTC).isoformat()}\n"
    )
    with target_fs.open_output_stream(target + ingest.REASON_SUFFIX) as out:
        out.write(explanation.encode())
    try:
        removed = _move(landing_fs, source.path, target_fs, target)
    except BaseException:
        with contextlib.suppress(OSError):
            target_fs.delete_file(target + ingest.REASON_SUFFIX)
        raise
    return Quarantined(target, removed)


def days_of(pipeline: Pipeline, source: ingest.SourceFile) -> list[date]:
    """Days a source file covers, after rebasing and clipped to the partitions; raises SourceFormatError."""
    from ml import ingest

    spec = pipeline.spec
    frame = ingest.normalise(ingest.read_source_file(source.path, spec, pipeline.root), spec, source.path).frame
    frame = ingest.rebase(frame, pipeline.shift_days)
    keys = set(pipeline.partitions_def.get_partition_keys())
    return [day for day in ingest.days_in(frame) if str(day) in keys]


@dataclass
class _Tick:
    """One evaluation of a landing sensor: each file is looked at on its own, into a fresh cursor."""

    context: dg.SensorEvaluationContext
    pipeline: Pipeline
    quarantine_uri: str | None
    seen: Cursor
    cursor: Cursor = field(default_factory=Cursor)

    def look_at(self, source: ingest.SourceFile) -> list[date]:
        """The days to request for one landing file; none if it is not due, not readable, torn or malformed."""
        from ml import ingest

        path, fingerprint = source.path, source.fingerprint
        if self.seen.done.get(path) == fingerprint:
            self.cursor.done[path] = fingerprint
            return []
        self.cursor.pending[path] = fingerprint  # until judged: whatever goes wrong below, next tick looks again
        if self.seen.pending.get(path) != fingerprint:
            return []  # new or still being written: wait for a tick that finds it unchanged
        read = self.read(source)
        if read is None:
            return []
        days, problem = read
        now = ingest.stat_source_file(path, self.pipeline.spec.source.uri, self.pipeline.root)
        if now is None or now.fingerprint != fingerprint:
            self.context.log.info(f"{path}: changed while it was read; nothing requested, read again once stable")
            del self.cursor.pending[path]
            if now is not None:
                self.cursor.pending[path] = now.fingerprint
            return []
        if problem is not None:
            self.quarantine(source, problem)
            return []
        del self.cursor.pending[path]
        self.cursor.done[path] = fingerprint
        if not days:
            self.context.log.info(f"{path} holds no day inside the partitions; nothing to run")
        return days

    def read(self, source: ingest.SourceFile) -> tuple[list[date], ingest.SourceFormatError | None] | None:
        """Its days, or what its contents contradict; None (logged, kept) when reading it failed otherwise."""
        from ml import ingest

        try:
            ingest.check_size(source.path, source.size, self.pipeline.spec)
            return days_of(self.pipeline, source), None
        except ingest.SourceFormatError as exc:
            return [], exc
        except OSError as exc:
            self.context.log.warning(
                f"{source.path}: not read ({type(exc).__name__}: {exc}); kept, read again next tick"
            )
        except Exception as exc:  # a bug or a resource limit says nothing about the file: keep it, say so
            self.context.log.error(
                f"{source.path}: unexpected {type(exc).__name__} while reading it: {exc}; "
                "kept where it is (not quarantined), read again next tick"
            )
        return None

    def quarantine(self, source: ingest.SourceFile, problem: ingest.SourceFormatError) -> None:
        path = source.path
        try:
            moved = quarantine(self.pipeline, source, str(problem), self.quarantine_uri)
        except OSError as exc:
            self.context.log.error(f"{path}: could not be quarantined ({exc}); kept, tried again next tick")
            return
        del self.cursor.pending[path]
        self.context.log.warning(f"quarantined {path} -> {moved.target}: {problem}")
        if not moved.source_removed:
            self.context.log.error(
                f"{path}: copied to {moved.target} but could not be removed from the landing zone; "
                "it is not judged again until it changes"
            )
            self.cursor.done[path] = source.fingerprint


def run_key(fingerprints: dict[str, str]) -> str:
    """A landing run's key, from each file's path and fingerprint: the same files in the same state never make a
    second run."""
    listed = "\n".join(f"{path}:{fingerprints[path]}" for path in sorted(fingerprints))
    return f"landing:{hashlib.sha256(listed.encode()).hexdigest()}"


def superseded_days(pipeline: Pipeline, ingest_log: IngestLog, paths: list[str]) -> list[date]:
    """The days of the live log entries the files at `paths` supersede when landed (inside the partitions)."""
    from ml import ingest_log as log

    live = log.live_by_path(ingest_log.names())
    keys = set(pipeline.partitions_def.get_partition_keys())
    days = []
    for path in paths:
        if (current := live.get(log.path_key(path))) is not None:
            covered = log.partition_days(ingest_log.read_entry(current).days, pipeline.shift_days)
            days += [day for day in covered if str(day) in keys]
    return days


def one_request(
    ready: dict[str, tuple[str, list[date]]], targets: list[dg.AssetKey], superseded: list[date]
) -> dg.RunRequest:
    """One run over the days the files ready this tick cover together, and those of the entries they supersede
    (first to last), naming each file with the fingerprint it had when it was judged."""
    days = [day for _, covered in ready.values() for day in covered] + superseded
    files = {path: fingerprint for path, (fingerprint, _) in sorted(ready.items())}
    return dg.RunRequest(
        run_key=run_key(files),
        asset_selection=targets,
        tags={RANGE_START: str(min(days)), RANGE_END: str(max(days)), SOURCE_FILES_TAG: json.dumps(files)},
    )


def build(
    pipeline: Pipeline, store: PartitionedParquetIOManager, quarantine_uri: str | None = None
) -> dg.SensorDefinition:
    raw_key = pipeline.key("raw")
    targets = [raw_key, pipeline.key("features")]
    uri = pipeline.spec.source.uri

    @dg.sensor(
        name=f"{pipeline.name}_landing_sensor",
        description=f"New or changed files in {uri}, once stable, refresh {pipeline.name} raw and features.",
        asset_selection=dg.AssetSelection.assets(*targets),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def landing_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        """Requests raw and features runs for new or changed stable landing files; quarantines malformed ones."""
        from ml import ingest

        tick = _Tick(context, pipeline, quarantine_uri, Cursor.parse(context.cursor))
        ready: dict[str, tuple[str, list[date]]] = {}  # path -> (fingerprint, days) of the files read this tick
        for source in ingest.list_source_files(uri, pipeline.root):
            try:
                days = tick.look_at(source)
            except OSError as exc:  # e.g. looking at it again after the read: one file never stops the others
                context.log.warning(f"{source.path}: {type(exc).__name__}: {exc}; kept, looked at again next tick")
                tick.cursor.pending[source.path] = source.fingerprint
                continue
            if days:
                ready[source.path] = (source.fingerprint, days)
        if not ready:
            return dg.SensorResult(run_requests=[], cursor=tick.cursor.dump())
        superseded = superseded_days(pipeline, IngestLog.of(store, pipeline.name), sorted(ready))
        return dg.SensorResult(run_requests=[one_request(ready, targets, superseded)], cursor=tick.cursor.dump())

    return landing_sensor
