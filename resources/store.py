"""The asset store's files, without Dagster: one parquet (or JSON) file per asset partition on any pyarrow filesystem.

What a Dagster step and a Ray task both read and write: the step through the IO manager (`resources/storage.py`), a
Ray task of a range run directly (`resources/day_tasks.py`), so a day's data goes from storage to the worker and back
without passing through the step. Every stored value carries a content fingerprint written with it, so a verdict can
name the bytes it judged: a parquet file holds the sha256 of its table in its footer's key-value metadata (read
without the data pages), a JSON file (a record, a rejection: a few kB) is fingerprinted by the sha256 of its bytes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from kernel import series
from kernel.names import FINGERPRINT, TEMPORARY, UNFINISHED_DIR
from kernel.records import Rejected
from ml.quality import Verdict

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

# numpy, pandas and pyarrow are imported where a value is read or written, not with the module: the code location
# builds the store when it loads, and a load does not touch data.

# Rows from which a file is read and converted on pyarrow's threads: a day's file (tens to thousands of rows) reads
# several times faster on the calling thread, without `read_table`'s dataset set-up.
THREADED_ROWS = 100_000
# The parquet footer key that holds a file's fingerprint.
FINGERPRINT_KEY = b"platform.fingerprint"
# The footer key that holds the series a frame was built without (label -> reason, JSON), part of its fingerprint.
SERIES_LEFT_OUT_KEY = series.SERIES_LEFT_OUT.encode()


class NotStored(LookupError):
    """A partition with no stored value."""


class UnsupportedValue(TypeError):
    """A value the store does not keep (it keeps DataFrames, JSON mappings and records)."""


@dataclass(frozen=True)
class Stored:
    """One stored value and the fingerprint of the very bytes it was read from (None: written without one)."""

    value: Any
    fingerprint: str | None


@dataclass(frozen=True)
class Written:
    """A value its writer (a Ray task, raw's step) wrote to the store itself: where, the fingerprint its bytes carry,
    and the verdicts the writer reached on those bytes as it wrote them (check name -> verdict; none if it judged
    nothing)."""

    path: str
    fingerprint: str
    verdicts: Mapping[str, Verdict] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredDay:
    """A stored day passed by reference (a lazy input): the fingerprint the day gate judged, and the series its
    verdict rejected (label -> reason), which whoever reads it leaves out."""

    key: tuple[str, ...]
    day: str
    fingerprint: str | None
    rejected_series: Mapping[str, str] = field(default_factory=dict)


class ChangedSinceJudged(ValueError):
    """A stored day whose bytes are no longer those its verdict judged (another writer replaced them meanwhile)."""


@dataclass(frozen=True)
class AssetStore:
    """The store's root (a local directory or any pyarrow filesystem URI: s3://, gs://, hdfs://) and its files."""

    base_uri: str

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        import pyarrow.fs as pafs

        if "://" in self.base_uri:
            return pafs.FileSystem.from_uri(self.base_uri)
        return pafs.LocalFileSystem(), self.base_uri

    def path_for(self, key: Sequence[str], partition: str | None, suffix: str) -> str:
        _, root = self.filesystem()
        leaf = partition if partition is not None else "__all__"
        return "/".join([root.rstrip("/"), *key, f"{leaf}.{suffix}"])

    def write(self, key: Sequence[str], partition: str | None, value: Any) -> Written:
        """Write one value (DataFrame -> parquet, mapping or record -> JSON) via a temp file and a rename."""
        import pandas as pd
        import pyarrow.fs as pafs

        filesystem, root = self.filesystem()
        if isinstance(value, pd.DataFrame):
            suffix, (payload, fingerprint) = "parquet", _parquet_bytes(value)
        elif isinstance(value, Mapping | BaseModel):
            document = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
            suffix, payload = "json", json.dumps(document, indent=2, sort_keys=True, default=_json_default).encode()
            fingerprint = _sha256(payload)
        else:
            raise UnsupportedValue(
                f"{'/'.join(key)}: the asset store keeps DataFrames, JSON mappings and records, "
                f"got {type(value).__name__}"
            )
        final = self.path_for(key, partition, suffix)
        write_atomically(filesystem, unfinished_dir(root), final, payload)
        # A day's value is one file: a rejection replaces a frame and a rebuilt frame replaces a rejection.
        other = self.path_for(key, partition, "json" if suffix == "parquet" else "parquet")
        if filesystem.get_file_info(other).type == pafs.FileType.File:
            filesystem.delete_file(other)
        return Written(final, fingerprint)

    def read(self, key: Sequence[str], partition: str | None) -> Stored:
        """One stored value with the fingerprint of the bytes it was read from (one open: a check judges exactly
        the bytes its verdict names, even if a writer replaces the file meanwhile); `NotStored` if never written."""
        import pyarrow.parquet as pq

        filesystem, path = self.stored_path(key, partition)
        with filesystem.open_input_file(path) as handle:
            if path.endswith(".parquet"):
                file = pq.ParquetFile(handle)
                threads = file.metadata.num_rows >= THREADED_ROWS
                table = file.read(use_threads=threads)
                footer = table.schema.metadata or {}
                fingerprint, left_out = footer.get(FINGERPRINT_KEY), footer.get(SERIES_LEFT_OUT_KEY)
                frame = table.to_pandas(use_threads=threads)
                if left_out is not None:
                    frame.attrs[series.SERIES_LEFT_OUT] = json.loads(left_out)
                return Stored(frame, fingerprint.decode() if fingerprint is not None else None)
            payload = handle.read()
        document = json.loads(payload)
        value = Rejected.model_validate(document) if document.get("rejected") is True else document
        return Stored(value, _sha256(payload))

    def fingerprint(self, key: Sequence[str], partition: str | None) -> str | None:
        """The fingerprint the stored bytes carry, None if they carry none or it cannot be read (a day no verdict
        can pass); reads a parquet file's footer only."""
        import pyarrow.parquet as pq

        filesystem, path = self.stored_path(key, partition)
        with filesystem.open_input_file(path) as handle:
            if not path.endswith(".parquet"):
                return _sha256(handle.read())
            try:
                return _footer_fingerprint(pq.read_metadata(handle))
            except (OSError, ValueError):
                return None

    def row_count(self, key: Sequence[str], partition: str | None) -> int | None:
        """The rows of a stored frame, from its parquet footer (no data pages); None for a JSON value (a record, a
        rejection); `NotStored` if never written."""
        import pyarrow.parquet as pq

        filesystem, path = self.stored_path(key, partition)
        if not path.endswith(".parquet"):
            return None
        with filesystem.open_input_file(path) as handle:
            return pq.read_metadata(handle).num_rows

    def read_columns(
        self, key: Sequence[str], partitions: Sequence[str], columns: Sequence[str]
    ) -> pd.DataFrame | None:
        """The named columns of the stored frames among `partitions` as one frame, converted to pandas once (days
        never stored and JSON values are left out; a column a day lacks is null there); None if no day has a frame.
        Reads no fingerprint and passes no gate: for a window of many days that is described, not judged."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = []
        for partition in partitions:
            try:
                filesystem, path = self.stored_path(key, partition)
            except NotStored:
                continue
            if not path.endswith(".parquet"):
                continue
            with filesystem.open_input_file(path) as handle:
                file = pq.ParquetFile(handle)
                present = [column for column in columns if column in file.schema_arrow.names]
                tables.append(file.read(columns=present, use_threads=False).replace_schema_metadata(None))
        return pa.concat_tables(tables, promote_options="permissive").to_pandas() if tables else None

    def stored_path(self, key: Sequence[str], partition: str | None) -> tuple[pafs.FileSystem, str]:
        import pyarrow.fs as pafs

        filesystem, _ = self.filesystem()
        for suffix in ("parquet", "json"):
            path = self.path_for(key, partition, suffix)
            if filesystem.get_file_info(path).type == pafs.FileType.File:
                return filesystem, path
        where = f"partition {partition}" if partition is not None else "no partition"
        raise NotStored(f"{'/'.join(key)} has no stored value for {where} under {self.base_uri}; materialise it first")

    def exists(self, key: Sequence[str], partition: str | None) -> bool:
        import pyarrow.fs as pafs

        filesystem, _ = self.filesystem()
        return any(
            filesystem.get_file_info(self.path_for(key, partition, suffix)).type == pafs.FileType.File
            for suffix in ("parquet", "json")
        )

    def remove_unfinished_writes(self, older_than_s: float, now: float) -> list[str]:
        """Delete the temp files of writes cut short (a writer killed between writing its temp file and renaming it;
        no reader ever opens one) last modified more than `older_than_s` seconds before `now` (a live write's temp
        file is seconds old); returns their paths. One listing of the store's unfinished-writes folder, where every
        write of the store goes first, ingest logs included."""
        import pyarrow.fs as pafs

        filesystem, root = self.filesystem()
        found = filesystem.get_file_info(pafs.FileSelector(unfinished_dir(root), allow_not_found=True))
        removed = []
        for info in found:
            modified = info.mtime.timestamp() if info.mtime is not None else now
            if info.type == pafs.FileType.File and TEMPORARY in info.base_name and now - modified > older_than_s:
                filesystem.delete_file(info.path)
                removed.append(info.path)
        return removed

    def read_judged(self, day: StoredDay, entities: Sequence[str]) -> pd.DataFrame | Rejected:
        """A day passed by reference, as its gate passed it: the judged bytes without the series its verdict rejected,
        the fingerprint in `attrs` (as the IO manager loads a day). Bytes another writer replaced since they were judged
        are not used: the day is `Rejected`, naming both fingerprints (its next run judges the new bytes)."""
        import pandas as pd

        where = f"{'/'.join(day.key)} {day.day}"
        try:
            stored = self.read(day.key, day.day)
        except (LookupError, OSError, ValueError) as error:
            return Rejected(day=day.day, reason=f"{where}: the stored file cannot be read ({error})")
        if stored.fingerprint != day.fingerprint:
            reason = f"{where}: replaced since it was judged (judged {day.fingerprint}, now {stored.fingerprint})"
            return Rejected(day=day.day, reason=reason)
        if not isinstance(stored.value, pd.DataFrame):
            return Rejected(day=day.day, reason=f"{where}: stored as a rejection, not data")
        stored.value.attrs[FINGERPRINT] = stored.fingerprint
        return series.without(stored.value, entities, day.rejected_series)


def unfinished_dir(root: str) -> str:
    """The store's folder of writes under way (and of writes cut short): `<root>/_unfinished`."""
    return f"{root.rstrip('/')}/{UNFINISHED_DIR}"


def write_atomically(filesystem: pafs.FileSystem, unfinished: str, path: str, payload: bytes) -> None:
    """`payload` to `path` through a temp file in `unfinished` and a rename (on an object store a copy and a delete):
    a reader sees the old bytes or the new, never a part, and a writer killed in between leaves only its temp file."""
    temporary = f"{unfinished}/{path.rsplit('/', 1)[-1]}{TEMPORARY}{uuid.uuid4().hex}"
    try:
        stream = filesystem.open_output_stream(temporary)
    except FileNotFoundError:  # a local store's first write: the folder is made once (an object store has none)
        filesystem.create_dir(unfinished, recursive=True)
        stream = filesystem.open_output_stream(temporary)
    with stream:
        stream.write(payload)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    filesystem.move(temporary, path)


def _json_default(value: Any) -> Any:
    """numpy scalars become numbers, not strings; anything else (dates) its text."""
    import numpy as np

    return value.item() if isinstance(value, np.generic) else str(value)


def _sha256(payload: bytes | memoryview) -> str:
    return f"sha256:{hashlib.sha256(payload).hexdigest()}"


def _footer_fingerprint(metadata: pq.FileMetaData) -> str | None:
    fingerprint = (metadata.metadata or {}).get(FINGERPRINT_KEY)
    return fingerprint.decode() if fingerprint is not None else None


def table_fingerprint(table: pa.Table) -> str:
    """The fingerprint a table is stored with: the sha256 of its Arrow IPC stream (schema, pandas metadata and
    every value)."""
    import pyarrow as pa

    stream = pa.BufferOutputStream()
    with pa.ipc.new_stream(stream, table.schema) as writer:
        writer.write_table(table)
    return _sha256(memoryview(stream.getvalue()))


def _parquet_bytes(frame: pd.DataFrame) -> tuple[bytes, str]:
    """The frame as parquet whose footer holds its fingerprint (taken before the fingerprint is added). Of the frame's
    `attrs` only the series it was built without are stored (and fingerprinted): the fingerprints of what it was
    built from are not, the bytes are its content alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    content = frame.copy(deep=False)
    content.attrs = {}
    table = pa.Table.from_pandas(content, preserve_index=False)
    if left_out := series.left_out(frame):
        footer = {**(table.schema.metadata or {}), SERIES_LEFT_OUT_KEY: json.dumps(left_out, sort_keys=True).encode()}
        table = table.replace_schema_metadata(footer)
    fingerprint = table_fingerprint(table)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), FINGERPRINT_KEY: fingerprint.encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes(), fingerprint
