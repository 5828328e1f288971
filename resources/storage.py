"""A partition-aware asset store: one parquet (or JSON) file per asset partition on any pyarrow filesystem."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from kernel.names import ALLOW_MISSING_PARTITIONS, GATE_CHECKS
from kernel.records import Rejected
from resources.verdicts import rejected_days


class MissingPartitionError(dg.Failure):
    """An upstream partition that was never materialised."""


class PartitionedParquetIOManager(dg.ConfigurableIOManager):
    """Stores each asset partition as its own parquet file (dicts as JSON), written atomically."""

    base_uri: str = Field(
        description="Root of the store: a local directory or any pyarrow filesystem URI (s3://, gs://, hdfs://)."
    )

    def _filesystem(self) -> tuple[pafs.FileSystem, str]:
        if "://" in self.base_uri:
            return pafs.FileSystem.from_uri(self.base_uri)
        return pafs.LocalFileSystem(), self.base_uri

    def path_for(self, asset_key: dg.AssetKey, partition_key: str | None, suffix: str) -> str:
        _, root = self._filesystem()
        leaf = partition_key if partition_key is not None else "__all__"
        return "/".join([root.rstrip("/"), *asset_key.path, f"{leaf}.{suffix}"])

    def write(self, asset_key: dg.AssetKey, partition_key: str | None, value: Any) -> str:
        """Write one value (DataFrame -> parquet, mapping or record -> JSON) via a temp file and a rename."""
        filesystem, _ = self._filesystem()
        if isinstance(value, pd.DataFrame):
            suffix, payload = "parquet", _parquet_bytes(value)
        elif isinstance(value, Mapping | BaseModel):
            document = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
            suffix, payload = "json", json.dumps(document, indent=2, sort_keys=True, default=_json_default).encode()
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
        return final

    def read(self, asset_key: dg.AssetKey, partition_key: str | None) -> Any:
        """Read one stored value; raise `MissingPartitionError` if it was never written."""
        filesystem, _ = self._filesystem()
        for suffix in ("parquet", "json"):
            path = self.path_for(asset_key, partition_key, suffix)
            if filesystem.get_file_info(path).type != pafs.FileType.File:
                continue
            with filesystem.open_input_file(path) as handle:
                if suffix == "parquet":
                    return pq.read_table(handle).to_pandas()
                document = json.loads(handle.read())
            return Rejected.model_validate(document) if document.get("rejected") is True else document
        where = f"partition {partition_key}" if partition_key is not None else "no partition"
        raise MissingPartitionError(
            f"{asset_key.to_user_string()} has no stored value for {where} under {self.base_uri}; materialise it first"
        )

    def exists(self, asset_key: dg.AssetKey, partition_key: str | None) -> bool:
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
            values[key] = self.read(asset_key, key)
        return values

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not context.has_asset_partitions:
            path = self.write(context.asset_key, None, obj)
            context.add_output_metadata({"path": dg.MetadataValue.path(path)})
            return
        keys = list(context.asset_partition_keys)
        if not isinstance(obj, Mapping) or set(obj) != set(keys):
            got = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise dg.Failure(
                f"{context.asset_key.to_user_string()}: a partitioned asset must return a mapping from each "
                f"partition key of the run to its value; expected {len(keys)} keys ({keys[0]}..{keys[-1]}), got {got}"
            )
        for key in keys:
            self.write(context.asset_key, key, obj[key])
        context.add_output_metadata({"partitions_written": len(keys)})

    def load_input(self, context: dg.InputContext) -> Any:
        """Stored values of the input's days; a day its upstream gates reject loads as `Rejected` (the day gate,
        which every run passes through, whoever launched it)."""
        if not context.has_asset_partitions:
            return self.read(context.asset_key, None)
        metadata = context.definition_metadata
        allow_missing = bool(metadata.get(ALLOW_MISSING_PARTITIONS, False))
        keys = list(context.asset_partition_keys)
        rejected = rejected_days(context.instance, context.asset_key, metadata.get(GATE_CHECKS, []), keys)
        values = self.read_many(context.asset_key, [k for k in keys if k not in rejected], allow_missing=allow_missing)
        values |= {day: Rejected(day=day, reason=reason) for day, reason in rejected.items()}
        if rejected:
            context.log.warning(f"{len(rejected)} day(s) of {context.asset_key.to_user_string()} rejected: {rejected}")
        return {key: values[key] for key in keys if key in values}


def _json_default(value: Any) -> Any:
    """numpy scalars become numbers, not strings; anything else (dates) its text."""
    return value.item() if isinstance(value, np.generic) else str(value)


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue().to_pybytes()
