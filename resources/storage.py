"""A partition-aware asset store as Dagster's IO manager: one parquet (or JSON) file per asset partition on any
pyarrow filesystem, with the day gate on every partitioned input. The files themselves are `resources/store.py`'s,
which Ray tasks also read and write directly (a lazy input passes days by reference; see `load_input`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from kernel import series
from kernel.names import ALLOW_MISSING_PARTITIONS, ENTITY_COLUMNS, FINGERPRINT, GATE_CHECKS, LAZY_INPUT, WRITER_VERDICTS
from kernel.records import Rejected
from resources.store import AssetStore, NotStored, Stored, StoredDay, UnsupportedValue, Written
from resources.verdicts import gate

if TYPE_CHECKING:
    import pandas as pd


# Threads reading a run's days for its checks: small files, so a few overlap their opens and decodes.
READ_THREADS = 4


class MissingPartitionError(dg.Failure):
    """An upstream partition that was never materialised."""


class PartitionedParquetIOManager(dg.ConfigurableIOManager):
    """Stores each asset partition as its own parquet file (dicts as JSON), written atomically."""

    base_uri: str = Field(
        description="Root of the store: a local directory or any pyarrow filesystem URI (s3://, gs://, hdfs://)."
    )

    @property
    def store(self) -> AssetStore:
        """The store's files, as a Ray task reads and writes them (a sensor holds the resource as wired: its URI may
        still be an unresolved `EnvVar`)."""
        uri = self.base_uri
        if isinstance(uri, dg.EnvVar):
            uri = uri.get_value() or ""
        return AssetStore(uri)

    def path_for(self, asset_key: dg.AssetKey, partition_key: str | None, suffix: str) -> str:
        return self.store.path_for(asset_key.path, partition_key, suffix)

    def write(self, asset_key: dg.AssetKey, partition_key: str | None, value: Any) -> str:
        """Write one value (DataFrame -> parquet, mapping or record -> JSON) via a temp file and a rename."""
        return self.write_stored(asset_key, partition_key, value)[0]

    def write_stored(self, asset_key: dg.AssetKey, partition_key: str | None, value: Any) -> tuple[str, str]:
        """`write`, also returning the fingerprint the stored bytes carry."""
        try:
            written = self.store.write(asset_key.path, partition_key, value)
        except UnsupportedValue as error:
            raise dg.Failure(str(error)) from error
        return written.path, written.fingerprint

    def read(self, asset_key: dg.AssetKey, partition_key: str | None) -> Any:
        """Read one stored value; raise `MissingPartitionError` if it was never written."""
        return self.read_stored(asset_key, partition_key).value

    def read_stored(self, asset_key: dg.AssetKey, partition_key: str | None) -> Stored:
        """One stored value with the fingerprint of the bytes it was read from (one open: a check judges exactly
        the bytes its verdict names, even if a writer replaces the file meanwhile)."""
        try:
            return self.store.read(asset_key.path, partition_key)
        except NotStored as error:
            raise MissingPartitionError(str(error)) from error

    def fingerprint(self, asset_key: dg.AssetKey, partition_key: str | None) -> str | None:
        """The fingerprint the stored bytes carry, None if they carry none or it cannot be read (a day no verdict
        can pass); reads a parquet file's footer only."""
        try:
            return self.store.fingerprint(asset_key.path, partition_key)
        except NotStored as error:
            raise MissingPartitionError(str(error)) from error

    def fingerprints(self, asset_key: dg.AssetKey, partition_keys: Sequence[str]) -> dict[str, str | None]:
        """The fingerprints of the stored partitions among `partition_keys` (partitions never stored are left out).
        One lookup per partition, not an existence test first: on an object store each is a round trip."""
        found = {}
        for key in partition_keys:
            with contextlib.suppress(NotStored):
                found[key] = self.store.fingerprint(asset_key.path, key)
        return found

    def exists(self, asset_key: dg.AssetKey, partition_key: str | None) -> bool:
        return self.store.exists(asset_key.path, partition_key)

    def read_many(
        self, asset_key: dg.AssetKey, partition_keys: Sequence[str], *, allow_missing: bool
    ) -> dict[str, Any]:
        """Values of several partitions, keyed by partition; missing ones are skipped only if allowed."""
        values = {}
        for key in partition_keys:
            try:
                values[key] = _annotated(self.read_stored(asset_key, key))
            except MissingPartitionError:
                if not allow_missing:
                    raise
        return values

    def row_counts(self, asset_key: dg.AssetKey, partition_keys: Sequence[str]) -> dict[str, int | None]:
        """The rows of each stored partition among `partition_keys`, from the parquet footers (None: a JSON value);
        partitions never stored are left out (one lookup per partition, as `fingerprints`)."""
        found = {}
        for key in partition_keys:
            with contextlib.suppress(NotStored):
                found[key] = self.store.row_count(asset_key.path, key)
        return found

    def read_columns(
        self, asset_key: dg.AssetKey, partition_keys: Sequence[str], columns: Sequence[str]
    ) -> pd.DataFrame | None:
        """The named columns of the stored frames among `partition_keys` as one frame (`AssetStore.read_columns`)."""
        return self.store.read_columns(asset_key.path, partition_keys, columns)

    def read_for_judging(
        self, asset_key: dg.AssetKey, partition_keys: Sequence[str], *, allow_missing: bool
    ) -> dict[str, Stored]:
        """`read_many` with each value's fingerprint; a file that cannot be read is `Rejected` with the reason and no
        fingerprint (a day that cannot be judged is never passed), not an error that fails every other day. The days
        are read on a few threads (pyarrow decodes without the GIL), one lookup each."""
        from concurrent.futures import ThreadPoolExecutor

        def judged(key: str) -> Stored | None:
            try:
                return self.read_stored(asset_key, key)
            except MissingPartitionError:
                if not allow_missing:
                    raise
                return None
            except (OSError, ValueError) as error:
                reason = f"{asset_key.to_user_string()} {key}: the stored file cannot be read ({error})"
                return Stored(Rejected(day=key, reason=reason), None)

        with ThreadPoolExecutor(READ_THREADS) as pool:
            read = dict(zip(partition_keys, pool.map(judged, partition_keys), strict=True))
        return {key: stored for key, stored in read.items() if stored is not None}

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
            value = obj[key]
            fingerprint = (
                self._stored_by_task(context.asset_key, key, value)
                or self.write_stored(context.asset_key, key, value)[1]
            )
            metadata: dict[str, Any] = {FINGERPRINT: fingerprint}
            if isinstance(value, Written) and value.verdicts:
                metadata[WRITER_VERDICTS] = {name: verdict.to_json() for name, verdict in value.verdicts.items()}
            step.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=key)
            if len(keys) == 1:
                # Dagster 1.13 gives every partition of one output the same data version, so a partition's data
                # version is its fingerprint only when it is the run's only partition; the metadata always is.
                step.set_data_version(context.asset_key, dg.DataVersion(fingerprint))
        context.add_output_metadata({"partitions_written": len(keys)})

    def _stored_by_task(self, asset_key: dg.AssetKey, partition_key: str, value: Any) -> str | None:
        """The fingerprint of a day its writer already wrote (`Written`), checked to be that day's file; None for a
        value the store still has to write."""
        if not isinstance(value, Written):
            return None
        if value.path != self.path_for(asset_key, partition_key, value.path.rsplit(".", 1)[-1]):
            raise dg.Failure(f"{asset_key.to_user_string()} {partition_key}: a task wrote {value.path}, not its file")
        return value.fingerprint

    def load_input(self, context: dg.InputContext) -> Any:
        """Stored values of the input's days; a day its upstream gates reject loads as `Rejected` (the day gate,
        which every run passes through, whoever launched it). A lazy input (`LAZY_INPUT`) loads each usable day as a
        `StoredDay` reference instead (only footers are read here), which a Ray task reads itself."""
        if not context.has_asset_partitions:
            return self.read(context.asset_key, None)
        metadata = context.definition_metadata
        allow_missing = bool(metadata.get(ALLOW_MISSING_PARTITIONS, False))
        keys = list(context.asset_partition_keys)
        checks = metadata.get(GATE_CHECKS, [])
        if metadata.get(LAZY_INPUT):
            return self._references(context, keys, checks, allow_missing=allow_missing)
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

    def _references(
        self, context: dg.InputContext, keys: Sequence[str], checks: Sequence[str], *, allow_missing: bool
    ) -> dict[str, StoredDay | Rejected]:
        """The input's days by reference: the fingerprint of each day's bytes (its footer) through the day gate."""
        key = context.asset_key
        fingerprints = self.fingerprints(key, keys) if allow_missing else {k: self.fingerprint(key, k) for k in keys}
        verdicts = gate(context.instance, key, checks, fingerprints)
        if verdicts.days:
            context.log.warning(f"{len(verdicts.days)} day(s) of {key.to_user_string()} rejected: {verdicts.days}")
        if verdicts.series:
            context.log.warning(f"series left out of {key.to_user_string()} by their day's verdict: {verdicts.series}")
        return {
            day: Rejected(day=day, reason=verdicts.days[day])
            if day in verdicts.days
            else StoredDay(tuple(key.path), day, fingerprint, verdicts.series.get(day, {}))
            for day, fingerprint in fingerprints.items()
        }


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
