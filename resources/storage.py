"""A partition-aware asset store: one parquet (or JSON) file per asset partition on any pyarrow filesystem.

Every stored value carries a content fingerprint written with it, so a verdict can name the bytes it judged: a
parquet file holds the sha256 of its table in its footer's key-value metadata (read without the data pages), a
JSON file (a record, a rejection: a few kB) is fingerprinted by the sha256 of its bytes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import BaseModel, Field

from kernel import series
from kernel.names import ALLOW_MISSING_PARTITIONS, ENTITY_COLUMNS, FINGERPRINT, GATE_CHECKS
from kernel.records import Rejected
from resources.verdicts import gate

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

# numpy, pandas and pyarrow are imported where a value is read or written, not with the module: the code location
# builds this store when it loads, and a load does not touch data.

# The parquet footer key that holds a file's fingerprint.
FINGERPRINT_KEY = b"platform.fingerprint"
# The footer key that holds the series a frame was built without (label -> reason, JSON), part of its fingerprint.
SERIES_LEFT_OUT_KEY = series.SERIES_LEFT_OUT.encode()


class MissingPartitionError(dg.Failure):
    """An upstream partition that was never materialised."""


@dataclass(frozen=True)
class Stored:
    """One stored value and the fingerprint of the very bytes it was read from (None: written without one)."""

    value: Any
    fingerprint: str | None


class PartitionedParquetIOManager(dg.ConfigurableIOManager):
    """Stores each asset partition as its own parquet file (dicts as JSON), written atomically."""

    base_uri: str = Field(
        description="Root of the store: a local directory or any pyarrow filesystem URI (s3://, gs://, hdfs://)."
    )

    def _filesystem(self) -> tuple[pafs.FileSystem, str]:
        import pyarrow.fs as pafs

        if "://" in self.base_uri:
            return pafs.FileSystem.from_uri(self.base_uri)
        return pafs.LocalFileSystem(), self.base_uri

    def path_for(self, asset_key: dg.AssetKey, partition_key: str | None, suffix: str) -> str:
        _, root = self._filesystem()
        leaf = partition_key if partition_key is not None else "__all__"
        return "/".join([root.rstrip("/"), *asset_key.path, f"{leaf}.{suffix}"])

    def write(self, asset_key: dg.AssetKey, partition_key: str | None, value: Any) -> str:
        """Write one value (DataFrame -> parquet, mapping or record -> JSON) via a temp file and a rename."""
        return self.write_stored(asset_key, partition_key, value)[0]

    def write_stored(self, asset_key: dg.AssetKey, partition_key: str | None, value: Any) -> tuple[str, str]:
        """`write`, also returning the fingerprint the stored bytes carry."""
        import pandas as pd
        import pyarrow.fs as pafs

        filesystem, _ = self._filesystem()
        if isinstance(value, pd.DataFrame):
            suffix, (payload, fingerprint) = "parquet", _parquet_bytes(value)
        elif isinstance(value, Mapping | BaseModel):
            document = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
            suffix, payload = "json", json.dumps(document, indent=2, sort_keys=True, default=_json_default).encode()
            fingerprint = _sha256(payload)
        else:
            raise dg.Failure(
                f"{asset_key.to_user_string()}: the asset store keeps DataFrames, JSON mappings and records, "
                f"got {type(value).__name__}"
            )
        final = self.path_for(asset_key, partition_key, suffix)
        temporary = f"{final}.tmp-{uuid.uuid4().hex}"
        filesystem.create_dir(final.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(temporary) as stream:
            stream.write(payload)
        filesystem.move(temporary, final)
        # A day's value is one file: a rejection replaces a frame and a rebuilt frame replaces a rejection.
        other = self.path_for(asset_key, partition_key, "json" if suffix == "parquet" else "parquet")
        if filesystem.get_file_info(other).type == pafs.FileType.File:
            filesystem.delete_file(other)
        return final, fingerprint

    def read(self, asset_key: dg.AssetKey, partition_key: str | None) -> Any:
        """Read one stored value; raise `MissingPartitionError` if it was never written."""
        return self.read_stored(asset_key, partition_key).value

    def read_stored(self, asset_key: dg.AssetKey, partition_key: str | None) -> Stored:
        """One stored value with the fingerprint of the bytes it was read from (one open: a check judges exactly
        the bytes its verdict names, even if a writer replaces the file meanwhile)."""
        import pyarrow.parquet as pq

        filesystem, path = self._stored_path(asset_key, partition_key)
        with filesystem.open_input_file(path) as handle:
            if path.endswith(".parquet"):
                table = pq.read_table(handle)
                footer = table.schema.metadata or {}
                fingerprint, left_out = footer.get(FINGERPRINT_KEY), footer.get(SERIES_LEFT_OUT_KEY)
                frame = table.to_pandas()
                if left_out is not None:
                    frame.attrs[series.SERIES_LEFT_OUT] = json.loads(left_out)
                return Stored(frame, fingerprint.decode() if fingerprint is not None else None)
            payload = handle.read()
        document = json.loads(payload)
        value = Rejected.model_validate(document) if document.get("rejected") is True else document
        return Stored(value, _sha256(payload))

    def fingerprint(self, asset_key: dg.AssetKey, partition_key: str | None) -> str | None:
        """The fingerprint the stored bytes carry, None if they carry none or it cannot be read (a day no verdict
        can pass); reads a parquet file's footer only."""
        import pyarrow.parquet as pq

        filesystem, path = self._stored_path(asset_key, partition_key)
        with filesystem.open_input_file(path) as handle:
            if not path.endswith(".parquet"):
                return _sha256(handle.read())
            try:
                return _footer_fingerprint(pq.read_metadata(handle))
            except (OSError, ValueError):
                return None

    def fingerprints(self, asset_key: dg.AssetKey, partition_keys: Sequence[str]) -> dict[str, str | None]:
        """The fingerprints of the stored partitions among `partition_keys` (partitions never stored are left out)."""
        return {key: self.fingerprint(asset_key, key) for key in partition_keys if self.exists(asset_key, key)}

    def _stored_path(self, asset_key: dg.AssetKey, partition_key: str | None) -> tuple[pafs.FileSystem, str]:
        import pyarrow.fs as pafs

        filesystem, _ = self._filesystem()
        for suffix in ("parquet", "json"):
            path = self.path_for(asset_key, partition_key, suffix)
            if filesystem.get_file_info(path).type == pafs.FileType.File:
                return filesystem, path
        where = f"partition {partition_key}" if partition_key is not None else "no partition"
        raise MissingPartitionError(
            f"{asset_key.to_user_string()} has no stored value for {where} under {self.base_uri}; materialise it first"
        )

    def exists(self, asset_key: dg.AssetKey, partition_key: str | None) -> bool:
        import pyarrow.fs as pafs

        filesystem, _ = self._filesystem()
        return any(
            filesystem.get_file_info(self.path_for(asset_key, partition_key, suffix)).type == pafs.FileType.File
            for suffix in ("parquet", "json")
        )

    def read_many(
        self, asset_key: dg.AssetKey, partition_keys: Sequence[str], *, allow_missing: bool
    ) -> dict[str, Any]:
        """Values of several partitions, keyed by partition; missing ones are skipped only if allowed."""
        values = {}
        for key in partition_keys:
            if allow_missing and not self.exists(asset_key, key):
                continue
            values[key] = _annotated(self.read_stored(asset_key, key))
        return values

    def read_for_judging(
        self, asset_key: dg.AssetKey, partition_keys: Sequence[str], *, allow_missing: bool
    ) -> dict[str, Stored]:
        """`read_many` with each value's fingerprint; a file that cannot be read is `Rejected` with the reason and no
        fingerprint (a day that cannot be judged is never passed), not an error that fails every other day."""
        stored = {}
        for key in partition_keys:
            if allow_missing and not self.exists(asset_key, key):
                continue
            try:
                stored[key] = self.read_stored(asset_key, key)
            except MissingPartitionError:
                raise
            except (OSError, ValueError) as error:
                reason = f"{asset_key.to_user_string()} {key}: the stored file cannot be read ({error})"
                stored[key] = Stored(Rejected(day=key, reason=reason), None)
        return stored

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not context.has_asset_partitions:
            path, fingerprint = self.write_stored(context.asset_key, None, obj)
            context.step_context.set_data_version(context.asset_key, dg.DataVersion(fingerprint))
            context.add_output_metadata({"path": dg.MetadataValue.path(path), FINGERPRINT: fingerprint})
            return
        keys = list(context.asset_partition_keys)
        if not isinstance(obj, Mapping) or set(obj) != set(keys):
            got = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise dg.Failure(
                f"{context.asset_key.to_user_string()}: a partitioned asset must return a mapping from each "
                f"partition key of the run to its value; expected {len(keys)} keys ({keys[0]}..{keys[-1]}), got {got}"
            )
        step = context.step_context
        for key in keys:
            _, fingerprint = self.write_stored(context.asset_key, key, obj[key])
            step.add_asset_metadata({FINGERPRINT: fingerprint}, asset_key=context.asset_key, partition_key=key)
            if len(keys) == 1:
                # Dagster 1.13 gives every partition of one output the same data version, so a partition's data
                # version is its fingerprint only when it is the run's only partition; the metadata always is.
                step.set_data_version(context.asset_key, dg.DataVersion(fingerprint))
        context.add_output_metadata({"partitions_written": len(keys)})

    def load_input(self, context: dg.InputContext) -> Any:
        """Stored values of the input's days; a day its upstream gates reject loads as `Rejected` (the day gate,
        which every run passes through, whoever launched it)."""
        if not context.has_asset_partitions:
            return self.read(context.asset_key, None)
        metadata = context.definition_metadata
        allow_missing = bool(metadata.get(ALLOW_MISSING_PARTITIONS, False))
        keys = list(context.asset_partition_keys)
        checks = metadata.get(GATE_CHECKS, [])
        if not checks:
            return self.read_many(context.asset_key, keys, allow_missing=allow_missing)
        stored = self.read_for_judging(context.asset_key, keys, allow_missing=allow_missing)
        verdicts = gate(context.instance, context.asset_key, checks, {day: s.fingerprint for day, s in stored.items()})
        rejected, entities = verdicts.days, metadata.get(ENTITY_COLUMNS, [])
        if rejected:
            context.log.warning(f"{len(rejected)} day(s) of {context.asset_key.to_user_string()} rejected: {rejected}")
        if verdicts.series:
            context.log.warning(
                f"series left out of {context.asset_key.to_user_string()} by their day's verdict: {verdicts.series}"
            )
        return {
            day: Rejected(day=day, reason=rejected[day])
            if day in rejected and not _unreadable(s)
            else _gated(_annotated(s), entities, verdicts.series.get(day, {}))
            for day, s in stored.items()
        }


def _json_default(value: Any) -> Any:
    """numpy scalars become numbers, not strings; anything else (dates) its text."""
    import numpy as np

    return value.item() if isinstance(value, np.generic) else str(value)


def _annotated(stored: Stored) -> Any:
    """The stored value; a DataFrame carries the fingerprint of the bytes it was read from in `attrs`, so whatever is
    built from it can record what it was built from (and be found stale when those bytes are replaced)."""
    import pandas as pd

    if isinstance(stored.value, pd.DataFrame):
        stored.value.attrs[FINGERPRINT] = stored.fingerprint
    return stored.value


def _gated(value: Any, entities: Sequence[str], rejected: Mapping[str, str]) -> Any:
    """A usable day's value without the series its verdict rejected (named in its `attrs`)."""
    import pandas as pd

    return series.without(value, entities, rejected) if isinstance(value, pd.DataFrame) and rejected else value


def _unreadable(stored: Stored) -> bool:
    return stored.fingerprint is None and isinstance(stored.value, Rejected)


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
